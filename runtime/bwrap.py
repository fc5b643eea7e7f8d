"""Turn a `SandboxSpec` into a bubblewrap command line.

One function builds the whole argv, in the order bubblewrap applies it: namespaces, the read-only
system, scratch space, the kernel's own paths, generated files, then the root is made read-only.
Host facts (merged /usr, which /etc files exist) are detected once into a `HostLayout` so the
builder itself stays pure and unit-testable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime.spec import SANDBOX_HOME, SANDBOX_UID, SandboxSpec

# Writable tmpfs mounts, capped in size and files; the supervisor mounts them (bubblewrap 0.8 has
# no inode cap). /var/tmp stays writable when a workspace covers /tmp.
SCRATCH_DIRS = ("/tmp", "/var/tmp", SANDBOX_HOME, "/dev/shm")

# Top-level system directories the kernel may see. On merged-/usr hosts most are symlinks.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# The parts of /etc a Python kernel needs: the dynamic loader, time zones, TLS roots, MIME types,
# fonts. Everything else in /etc (host config, credentials, machine identity) stays out.
ETC_ALLOWLIST = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "fonts",
    "gai.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "pki",
    "protocols",
    "services",
    "ssl",
    "timezone",
)


# Kernel interfaces a notebook has no use for, hidden as container runtimes hide them: these
# files get /dev/null bound over them (unreadable: bubblewrap's binds are nodev), these
# directories an empty read-only tmpfs.
PROC_MASKED_FILES = (
    "cmdline",  # the host's boot parameters
    "config.gz",  # the host kernel's build configuration
    "interrupts",
    "kallsyms",
    "kcore",
    "keys",
    "kmsg",
    "latency_stats",
    "sched_debug",
    "sysrq-trigger",
    "timer_list",
    "timer_stats",
)
PROC_MASKED_DIRS = ("acpi", "asound", "bus", "fs", "irq", "pressure", "scsi")


# Every bubblewrap option bwrap_argv uses: a bubblewrap without one of them (--disable-userns
# came in 0.8) cannot start a sandbox, and the host check says which it lacks.
OPTIONS_USED = (
    *("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"),
    "--unshare-cgroup-try",
    *("--uid", "--gid", "--hostname", "--disable-userns", "--die-with-parent"),
    *("--new-session", "--cap-drop", "--ro-bind", "--bind", "--symlink", "--proc", "--dev"),
    "--dev-bind",
    *("--tmpfs", "--remount-ro", "--ro-bind-data", "--bind-data", "--chdir", "--seccomp"),
    "--info-fd",
)


@dataclass(frozen=True)
class HostLayout:
    """The host's root filesystem, as far as building a sandbox root is concerned."""

    # System directory -> symlink target, for directories that are symlinks on the host.
    symlinks: tuple[tuple[str, str], ...]
    # System directories that are real directories on the host.
    directories: tuple[str, ...]
    # /etc entries from the allowlist that exist on this host.
    etc_entries: tuple[str, ...]
    # Entries of PROC_MASKED_FILES and PROC_MASKED_DIRS this host's /proc has.
    proc_masked_files: tuple[str, ...] = ()
    proc_masked_dirs: tuple[str, ...] = ()

    @classmethod
    def detect(cls, root: str = "/") -> HostLayout:
        symlinks: list[tuple[str, str]] = []
        directories: list[str] = []
        for path in SYSTEM_DIRS:
            host_path = os.path.join(root, path.lstrip("/"))
            if os.path.islink(host_path):
                symlinks.append((path, os.readlink(host_path)))
            elif os.path.isdir(host_path):
                directories.append(path)
        etc = tuple(
            name for name in ETC_ALLOWLIST if os.path.lexists(os.path.join(root, "etc", name))
        )
        proc = os.path.join(root, "proc")
        return cls(
            tuple(symlinks),
            tuple(directories),
            etc,
            proc_masked_files=tuple(
                n for n in PROC_MASKED_FILES if os.path.isfile(os.path.join(proc, n))
            ),
            proc_masked_dirs=tuple(
                n for n in PROC_MASKED_DIRS if os.path.isdir(os.path.join(proc, n))
            ),
        )


@dataclass(frozen=True)
class SandboxFds:
    """File descriptors bubblewrap reads from, inherited by it."""

    seccomp: int
    info: int
    # Destination path inside the sandbox -> fd holding the file's contents.
    files: Mapping[str, int]
    # The same, for files the kernel may rewrite (ipykernel rewrites its connection file).
    writable_files: Mapping[str, int] = field(default_factory=dict)


def is_within(path: str, parent: str) -> bool:
    """Whether `path` is `parent` or below it (both absolute and normalised)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def bwrap_argv(
    spec: SandboxSpec,
    layout: HostLayout,
    fds: SandboxFds,
    *,
    scratch: Mapping[str, str],
    ptys: str | None = None,
    sources: Mapping[str, str] | None = None,
    cgroups: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The complete bubblewrap command line for `spec`.

    `scratch` maps each of SCRATCH_DIRS to the capped tmpfs the supervisor mounted for it, and
    `ptys` names the devpts instance with a maximum it mounted for the sandbox's /dev/pts.

    `sources` maps a host path the sandbox should see (or the bubblewrap executable) to the path
    it is bound (or run) from. When the supervisor is root it stages paths the sandbox uid cannot
    reach (a home directory with mode 0700) in a private mount namespace; otherwise every path
    is used as it is.

    `cgroups` pairs each of the sandbox's cgroup directories with where it is seen, read only.
    """
    sources = sources or {}
    return [
        sources.get(spec.bwrap, spec.bwrap),
        *_namespaces(spec),
        *_system(layout),
        *[a for path in SCRATCH_DIRS for a in ("--bind", scratch[path], path)],
        *(("--dev-bind", ptys, "/dev/pts") if ptys else ()),
        *[a for directory, inside in cgroups for a in ("--ro-bind", directory, inside)],
        *_kernel_paths(spec, sources, layout.directories),
        *[a for dest, fd in sorted(fds.files.items()) for a in ("--ro-bind-data", str(fd), dest)],
        *[
            a
            for dest, fd in sorted(fds.writable_files.items())
            for a in ("--bind-data", str(fd), dest)
        ],
        *("--chdir", spec.cwd, "--remount-ro", "/"),
        *("--seccomp", str(fds.seccomp), "--info-fd", str(fds.info)),
        "--",
        *spec.argv,
    ]


def _namespaces(spec: SandboxSpec) -> list[str]:
    # Every namespace is new except the network one: the supervisor already made a private
    # network namespace (loopback only) and relays the kernel's channels through it.
    return [
        *("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"),
        "--unshare-cgroup-try",
        *("--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", spec.hostname),
        # No user namespace can be made inside, even were the seccomp filter to miss a path.
        "--disable-userns",
        "--die-with-parent",
        # A new session: the kernel has no controlling terminal to push input into.
        "--new-session",
        *("--cap-drop", "ALL"),
    ]


def _system(layout: HostLayout) -> list[str]:
    args = [a for path in layout.directories for a in ("--ro-bind", path, path)]
    args += [a for path, target in layout.symlinks for a in ("--symlink", target, path)]
    args += [
        a for name in layout.etc_entries for a in ("--ro-bind", f"/etc/{name}", f"/etc/{name}")
    ]
    args += ["--proc", "/proc"]
    args += [
        a for name in layout.proc_masked_files for a in ("--ro-bind", "/dev/null", f"/proc/{name}")
    ]
    for name in layout.proc_masked_dirs:
        args += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    return [*args, "--dev", "/dev"]


def _kernel_paths(
    spec: SandboxSpec, sources: Mapping[str, str], system_dirs: Sequence[str]
) -> list[str]:
    """The kernel's runtime, its workspace, what is hidden inside them or inside the system's
    directories (a Jupyter config directory below /usr/local), and path aliases."""
    args = [
        a for path in spec.read_only_paths for a in ("--ro-bind", sources.get(path, path), path)
    ]
    mounted = [*system_dirs, *spec.read_only_paths]
    if spec.workspace and spec.workspace_mode != "none":
        bind = "--bind" if spec.workspace_mode == "rw" else "--ro-bind"
        args += [bind, sources.get(spec.workspace, spec.workspace), spec.workspace]
        mounted.append(spec.workspace)
    hidden = [path for path in spec.hidden_paths if any(is_within(path, m) for m in mounted)]
    for path in hidden:
        args += ["--tmpfs", path, "--remount-ro", path]
    for path in spec.hidden_files:
        visible = any(is_within(path, m) for m in mounted)
        if visible and not any(is_within(path, h) for h in hidden):
            args += ["--ro-bind", "/dev/null", path]
    for target, link in spec.symlinks:
        args += ["--symlink", target, link]
    return args
