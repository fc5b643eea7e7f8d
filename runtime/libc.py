"""The few Linux calls the supervisor needs that Python's os module does not offer (3.10+)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

# open_tree/move_mount: same numbers on x86_64 and the asm-generic architectures (aarch64).
_NR_OPEN_TREE = 428
_NR_MOVE_MOUNT = 429
_OPEN_TREE_CLONE = 0x1
_AT_RECURSIVE = 0x8000
_AT_FDCWD = -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_NR_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000
_MOUNT_ATTR_IDMAP = 0x00100000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# The C library this interpreter is linked with. Not ctypes.util.find_library: that runs
# `ldconfig -p` in a subprocess, at every import, in every server and fork server.
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def clone_tree(path: str) -> int:
    """A detached copy of the mount tree at `path` (open_tree with OPEN_TREE_CLONE, recursive).

    The copy holds the mounts as they are now; mounts made later (even above it) stay out.
    """
    fd = _libc.syscall(
        _NR_OPEN_TREE,
        ctypes.c_int(_AT_FDCWD),
        path.encode(),
        ctypes.c_uint(_OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC),
    )
    _check(fd, f"open_tree {path}")
    return int(fd)


def attach_tree(tree_fd: int, target: str) -> None:
    """Attach a tree from clone_tree() at `target`."""
    _check(
        _libc.syscall(
            _NR_MOVE_MOUNT,
            ctypes.c_int(tree_fd),
            b"",
            ctypes.c_int(_AT_FDCWD),
            target.encode(),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
        ),
        f"move_mount {target}",
    )


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def idmap_tree(tree_fd: int, userns_fd: int) -> None:
    """Make a tree from clone_tree() an idmapped mount: ownership inside it is translated
    through the uid/gid maps of the user namespace `userns_fd` (see user_namespace_fd)."""
    attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    _check(
        _libc.syscall(
            _NR_MOUNT_SETATTR,
            ctypes.c_int(tree_fd),
            b"",
            ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        "mount_setattr",
    )


def user_namespace_fd(uid_map: str, gid_map: str) -> int:
    """An fd of a new, empty user namespace with the given maps ("inside outside count"), for
    an idmapped mount. Needs CAP_SETUID/CAP_SETGID: maps of any host ids are written.

    A throwaway child creates the namespace and stops; it is gone once the fd is open.
    """
    pid = os.fork()
    if pid == 0:  # the child: plain system calls only, then wait to be killed
        try:
            unshare(CLONE_NEWUSER)
            os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        msg = "cannot create a user namespace for an idmapped mount"
        raise OSError(msg)
    try:
        _write_file(f"/proc/{pid}/uid_map", uid_map)
        _write_file(f"/proc/{pid}/gid_map", gid_map)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def enter_private_network(unprivileged: bool) -> None:
    """Move the calling (single-threaded) process into a new network namespace with loopback up.

    Unprivileged, the namespace needs a user namespace of its own; the process's uid and gid map
    to themselves so files and cgroups it touches keep their host permissions.
    """
    if unprivileged:
        uid, gid = os.getuid(), os.getgid()
        unshare(CLONE_NEWUSER | CLONE_NEWNET)
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
        _write_file("/proc/self/gid_map", f"{gid} {gid} 1")
    else:
        unshare(CLONE_NEWNET)
    _loopback_up()


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
