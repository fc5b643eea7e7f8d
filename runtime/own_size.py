"""What a sandbox sees of its own size: as many online CPUs as its CPU limit allows, and its own
cgroup, read only, at /sys/fs/cgroup, as a container sees it.

Libraries size their pools and caches from these. os.cpu_count() (and psutil, multiprocessing,
pip's parallel builds) counts what glibc reads in /sys/devices/system/cpu/online; joblib's loky,
dask and the JVM read the CPU quota and the memory limit in the cgroup files. Without them a
sandbox with half a CPU and 256 MiB plans for the host's cores and memory. /proc/meminfo and
/proc/cpuinfo still show the host's: making them follow the sandbox needs a file system serving
them (LXCFS), which Hopx does not run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

CGROUP_ROOT = "/sys/fs/cgroup"
CPU_ONLINE = "/sys/devices/system/cpu/online"
HOST_CPU_ONLINE = "/sys/devices/system/cpu/online"


def cgroup_binds(by_controller: Mapping[str, tuple[str, int]]) -> list[tuple[str, str]]:
    """(host directory, path inside) of each of the sandbox's cgroup directories, where a
    container finds them: a cgroup v2 host's at /sys/fs/cgroup; on a v1 or hybrid host, each
    v1 controller's at /sys/fs/cgroup/<controller> and a v2 one's at /sys/fs/cgroup/unified."""
    if not by_controller:
        return []
    if all(version == 2 for _, version in by_controller.values()):
        directories = sorted({directory for directory, _ in by_controller.values()})
        return [(directories[0], CGROUP_ROOT)]  # cgroup v2 has a single hierarchy
    binds: dict[str, str] = {}
    for controller, (directory, version) in sorted(by_controller.items()):
        inside = f"{CGROUP_ROOT}/unified" if version == 2 else f"{CGROUP_ROOT}/{controller}"
        binds.setdefault(inside, directory)
    return [(directory, inside) for inside, directory in sorted(binds.items())]


def parse_cpu_list(text: str) -> list[int]:
    """The CPUs of a kernel CPU list ("0-3,6,8-9")."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def format_cpu_list(cpus: list[int]) -> str:
    """A kernel CPU list of `cpus` (sorted): ranges where they follow each other."""
    parts: list[str] = []
    start = previous = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(parts)


def online_cpus(cpu_limit: float, host_online: str) -> str | None:
    """What the sandbox's /sys/devices/system/cpu/online says: the first ceil(cpu_limit) of the
    host's online CPUs. None when the limit allows all of them (or there is none), so the host's
    figure stands."""
    host = parse_cpu_list(host_online)
    if cpu_limit <= 0 or not host:
        return None
    wanted = max(1, math.ceil(cpu_limit))
    if wanted >= len(host):
        return None
    return format_cpu_list(host[:wanted]) + "\n"


def host_online_cpus() -> str:
    try:
        with open(HOST_CPU_ONLINE) as f:
            return f.read()
    except OSError:
        return ""
