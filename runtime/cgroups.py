"""Per-sandbox control groups on cgroup v1, v2 and hybrid hosts.

The supervisor creates the cgroup and writes every limit before the sandbox starts; the process that
execs bubblewrap joins it first, so each sandbox process is accounted from its first instruction.
Each controller is looked up where the host mounts it (a v1 hierarchy or the unified v2 tree), so a
hybrid host works with the same code. `root` lets tests point all of this at a scratch directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from runtime.spec import Limits

# Controllers that enforce the limits, keyed by the limit they enforce.
CONTROLLER_OF_LIMIT = {"memory": "memory", "cpus": "cpu", "pids": "pids"}
CPU_PERIOD_US = 100_000
# The most a sandbox's TCP sockets may hold in buffers on cgroup v1 (memory_limit if lower):
# ample for its channels and loopback servers, small beside the host's tcp_mem.
TCP_BUFFER_CAP = 32 * 1024 * 1024
# Where a supervisor placed in a cgroup of its own (a systemd scope) moves itself on cgroup v2, so
# that cgroup holds no process and may hand controllers down to the sandbox's cgroup beside it.
SUPERVISOR_LEAF = "supervisor"


class CgroupError(RuntimeError):
    """A cgroup could not be created, limited, joined or removed."""


class CgroupPermissionError(CgroupError):
    """This user may not create cgroups there (an unprivileged server without delegation)."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the controllers it carries."""

    path: str
    version: int
    controllers: frozenset[str]


@dataclass(frozen=True)
class CgroupHost:
    """Where this host mounts each controller."""

    hierarchies: tuple[Hierarchy, ...]

    @property
    def mode(self) -> str:
        """'v1', 'v2', 'hybrid' or 'none': the host's cgroup layout, for messages and doctor."""
        versions = {h.version for h in self.hierarchies if h.controllers or h.version == 2}
        if versions == {2}:
            return "v2"
        if versions == {1}:
            return "v1"
        return "hybrid" if versions else "none"

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        """The hierarchy that enforces `controller`; v1 wins where a hybrid host has both."""
        for version in (1, 2):
            for h in self.hierarchies:
                if h.version == version and controller in h.controllers:
                    return h
        return None

    @classmethod
    def detect(cls, mountinfo: str = "/proc/self/mountinfo") -> CgroupHost:
        hierarchies = []
        with open(mountinfo) as f:
            for line in f:
                hierarchy = _parse_mount(line)
                if hierarchy:
                    hierarchies.append(hierarchy)
        return cls(tuple(hierarchies))


def _parse_mount(line: str) -> Hierarchy | None:
    """A cgroup hierarchy from one /proc/self/mountinfo line, or None for other mounts."""
    fields, _, tail = line.partition(" - ")
    parts, tail_parts = fields.split(), tail.split()
    if len(parts) < 5 or len(tail_parts) < 3:
        return None
    mount_point, fstype, super_options = parts[4], tail_parts[0], tail_parts[2]
    if fstype == "cgroup2":
        try:
            with open(os.path.join(mount_point, "cgroup.controllers")) as f:
                controllers = frozenset(f.read().split())
        except OSError:
            controllers = frozenset()
        return Hierarchy(mount_point, 2, controllers)
    if fstype == "cgroup":
        options = set(super_options.split(","))
        return Hierarchy(mount_point, 1, frozenset(options & {"memory", "cpu", "pids", "cpuacct"}))
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


# Controllers joined for their usage figures even when no limit needs them.
USAGE_CONTROLLERS = ("memory", "cpuacct")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_cpu_seconds(directories: list[str]) -> float | None:
    """CPU time a sandbox used so far, in seconds, from whichever of its cgroup directories
    counts it (cgroup v1 cpuacct, or any v2 cgroup); without one (a v1 host where cpuacct was
    not delegated), the CPU time of its processes, living and reaped. None if there are none."""
    counted = cgroup_cpu_seconds(directories)
    if counted is not None:
        return counted
    pids = SandboxCgroup("usage", directories).pids()
    return processes_cpu_seconds(pids) if pids else None


def processes_cpu_seconds(pids: set[int]) -> float:
    """CPU time of `pids` and of the children they reaped (/proc/PID/stat: utime, stime,
    cutime, cstime). A process that ends before its parent reaps it takes its time with it, so
    this can fall: a reader takes a fall as no reading."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = _read(f"/proc/{pid}/stat")
            # Fields after the command, which may hold spaces and parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def cgroup_cpu_seconds(directories: list[str]) -> float | None:
    """CPU time as the cgroups count it; None if none of them does."""
    for directory in directories:
        with contextlib.suppress(OSError, ValueError):
            return int(_read(os.path.join(directory, "cpuacct.usage"))) / 1e9
        with contextlib.suppress(OSError, ValueError):
            for line in _read(os.path.join(directory, "cpu.stat")).splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


def read_memory_usage(directory: str) -> int | None:
    """Bytes a memory cgroup of either version holds, not counting the page cache the kernel can
    reclaim at once (inactive file pages, as `docker stats` leaves out): a sandbox that has read
    many files is not shown near its limit with nothing to free. None if it cannot be read."""
    for filename, inactive_file in (
        ("memory.usage_in_bytes", "total_inactive_file"),
        ("memory.current", "inactive_file"),
    ):
        try:
            usage = int(_read(os.path.join(directory, filename)))
        except (OSError, ValueError):
            continue
        return max(0, usage - _memory_stat(directory, inactive_file))
    return None


def _memory_stat(directory: str, key: str) -> int:
    """One figure of a memory cgroup's memory.stat; 0 if it has none."""
    with contextlib.suppress(OSError, ValueError):
        for line in _read(os.path.join(directory, "memory.stat")).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


@dataclass
class SandboxCgroup:
    """The cgroup directories of one sandbox (one per hierarchy it uses)."""

    name: str
    directories: list[str] = field(default_factory=list)
    # Controller -> directory, for reading usage and events.
    by_controller: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Limits the host could not enforce (only when the caller allowed that).
    unenforced: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        host: CgroupHost,
        name: str,
        limits: Limits,
        *,
        parent: str | Mapping[str, str] = "",
        allow_unenforced: bool = False,
    ) -> SandboxCgroup:
        """Make the cgroup and write every limit, or raise without leaving a directory behind.

        `parent` is relative to each hierarchy's root: one path for all, or one per hierarchy
        (keyed by its mount point), as `parents_within_own_cgroup` returns."""
        cgroup = cls(name)
        try:
            cgroup._create(host, limits, parent, allow_unenforced)
        except BaseException:
            with contextlib.suppress(CgroupError):  # the original error is the one to report
                cgroup.remove()
            raise
        return cgroup

    def _create(
        self, host: CgroupHost, limits: Limits, parent: str | Mapping[str, str], allow: bool
    ) -> None:
        wanted = {
            controller
            for limit, controller in CONTROLLER_OF_LIMIT.items()
            if getattr(limits, limit)
        }
        # Every check before the first mkdir, so a host that cannot enforce a limit is refused
        # without touching it.
        hierarchies: dict[str, Hierarchy] = {}
        for controller in sorted(wanted):
            hierarchy = host.hierarchy_for(controller)
            if hierarchy is None:
                self._unenforceable(
                    controller,
                    f"no cgroup hierarchy on this host has the {controller} controller "
                    f"(cgroup layout: {host.mode})",
                    allow,
                )
            else:
                hierarchies[controller] = hierarchy
        # Usage figures: memory, and CPU time (cgroup v1 may keep cpuacct apart from cpu), are
        # worth joining whenever the host has them.
        for controller in USAGE_CONTROLLERS:
            if controller not in hierarchies and (hierarchy := host.hierarchy_for(controller)):
                hierarchies[controller] = hierarchy

        for controller, hierarchy in hierarchies.items():
            try:
                directory = self._directory_in(hierarchy, parent)
            except CgroupError as e:
                if controller not in wanted:
                    continue  # a cgroup only for usage figures is not worth failing
                if not isinstance(e, CgroupPermissionError):
                    raise
                self._unenforceable(controller, str(e), allow)
                continue
            self.by_controller[controller] = (directory, hierarchy.version)
            if controller in wanted:
                self._limit(controller, directory, hierarchy.version, limits)
                if controller == "memory" and hierarchy.version == 1:
                    self._limit_tcp_buffers(directory, limits, allow)

    def _limit_tcp_buffers(self, directory: str, limits: Limits, allow: bool) -> None:
        """cgroup v1 leaves socket buffers out of the memory limit, and TCP's and UDP's come
        from pools for the whole host (tcp_mem, udp_mem): a sandbox could pin gigabytes there and
        stall the network for everyone. Setting the cgroup's TCP counter turns on v1 socket
        accounting, which charges the buffers of every TCP and UDP socket the sandbox makes to
        that counter, and caps them. (v2 charges socket memory to memory.max.)"""
        path = os.path.join(directory, "memory.kmem.tcp.limit_in_bytes")
        if not os.path.exists(path):
            self._unenforceable(
                "socket buffer", "this kernel's cgroup v1 has no memory.kmem.tcp", allow
            )
            return
        value = min(limits.memory, TCP_BUFFER_CAP)
        try:
            _write(path, str(value))
        except OSError as e:
            msg = (
                f"cannot set memory.kmem.tcp.limit_in_bytes = {value} in {directory}: {e.strerror}"
            )
            raise CgroupError(msg) from e

    def _unenforceable(self, what: str, why: str, allow: bool) -> None:
        if not allow:
            msg = (
                "Fix the host (see the README's troubleshooting), or set "
                f"allow_unenforced_limits = True to start without a {what} limit: Hopx "
                f"cannot enforce the {what} limit here ({why})."
            )
            raise CgroupError(msg)
        self.unenforced.append(f"{what}: {why}")

    def _directory_in(self, hierarchy: Hierarchy, parent: str | Mapping[str, str]) -> str:
        if not isinstance(parent, str):
            if hierarchy.path not in parent:
                msg = f"this process is in no cgroup of {hierarchy.path}"
                raise CgroupError(msg)
            parent = parent[hierarchy.path]
        relative = parent.strip("/")
        base = os.path.join(hierarchy.path, relative) if relative else hierarchy.path
        directory = os.path.join(base, self.name)
        if directory in self.directories:
            return directory
        if hierarchy.version == 2:
            _enable_v2_controllers(base, hierarchy.controllers & {"memory", "cpu", "pids"})
        try:
            os.mkdir(directory, 0o755)
        except PermissionError as e:
            msg = (
                f"no permission to create cgroups in {base}; an unprivileged server needs a "
                "cgroup delegated to its user, named by cgroup_parent"
            )
            raise CgroupPermissionError(msg) from e
        except OSError as e:
            msg = f"cannot create cgroup {directory}: {e.strerror}"
            raise CgroupError(msg) from e
        self.directories.append(directory)
        return directory

    def _limit(self, controller: str, directory: str, version: int, limits: Limits) -> None:
        writes: list[tuple[str, str]] = []
        if controller == "memory":
            writes = _memory_writes(directory, version, limits.memory)
        elif controller == "cpu":
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            if version == 1:
                writes = [
                    ("cpu.cfs_period_us", str(CPU_PERIOD_US)),
                    ("cpu.cfs_quota_us", str(quota)),
                ]
            else:
                writes = [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
        elif controller == "pids":
            writes = [("pids.max", str(limits.pids))]
        for filename, value in writes:
            try:
                _write(os.path.join(directory, filename), value)
            except OSError as e:
                if filename == "memory.swappiness":
                    continue  # some v1 kernels refuse it below a hierarchy: swap stays possible
                msg = f"cannot set {filename} = {value} in {directory}: {e.strerror}"
                raise CgroupError(msg) from e

    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes "0" to in order to join every hierarchy."""
        return [os.path.join(d, "cgroup.procs") for d in self.directories]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(procs).split())
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup so far."""
        entry = self.by_controller.get("memory")
        if not entry:
            return 0
        directory, version = entry
        filename = "memory.oom_control" if version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in _read(os.path.join(directory, filename)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def memory_usage(self) -> int | None:
        entry = self.by_controller.get("memory")
        return read_memory_usage(entry[0]) if entry else None

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until it is empty (racing forks included)."""
        for directory in self.directories:
            with contextlib.suppress(OSError):
                _write(os.path.join(directory, "cgroup.kill"), "1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove every directory; safe to call more than once."""
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        for directory in reversed(self.directories):
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # EBUSY while the last killed processes are still being torn down.
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        msg = f"cannot remove cgroup {directory}: {e.strerror}"
                        raise CgroupError(msg) from e
                    time.sleep(0.01)
        self.directories.clear()


def _enable_v2_controllers(directory: str, controllers: frozenset[str]) -> None:
    """Delegate `controllers` to the children of a v2 `directory` (the no-internal-process rule
    means this fails if the directory itself holds processes, so say that)."""
    control = os.path.join(directory, "cgroup.subtree_control")
    try:
        enabled = set(_read(control).split())
    except OSError as e:
        msg = f"cannot read {control}: {e.strerror}"
        raise CgroupError(msg) from e
    missing = sorted(controllers - enabled)
    if not missing:
        return
    try:
        _write(control, " ".join(f"+{c}" for c in missing))
    except OSError as e:
        msg = (
            "Set cgroup_parent to an empty cgroup: a cgroup v2 parent that holds processes "
            f"cannot delegate controllers (enabling {', '.join(missing)} in {control}: "
            f"{e.strerror})."
        )
        raise CgroupError(msg) from e


def stale_cgroups(host: CgroupHost, prefix: str, parent: str = "") -> Iterator[str]:
    """Directories named `prefix`* directly under `parent` in every hierarchy, for the sweep."""
    seen: set[str] = set()
    for hierarchy in host.hierarchies:
        if not hierarchy.controllers and hierarchy.version == 1:
            continue
        base = os.path.join(hierarchy.path, parent.strip("/")) if parent else hierarchy.path
        with contextlib.suppress(OSError):
            for entry in os.scandir(base):
                if entry.name.startswith(prefix) and entry.is_dir() and entry.path not in seen:
                    seen.add(entry.path)
                    yield entry.path


def own_cgroups(host: CgroupHost, proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """The cgroup this process is in, relative to each hierarchy's root, keyed by mount point."""
    by_controllers: dict[frozenset[str], str] = {}
    unified = None
    with open(proc_cgroup) as f:
        for line in f:
            number, _, rest = line.rstrip("\n").partition(":")
            controllers, _, path = rest.partition(":")
            if number == "0" and not controllers:
                unified = path
            else:
                by_controllers[frozenset(controllers.split(","))] = path
    own: dict[str, str] = {}
    for hierarchy in host.hierarchies:
        if hierarchy.version == 2 and unified is not None:
            own[hierarchy.path] = unified
        for joined, path in by_controllers.items():
            if hierarchy.version == 1 and hierarchy.controllers & joined:
                own[hierarchy.path] = path
    return own


def parents_within_own_cgroup(host: CgroupHost) -> dict[str, str]:
    """Parents for a sandbox cgroup inside the cgroup this process was started in (a systemd
    scope delegated to it), keyed by mount point.

    On cgroup v2 this process first moves into a leaf below: a cgroup holding a process cannot
    pass controllers to its children."""
    own = own_cgroups(host)
    for hierarchy in host.hierarchies:
        if hierarchy.version != 2 or hierarchy.path not in own:
            continue
        leaf = os.path.join(hierarchy.path, own[hierarchy.path].strip("/"), SUPERVISOR_LEAF)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf, 0o755)
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        except OSError as e:
            msg = (
                "Delegate the cgroup this server runs in to its user (for a systemd scope: "
                f"Delegate=yes): the supervisor cannot move into {leaf} ({e.strerror}), so "
                "the cgroup it started in is not delegated to it."
            )
            raise CgroupError(msg) from e
    return own


def _memory_writes(directory: str, version: int, memory: int) -> list[tuple[str, str]]:
    """The memory limit, and swap kept out of it: swapping out could dodge the limit, and
    nothing a sandbox holds (its RAM-only scratch, its secrets) may be written to swap."""

    def present(filename: str) -> bool:
        return os.path.exists(os.path.join(directory, filename))

    if version == 2:
        return [("memory.max", str(memory))] + (
            [("memory.swap.max", "0")] if present("memory.swap.max") else []
        )
    writes = [("memory.limit_in_bytes", str(memory))]
    if present("memory.memsw.limit_in_bytes"):  # memory and swap together within the limit
        writes.append(("memory.memsw.limit_in_bytes", str(memory)))
    if present("memory.swappiness"):  # at 0, reclaim at the limit swaps nothing out
        writes.append(("memory.swappiness", "0"))
    return writes
