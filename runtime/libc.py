"""The few Linux calls the supervisor needs that Python's os module does not offer (3.10+)."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
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

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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
