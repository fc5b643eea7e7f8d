"""Resource limits hold against a real kernel: memory (OOM kill, reported, restartable), pids
(fork bomb), scratch disk (ENOSPC), CPU (throttled to the quota), lifetime; and the values really
are written to the host's cgroups before the sandbox runs."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Kernel, assert_no_leaks, cgroup_limits, wait_until
from runtime import quotas
from runtime.cgroups import TCP_BUFFER_CAP, CgroupHost

StartKernel = Callable[..., Kernel]
MiB = 1024**2


def cgroup_dir(kernel: Kernel, controller: str) -> Path:
    """The kernel's cgroup directory in the hierarchy that carries `controller`."""
    for directory in kernel.cgroups:
        path = Path(directory)
        if (path / f"{controller}.max").exists() or any(path.glob(f"{controller}.*")):
            return path
    raise AssertionError(f"no {controller} cgroup among {kernel.cgroups}")


def cgroup_value(kernel: Kernel, filename: str) -> str:
    return (cgroup_dir(kernel, filename.partition(".")[0]) / filename).read_text().strip()


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found |= {int(child), *descendants(int(child))}
    return found


def run_json(kernel: Kernel, code: str, timeout: float = 120) -> Any:
    return kernel.value(textwrap.dedent(code), timeout=timeout)


def test_memory_limit_kills_reports_oom_and_restarts(
    start_kernel: StartKernel, runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Allocating ~600 MB under a 256M limit OOM-kills the kernel: the kernel manager sees it
    die, the supervisor reports the reason "oom" and the provisioner logs it; the host process
    is fine, a restart gives a working kernel, and shutdown leaves nothing."""
    caplog.set_level(logging.WARNING)
    kernel = start_kernel(memory_limit="256M")
    assert cgroup_limits(kernel.cgroups).memory == 256 * MiB
    handle = kernel.km.provisioner.supervisor
    # A control: the same allocation pattern works below the limit.
    assert (
        run_json(
            kernel,
            """
        import json
        small = [b"\\x01" * (8 << 20) for _ in range(8)]
        print(json.dumps(sum(map(len, small))))
        del small
        """,
        )
        == 64 * MiB
    )
    kernel.kc.execute("hog = []\nfor _ in range(75):\n    hog.append(b'\\x01' * (8 << 20))\n")
    assert wait_until(lambda: not kernel.km.is_alive(), 60)
    assert wait_until(lambda: handle.exited, 10)
    assert handle.exited["reason"] == "oom"
    assert handle.exit_reason == "oom"
    assert any("out of memory" in r.getMessage() for r in caplog.records), caplog.text

    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert run_json(kernel, "import json; print(json.dumps(6 * 7))") == 42
    assert kernel.supervisor_pid != handle.pid
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_the_memory_figure_leaves_out_page_cache_that_can_be_freed(
    start_kernel: StartKernel, workspace: Path
) -> None:
    """A kernel that has read a file larger than its memory limit holds little of it: the page
    cache its cgroup is charged for is reclaimed on demand. The figure shown (REST, panel,
    `jupyter hopx list`) is what it holds, as `docker stats` counts, not its limit."""
    big = workspace / "big"
    with open(big, "wb") as f:
        for _ in range(400):
            f.write(b"x" * MiB)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read by the kernel first
    kernel = start_kernel(memory_limit="256M")
    content, _ = kernel.run("with open('big', 'rb') as f:\n    while f.read(1 << 20): pass")
    assert content["status"] == "ok", content
    memory = Path(kernel.km.provisioner.supervisor.started["memory_cgroup"])
    charged = next(
        int((memory / name).read_text())
        for name in ("memory.current", "memory.usage_in_bytes")
        if (memory / name).exists()
    )
    assert charged > 200 * MiB  # the cache fills the cgroup up to its limit
    shown = kernel.km.provisioner.usage()["memory_bytes"]
    assert shown is not None
    assert shown < 128 * MiB, (shown, charged)


def test_fork_bomb_stops_at_the_pids_limit(start_kernel: StartKernel, runtime_dir: Path) -> None:
    """With pids_limit 64 a fork loop gets EAGAIN once the sandbox's threads and processes
    reach 64; the kernel answers afterwards and shutdown leaves nothing."""
    kernel = start_kernel(pids_limit=64)
    assert cgroup_value(kernel, "pids.max") == "64"
    seen = run_json(
        kernel,
        """
        import errno, json, os, time
        children, error = [], None
        for _ in range(500):
            try:
                pid = os.fork()
            except OSError as e:
                error = [type(e).__name__, errno.errorcode[e.errno]]
                break
            if pid == 0:
                try:
                    time.sleep(120)
                finally:
                    os._exit(0)
            children.append(pid)
        threads = len(os.listdir("/proc/self/task"))
        for pid in children:
            os.kill(pid, 9)
        for pid in children:
            os.waitpid(pid, 0)
        print(json.dumps({"forked": len(children), "error": error, "threads": threads}))
        """,
    )
    assert seen["error"] == ["BlockingIOError", "EAGAIN"]
    # bwrap's init + the kernel's threads + the children: the limit counts every task.
    assert 32 <= seen["forked"] < 64
    assert seen["forked"] + seen["threads"] + 1 <= 64
    assert run_json(kernel, "import json; print(json.dumps('alive'))") == "alive"
    assert int(cgroup_value(kernel, "pids.current")) < 32
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_scratch_disks_are_capped(start_kernel: StartKernel) -> None:
    """With disk_limit 16M, writing 32 MB to /tmp, /var/tmp, $HOME or /dev/shm stops with
    ENOSPC at 16 MiB; after removing the file an 8 MB write fits again."""
    kernel = start_kernel(disk_limit="16M")
    seen = run_json(
        kernel,
        """
        import errno, json, os
        result = {}
        chunk = b"\\x01" * (1 << 20)
        for directory in ["/tmp", "/var/tmp", os.environ["HOME"], "/dev/shm"]:
            path = os.path.join(directory, "big")
            st = os.statvfs(directory)
            written, error = 0, None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                while written < (32 << 20):
                    written += os.write(fd, chunk)
            except OSError as e:
                error = [type(e).__name__, errno.errorcode[e.errno]]
            finally:
                os.close(fd)
            os.unlink(path)
            with open(path, "wb") as f:
                f.write(chunk * 8)
            os.unlink(path)
            result[directory] = {"size": st.f_blocks * st.f_frsize, "written": written,
                                 "error": error}
        print(json.dumps(result))
        """,
    )
    assert sorted(seen) == ["/dev/shm", "/home/sandbox", "/tmp", "/var/tmp"]
    for directory, result in seen.items():
        assert result["size"] == 16 * MiB, directory
        assert result["error"] == ["OSError", "ENOSPC"], directory
        assert 12 * MiB <= result["written"] <= 16 * MiB, directory


def test_scratch_disks_cap_the_number_of_files(start_kernel: StartKernel) -> None:
    """With files_limit 20000, creating a million empty files (which no size cap stops) in /tmp,
    $HOME or /dev/shm ends with ENOSPC just under 20000, well inside memory_limit: the kernel
    answers afterwards, and after removing some files new ones can be made again."""
    kernel = start_kernel(files_limit=20000)
    seen = run_json(
        kernel,
        """
        import errno, json, os
        result = {}
        for directory in ["/tmp", os.environ["HOME"], "/dev/shm"]:
            st = os.statvfs(directory)
            made, error = 0, None
            try:
                while made < 1_000_000:
                    os.close(os.open(f"{directory}/f{made}", os.O_CREAT | os.O_WRONLY, 0o600))
                    made += 1
            except OSError as e:
                error = [type(e).__name__, errno.errorcode[e.errno]]
            for i in range(100):
                os.unlink(f"{directory}/f{i}")
            try:
                open(f"{directory}/again", "w").close()
                again = "ok"
            except OSError as e:
                again = errno.errorcode[e.errno]
            for i in range(100, made):
                os.unlink(f"{directory}/f{i}")
            result[directory] = {"inodes": st.f_files, "made": made, "error": error,
                                 "again": again}
        print(json.dumps(result))
        """,
    )
    for directory, result in seen.items():
        assert result["inodes"] == 20000, directory
        assert result["error"] == ["OSError", "ENOSPC"], directory
        assert 19_900 <= result["made"] < 20000, directory
        assert result["again"] == "ok", directory
    assert run_json(kernel, "import json; print(json.dumps(6 * 7))") == 42


BURN = """
import json, os, time
def burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
before, start = os.times(), time.monotonic()
# Processes, not threads: the GIL would cap two threads at one core with or without a limit.
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        try:
            burn(2.0)
        finally:
            os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
wall, after = time.monotonic() - start, os.times()
cpu = sum(after[i] - before[i] for i in (2, 3))  # children's user + system time
print(json.dumps({"cores": cpu / wall, "wall": wall}))
"""


def test_cpu_limit_throttles_to_the_quota(start_kernel: StartKernel) -> None:
    """With cpu_limit 0.5 two busy processes get at most ~0.5 cores over 2 s (the host cgroup
    has a quota of 50000 µs per 100000 and records throttling); the same burn without a limit,
    as a control, uses clearly more."""
    limited = start_kernel(cpu_limit=0.5)
    limits = cgroup_limits(limited.cgroups)
    assert (limits.cpu_quota_us, limits.cpu_period_us) == (50000, 100000)
    seen = run_json(limited, BURN)
    assert 0.2 < seen["cores"] < 0.75, seen
    stat = dict(line.split() for line in cgroup_value(limited, "cpu.stat").splitlines())
    assert int(stat["nr_throttled"]) > 0

    free = start_kernel(cpu_limit=0)
    control = run_json(free, BURN)
    assert control["cores"] > 0.9, control


def test_limits_are_written_to_the_host_cgroups(start_kernel: StartKernel) -> None:
    """Custom limits appear in the host's cgroup files, and every sandbox process (bubblewrap,
    its init, the kernel) is in each of the sandbox's cgroups while the supervisor is not."""
    kernel = start_kernel(memory_limit="300M", pids_limit=100, cpu_limit=0.25, disk_limit="32M")
    limits = cgroup_limits(kernel.cgroups)
    assert limits.memory == 300 * MiB
    assert limits.swap_capped
    assert limits.pids == 100
    assert (limits.cpu_quota_us, limits.cpu_period_us) == (25000, 100000)

    sandbox = descendants(kernel.supervisor_pid)
    assert len(sandbox) >= 2
    for directory in kernel.cgroups:
        members = {int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()}
        assert sandbox <= members, directory
        assert kernel.supervisor_pid not in members
    inside = run_json(
        kernel,
        """
        import json, os
        st = os.statvfs("/tmp")
        print(json.dumps(st.f_blocks * st.f_frsize))
        """,
    )
    assert inside == 32 * MiB


SIZE_SEEN_INSIDE = """
import json, os, psutil

def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return type(e).__name__

def memory_limit():  # cgroup v2, else v1, as dask and the JVM look for it
    v2 = read("/sys/fs/cgroup/memory.max")
    return v2 if v2[0].isdigit() else read("/sys/fs/cgroup/memory/memory.limit_in_bytes")

def cpu_quota():  # cgroup v2, else v1, as joblib's loky looks for it
    v2 = read("/sys/fs/cgroup/cpu.max")
    if v2[0].isdigit():
        return v2.split()
    v1 = "/sys/fs/cgroup/cpu/cpu.cfs_"
    return [read(v1 + "quota_us"), read(v1 + "period_us")]

def try_write(path):
    try:
        with open(path, "w") as f:
            f.write("max")
        return "written"
    except OSError as e:
        return type(e).__name__

print(json.dumps({
    "cpu_count": os.cpu_count(),
    "psutil_cpus": psutil.cpu_count(),
    "memory_limit": memory_limit(),
    "cpu_quota": cpu_quota(),
    "write": try_write("/sys/fs/cgroup/memory.max" if os.path.exists("/sys/fs/cgroup/memory.max")
                       else "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
}))
"""


def test_a_sandbox_sees_its_own_cpu_and_memory_limits(start_kernel: StartKernel) -> None:
    """Libraries that size themselves see the sandbox's limits, not the host's: os.cpu_count()
    (and psutil's) gives the CPUs cpu_limit allows, and the sandbox's own cgroup, read only,
    gives memory.max or memory.limit_in_bytes and the CPU quota where dask, the JVM and joblib
    look for them."""
    host_cpus = os.cpu_count() or 1
    kernel = start_kernel(memory_limit="256M", cpu_limit=0.5)
    seen = run_json(kernel, SIZE_SEEN_INSIDE)
    assert seen["cpu_count"] == 1, (seen, host_cpus)
    assert seen["psutil_cpus"] == 1, seen
    assert seen["memory_limit"] == str(256 * MiB), seen
    assert [int(v) for v in seen["cpu_quota"]] == [50000, 100000], seen
    assert seen["write"] in ("OSError", "PermissionError"), seen

    # Without a CPU limit, every online CPU of the host.
    unlimited = start_kernel(cpu_limit=0)
    assert run_json(unlimited, SIZE_SEEN_INSIDE)["cpu_count"] == host_cpus


def test_max_lifetime_ends_the_kernel(
    start_kernel: StartKernel, runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """max_lifetime '3s': the supervisor ends a busy kernel after about 3 s, reports the
    reason "max_lifetime" and cleans up without anyone asking."""
    caplog.set_level(logging.WARNING)
    kernel = start_kernel(max_lifetime="3s")
    handle = kernel.km.provisioner.supervisor
    kernel.kc.execute("import time\nwhile True: time.sleep(0.1)")
    assert wait_until(lambda: not kernel.km.is_alive(), 20)
    assert wait_until(lambda: handle.exited, 10)
    assert handle.exited["reason"] == "max_lifetime"
    assert any("max_lifetime" in r.getMessage() for r in caplog.records), caplog.text
    assert wait_until(lambda: not any(Path(c).exists() for c in handle.started["cgroups"]))
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


# Inside the kernel: TCP connections to itself, PAIRS of them, each with the largest buffers the
# host allows, filled without ever reading; reports how many bytes the kernel accepted.
FILL_TCP_BUFFERS = """
import json, socket
BIG = 64 * 1024 * 1024  # asked for; the host caps it at twice net.core.[rw]mem_max
chunk = b"x" * 65536
held, queued = [], 0
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(PAIRS)
for _ in range(PAIRS):
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BIG)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BIG)
    client.setblocking(False)
    held += [client, server]
    try:
        while True:
            queued += client.send(chunk)
    except BlockingIOError:
        pass
print(json.dumps({"queued": queued}))
"""


def socket_memory_bound(memory_limit: int) -> int:
    """What a sandbox's socket buffers may pin, with room for the host's own traffic: the v1 cap
    (TCP_BUFFER_CAP), or on cgroup v2 its memory limit, which they count against."""
    memory = CgroupHost.detect().hierarchy_for("memory")
    assert memory is not None
    return (TCP_BUFFER_CAP if memory.version == 1 else memory_limit) + 16 * MiB


def host_socket_memory(protocol: str) -> int:
    """Bytes the host's `protocol` ("TCP" or "UDP") sockets hold in buffers, all namespaces."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith(f"{protocol}:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * 4096
    raise AssertionError(f"no {protocol} line in /proc/net/sockstat")


def test_tcp_socket_buffers_count_against_the_sandbox(start_kernel: StartKernel) -> None:
    """A 256M sandbox holding TCP connections to itself whose data it never reads pinned 1.2
    GB of the host's TCP memory (tcp_mem, one pool for all) on cgroup v1. Now its buffers are
    capped for that sandbox (cgroup v1: TCP_BUFFER_CAP, 32 MiB; v2: its memory limit): it
    queues no more than that and the host's TCP memory grows by no more, while the kernel
    lives on."""
    kernel = start_kernel(memory_limit="256M")
    before = host_socket_memory("TCP")
    seen = kernel.value(f"PAIRS = 300\n{FILL_TCP_BUFFERS}", timeout=120)
    grown = host_socket_memory("TCP") - before
    print(f"\n  queued {seen['queued'] / MiB:.1f} MiB; host TCP memory grew {grown / MiB:.1f} MiB")
    assert seen["queued"] < socket_memory_bound(256 * MiB)
    assert grown < socket_memory_bound(256 * MiB)
    assert kernel.km.is_alive()


# Inside the kernel: RECEIVERS datagram sockets with the largest receive buffers the host
# allows, each sent 12 MB it never reads.
FILL_UDP_BUFFERS = """
import json, socket
held = []
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(RECEIVERS):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    held.append(receiver)
    for _ in range(200):
        sender.sendto(b"x" * 60000, receiver.getsockname())
print(json.dumps({"receivers": len(held)}))
"""


def test_udp_socket_buffers_count_against_the_sandbox(start_kernel: StartKernel) -> None:
    """Unread datagrams to 60 sockets of its own pinned 475 MiB of the host's UDP memory in a
    256M sandbox on cgroup v1. The same cap as TCP's holds them (the v1 socket counter covers
    every socket of the cgroup once it is on): the host's UDP memory grows by at most about
    32 MiB, and the kernel lives on."""
    kernel = start_kernel(memory_limit="256M")
    before = host_socket_memory("UDP")
    kernel.value(f"RECEIVERS = 60\n{FILL_UDP_BUFFERS}", timeout=120)
    grown = host_socket_memory("UDP") - before
    print(f"\n  host UDP memory grew {grown / MiB:.1f} MiB")
    assert grown < socket_memory_bound(256 * MiB)
    assert kernel.km.is_alive()


# Inside the kernel: PAIRS unix socket pairs with the largest send buffers the host allows
# (8 MiB each here), each filled with data never read.
FILL_UNIX_BUFFERS = """
import socket
held = []
chunk = b"x" * 65536
for _ in range(PAIRS):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 20)
    a.setblocking(False)
    held.append((a, b))
    try:
        while True:
            a.send(chunk)
    except BlockingIOError:
        pass
"""


def host_available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def test_unix_socket_buffers_count_against_the_sandbox(start_kernel: StartKernel) -> None:
    """Unread data in unix socket pairs is kernel memory the host cannot reclaim: 300 pairs
    would queue over 2 GiB. It is charged to the sandbox's memory cgroup, so a 256M sandbox is
    killed for memory (reason "oom") long before, and the host loses no more than the limit."""
    kernel = start_kernel(memory_limit="256M")
    handle = kernel.km.provisioner.supervisor
    before = host_available_memory()
    lowest = before
    kernel.kc.execute(f"PAIRS = 300\n{FILL_UNIX_BUFFERS}")

    def died() -> bool:
        nonlocal lowest
        lowest = min(lowest, host_available_memory())
        return not kernel.km.is_alive()

    assert wait_until(died, 120)
    assert wait_until(lambda: handle.exited, 10)
    assert handle.exited["reason"] == "oom"
    taken = before - lowest
    print(f"\n  host memory taken at most {taken / MiB:.0f} MiB")
    assert taken < 256 * MiB + 64 * MiB


def test_netlink_is_only_what_libraries_need(start_kernel: StartKernel) -> None:
    """User-to-user netlink (USERSOCK) pinned 2 GiB of unaccounted buffers and KOBJECT_UEVENT
    received the host's device events: both are refused, while ROUTE, which getaddrinfo and
    if_nameindex use, works."""
    kernel = start_kernel(memory_limit="256M")
    seen = kernel.value(
        textwrap.dedent(
            """
            import errno, json, socket
            def netlink(protocol):
                try:
                    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol).close()
                except OSError as e:
                    return errno.errorcode[e.errno]
                return "ok"
            print(json.dumps({
                "usersock": netlink(2), "uevent": netlink(15), "generic": netlink(16),
                "route": netlink(0), "interfaces": [n for _, n in socket.if_nameindex()],
                "localhost": bool(socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)),
            }))
            """
        )
    )
    assert seen == {
        "usersock": "EPROTONOSUPPORT",
        "uevent": "EPROTONOSUPPORT",
        "generic": "EPROTONOSUPPORT",
        "route": "ok",
        "interfaces": ["lo"],
        "localhost": True,
    }


# Inside the kernel: open pseudo-terminals until the kernel refuses one; report how many.
OPEN_PTYS = """
import errno, json, os
held = []
try:
    while len(held) < 5000:
        held.append(os.openpty())
    error = None
except OSError as e:
    error = errno.errorcode[e.errno]
print(json.dumps({"opened": len(held), "error": error}))
"""


def test_ptys_are_capped_per_sandbox(start_kernel: StartKernel) -> None:
    """One sandbox opened 3071 ptys, all the host had outside its own devpts, and the next
    sandbox got ENOSPC. Now each has a devpts instance of its own holding at most PTY_LIMIT:
    the first stops there, and a second sandbox still gets its own."""
    first = start_kernel()
    seen = first.value(OPEN_PTYS)
    print(f"\n  opened {seen['opened']} ptys, then {seen['error']}")
    assert seen == {"opened": quotas.PTY_LIMIT, "error": "ENOSPC"}
    second = start_kernel()
    assert second.value(OPEN_PTYS.replace("5000", "3")) == {"opened": 3, "error": None}
