"""runtime.seccomp: the program's shape, its decisions, and what it does under real bubblewrap.

The unit tests run the generated program through a small classic-BPF interpreter. The bwrap tests
load it into a real sandbox, as an unprivileged uid, and probe each denied syscall by number. The
numbers below are written out independently of runtime.seccomp (checked against
asm/unistd_64.h), so a wrong entry in the module's table shows up as a syscall that is not
blocked.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import struct
import subprocess
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from runtime import seccomp

BWRAP = Path("/usr/bin/bwrap")
PYTHON = Path("/usr/bin/python3")
NOBODY = 65534

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97
RET_EPERM = 0x00050000 | EPERM
RET_EAFNOSUPPORT = 0x00050000 | EAFNOSUPPORT
RET_ENOSYS = 0x00050000 | ENOSYS

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# x86_64 numbers of every syscall the policy denies outright, and the errno it must produce.
X86_64_DENIED: dict[str, tuple[int, int]] = {
    "ptrace": (101, EPERM),
    "syslog": (103, EPERM),
    "uselib": (134, EPERM),
    "vhangup": (153, EPERM),
    "modify_ldt": (154, EPERM),
    "pivot_root": (155, EPERM),
    "adjtimex": (159, EPERM),
    "chroot": (161, EPERM),
    "acct": (163, EPERM),
    "settimeofday": (164, EPERM),
    "mount": (165, EPERM),
    "umount2": (166, EPERM),
    "swapon": (167, EPERM),
    "swapoff": (168, EPERM),
    "reboot": (169, EPERM),
    "iopl": (172, EPERM),
    "ioperm": (173, EPERM),
    "init_module": (175, EPERM),
    "delete_module": (176, EPERM),
    "quotactl": (179, EPERM),
    "nfsservctl": (180, EPERM),
    "lookup_dcookie": (212, EPERM),
    "clock_settime": (227, EPERM),
    "mbind": (237, EPERM),
    "set_mempolicy": (238, EPERM),
    "get_mempolicy": (239, EPERM),
    "kexec_load": (246, EPERM),
    "add_key": (248, EPERM),
    "request_key": (249, EPERM),
    "keyctl": (250, EPERM),
    "migrate_pages": (256, EPERM),
    "unshare": (272, EPERM),
    "move_pages": (279, EPERM),
    "perf_event_open": (298, EPERM),
    "fanotify_init": (300, EPERM),
    "name_to_handle_at": (303, EPERM),
    "open_by_handle_at": (304, EPERM),
    "clock_adjtime": (305, EPERM),
    "setns": (308, EPERM),
    "process_vm_readv": (310, EPERM),
    "process_vm_writev": (311, EPERM),
    "kcmp": (312, EPERM),
    "finit_module": (313, EPERM),
    "kexec_file_load": (320, EPERM),
    "bpf": (321, EPERM),
    "userfaultfd": (323, EPERM),
    "io_uring_setup": (425, EPERM),
    "io_uring_enter": (426, EPERM),
    "io_uring_register": (427, EPERM),
    "open_tree": (428, ENOSYS),
    "move_mount": (429, ENOSYS),
    "fsopen": (430, ENOSYS),
    "fsconfig": (431, ENOSYS),
    "fsmount": (432, ENOSYS),
    "fspick": (433, ENOSYS),
    "clone3": (435, ENOSYS),
    "openat2": (437, ENOSYS),
    "pidfd_getfd": (438, EPERM),
    "process_madvise": (440, EPERM),
    "mount_setattr": (442, ENOSYS),
    "quotactl_fd": (443, EPERM),
    "memfd_secret": (447, EPERM),
    "set_mempolicy_home_node": (450, EPERM),
    "open_tree_attr": (467, ENOSYS),  # Linux 6.15
}
NR_READ, NR_WRITE, NR_MMAP, NR_GETPID, NR_EXECVE = 0, 1, 9, 39, 59
NR_IOCTL, NR_SOCKET, NR_CLONE, NR_PERSONALITY = 16, 41, 56, 135
NR_FUTEX, NR_EXIT_GROUP, NR_OPENAT = 202, 231, 257
NR_OPEN, NR_CREAT, NR_CHMOD, NR_FCHMOD, NR_MKNOD = 2, 85, 90, 91, 133
NR_MKNODAT, NR_FCHMODAT, NR_FCHMODAT2 = 259, 268, 452
O_WRONLY, O_CREAT, O_TMPFILE = 0o1, 0o100, 0o20200000
S_IFREG = 0o100000
AT_FDCWD = -100 & 0xFFFFFFFF

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_VFORK, CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x4000, 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID = 0x100000, 0x200000
SIGCHLD = 17
THREAD_FLAGS = (
    CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
)
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
HIGH_JUNK = 0xDEADBEEF_00000000  # the kernel ignores these bits of clone flags / ioctl requests

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
AF_KEY, AF_BLUETOOTH, AF_ALG, AF_VSOCK, AF_XDP = 15, 31, 38, 40, 44
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_PACKET = 1, 2, 3, 10
SOCK_NONBLOCK, SOCK_CLOEXEC = 0x800, 0x80000
TIOCSTI, TIOCLINUX, TCGETS, TIOCGWINSZ, FIONREAD = 0x5412, 0x541C, 0x5401, 0x5413, 0x541B
ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC = 0x0040000, 0x0400000


# --- a classic-BPF interpreter, just big enough for seccomp programs --------------------------

LD_W_ABS, ALU_AND_K, RET_K = 0x20, 0x54, 0x06
JEQ_K, JGE_K, JSET_K = 0x15, 0x35, 0x45
JUMPS = {JEQ_K, JGE_K, JSET_K}
SECCOMP_DATA_SIZE = 64


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return list(struct.iter_unpack("<HBBI", program))


def run_filter(program: bytes, data: bytes) -> int:
    """What the kernel would do with `data` (a packed struct seccomp_data)."""
    insns = instructions(program)
    accumulator = 0
    pc = 0
    while True:
        assert pc < len(insns), "execution ran off the end of the program"
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == LD_W_ABS:
            assert k % 4 == 0, f"unaligned load offset {k}"
            assert k + 4 <= SECCOMP_DATA_SIZE, f"load beyond seccomp_data at {k}"
            (accumulator,) = struct.unpack_from("<I", data, k)
        elif code == ALU_AND_K:
            accumulator &= k
        elif code == JEQ_K:
            pc += jt if accumulator == k else jf
        elif code == JGE_K:
            pc += jt if accumulator >= k else jf
        elif code == JSET_K:
            pc += jt if accumulator & k else jf
        elif code == RET_K:
            return k
        else:
            pytest.fail(f"unexpected BPF opcode {code:#x} at {pc - 1}")


def seccomp_data(
    nr: int, args: Sequence[int] = (), arch: int = AUDIT_ARCH_X86_64, ip: int = 0x7F00_0000_1000
) -> bytes:
    padded = [*args, *[0] * (6 - len(args))]
    return struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, ip, *padded)


@pytest.fixture(scope="module")
def x86_64() -> bytes:
    return seccomp.build_filter("x86_64")


@pytest.fixture(scope="module")
def aarch64() -> bytes:
    return seccomp.build_filter("aarch64")


def decide(program: bytes, nr: int, *args: int) -> int:
    return run_filter(program, seccomp_data(nr, args))


# --- shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_program_is_well_formed(machine: str) -> None:
    program = seccomp.build_filter(machine)
    assert len(program) % 8 == 0
    insns = instructions(program)
    assert 0 < len(insns) <= 4096  # BPF_MAXINSNS
    for pc, (code, jt, jf, k) in enumerate(insns):
        assert code in {LD_W_ABS, ALU_AND_K, RET_K, *JUMPS}, f"opcode {code:#x} at {pc}"
        if code in JUMPS:
            assert pc + 1 + max(jt, jf) < len(insns), f"jump out of the program at {pc}"
        else:
            assert jt == jf == 0, f"stray jump offsets at {pc}"
        if code == LD_W_ABS:
            assert k in {0, 4} or k >= 16, f"loads the instruction pointer at {pc}"
    assert insns[-1] == (RET_K, 0, 0, RET_ALLOW)
    assert insns[0] == (LD_W_ABS, 0, 0, 4), "the architecture must be checked first"


def test_host_machine_and_aliases() -> None:
    assert seccomp.build_filter("amd64") == seccomp.build_filter("x86_64")
    assert seccomp.build_filter("arm64") == seccomp.build_filter("aarch64")
    assert seccomp.build_filter("x86_64") != seccomp.build_filter("aarch64")
    if platform.machine() in {"x86_64", "aarch64"}:
        assert seccomp.build_filter() == seccomp.build_filter(platform.machine())


@pytest.mark.parametrize("machine", ["riscv64", "i686", "armv7l", ""])
def test_unsupported_architecture(machine: str) -> None:
    with pytest.raises(seccomp.UnsupportedArchitecture, match=repr(machine)) as caught:
        seccomp.build_filter(machine)
    assert isinstance(caught.value, seccomp.SeccompError)
    assert caught.value.machine == machine
    assert "x86_64" in str(caught.value)


def test_policy_covers_exactly_the_expected_syscalls() -> None:
    assert set(seccomp.DENIED_SYSCALLS) == set(X86_64_DENIED)
    assert set(seccomp.ARGUMENT_RULES) == {
        "clone",
        "ioctl",
        "socket",
        "personality",
        *("chmod", "fchmod", "fchmodat", "fchmodat2", "creat", "mknod", "mknodat"),
        *("open", "openat"),
    }


def _header_numbers(header: Path) -> dict[str, int]:
    text = header.read_text()
    defines = re.finditer(r"^#define __NR(?:3264)?_(\w+)\s+(\d+)", text, re.MULTILINE)
    return {match[1]: int(match[2]) for match in defines}


@pytest.mark.parametrize(
    ("machine", "headers"),
    [
        (
            "x86_64",
            ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"],
        ),
        ("aarch64", ["/usr/include/asm-generic/unistd.h"]),
    ],
)
def test_syscall_numbers_match_kernel_headers(machine: str, headers: list[str]) -> None:
    header = next((Path(h) for h in headers if Path(h).is_file()), None)
    if header is None:
        pytest.skip(f"no kernel header for {machine} ({', '.join(headers)})")
    numbers = _header_numbers(header)
    table = {"x86_64": seccomp.X86_64_SYSCALLS, "aarch64": seccomp.AARCH64_SYSCALLS}[machine]
    for name, nr in table.items():
        if name not in numbers and nr is not None:
            # Newer than the installed headers: it must at least not reuse an older number.
            assert nr > max(numbers.values()), f"{name}: table {nr} is taken in {header}"
            continue
        assert numbers.get(name) == nr, f"{name}: table {nr}, {header} {numbers.get(name)}"


def test_independent_numbers_match_kernel_header() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.is_file():
        pytest.skip(f"{header} is not installed")
    numbers = _header_numbers(header)
    for name, (nr, _) in X86_64_DENIED.items():
        assert numbers.get(name, nr) == nr, name  # names newer than the headers: see above


# --- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), X86_64_DENIED.items(), ids=list(X86_64_DENIED))
def test_denied_syscalls_x86_64(x86_64: bytes, name: str, expected: tuple[int, int]) -> None:
    nr, errno = expected
    assert decide(x86_64, nr) == 0x00050000 | errno
    assert decide(x86_64, nr, 1, 2, 3, 4, 5, 6) == 0x00050000 | errno  # arguments do not matter


@pytest.mark.parametrize("name", sorted(seccomp.DENIED_SYSCALLS))
def test_denied_syscalls_aarch64(aarch64: bytes, name: str) -> None:
    nr = seccomp.AARCH64_SYSCALLS[name]
    if nr is None:
        assert name in {"uselib", "iopl", "ioperm", "modify_ldt"}
        return
    data = seccomp_data(nr, arch=AUDIT_ARCH_AARCH64)
    assert run_filter(aarch64, data) == 0x00050000 | X86_64_DENIED[name][1]


@pytest.mark.parametrize(
    ("nr", "args"),
    [
        pytest.param(NR_READ, (0, 0x1000, 4096), id="read"),
        pytest.param(NR_WRITE, (1, 0x1000, 12), id="write"),
        pytest.param(NR_OPENAT, (-100 & 0xFFFFFFFF, 0x1000, 0o2000000), id="openat"),
        pytest.param(NR_MMAP, (0, 4096, 3, 0x22, -1 & 0xFFFFFFFF, 0), id="mmap"),
        pytest.param(NR_FUTEX, (0x1000, 0x80, 1), id="futex"),
        pytest.param(NR_GETPID, (), id="getpid"),
        pytest.param(NR_EXECVE, (0x1000, 0x2000, 0x3000), id="execve"),
        pytest.param(NR_EXIT_GROUP, (0,), id="exit_group"),
        pytest.param(NR_CLONE, (THREAD_FLAGS, 0x1000, 0x2000, 0x3000, 0x4000), id="clone-thread"),
        pytest.param(NR_CLONE, (SIGCHLD,), id="clone-fork"),
        pytest.param(NR_CLONE, (CLONE_VM | CLONE_VFORK | SIGCHLD,), id="clone-vfork"),
        pytest.param(NR_CLONE, (HIGH_JUNK | SIGCHLD,), id="clone-high-bits-ignored"),
        pytest.param(NR_SOCKET, (AF_INET, SOCK_STREAM, 0), id="socket-inet-stream"),
        pytest.param(NR_SOCKET, (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), id="socket-inet-dgram"),
        pytest.param(NR_SOCKET, (AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0), id="socket-inet6"),
        pytest.param(NR_SOCKET, (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), id="socket-unix"),
        pytest.param(NR_SOCKET, (AF_NETLINK, SOCK_RAW, 0), id="socket-netlink-route"),
        pytest.param(
            NR_SOCKET, (AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, 0), id="netlink-route-dgram"
        ),
        pytest.param(NR_SOCKET, (AF_NETLINK, SOCK_RAW, 4), id="socket-netlink-sock-diag"),
        pytest.param(NR_IOCTL, (0, TCGETS, 0x1000), id="ioctl-tcgets"),
        pytest.param(NR_IOCTL, (0, TIOCGWINSZ, 0x1000), id="ioctl-tiocgwinsz"),
        pytest.param(NR_IOCTL, (3, FIONREAD, 0x1000), id="ioctl-fionread"),
        pytest.param(NR_PERSONALITY, (0,), id="personality-linux"),
        pytest.param(NR_PERSONALITY, (0x0008,), id="personality-linux32"),
        pytest.param(NR_PERSONALITY, (0xFFFFFFFF,), id="personality-query"),
        pytest.param(NR_CHMOD, (0x1000, 0o1777), id="chmod-sticky"),
        pytest.param(NR_FCHMOD, (3, 0o755), id="fchmod"),
        pytest.param(NR_FCHMODAT, (AT_FDCWD, 0x1000, 0o644), id="fchmodat"),
        pytest.param(NR_FCHMODAT2, (AT_FDCWD, 0x1000, 0o600, 0x100), id="fchmodat2"),
        pytest.param(NR_CREAT, (0x1000, 0o644), id="creat"),
        pytest.param(NR_MKNODAT, (AT_FDCWD, 0x1000, S_IFREG | 0o644, 0), id="mknodat-file"),
        pytest.param(NR_OPEN, (0x1000, O_WRONLY | O_CREAT, 0o666), id="open-create"),
        pytest.param(NR_OPENAT, (AT_FDCWD, 0x1000, O_CREAT, 0o777), id="openat-create"),
        # Without O_CREAT the mode is ignored, whatever it holds.
        pytest.param(NR_OPENAT, (AT_FDCWD, 0x1000, 0, 0o7777), id="openat-mode-ignored"),
        pytest.param(-1, (), id="nr-minus-one-is-not-x32"),
    ],
)
def test_allowed_x86_64(x86_64: bytes, nr: int, args: tuple[int, ...]) -> None:
    assert decide(x86_64, nr, *args) == RET_ALLOW


@pytest.mark.parametrize(
    ("nr", "args"),
    [
        *[
            pytest.param(NR_CLONE, (flag | SIGCHLD,), id=f"clone-{name}")
            for name, flag in NAMESPACE_FLAGS.items()
        ],
        pytest.param(NR_CLONE, (THREAD_FLAGS | 0x10000000,), id="clone-thread+newuser"),
        pytest.param(NR_CLONE, (HIGH_JUNK | 0x40000000 | SIGCHLD,), id="clone-newnet-high-bits"),
        pytest.param(NR_IOCTL, (0, TIOCSTI, 0x1000), id="ioctl-tiocsti"),
        pytest.param(NR_IOCTL, (0, TIOCLINUX, 0x1000), id="ioctl-tioclinux"),
        pytest.param(NR_IOCTL, (0, HIGH_JUNK | TIOCSTI, 0x1000), id="ioctl-tiocsti-high-bits"),
        pytest.param(NR_SOCKET, (AF_PACKET, SOCK_RAW, 0x0300), id="socket-packet-raw"),
        pytest.param(NR_SOCKET, (AF_PACKET, SOCK_DGRAM, 0), id="socket-packet-dgram"),
        pytest.param(NR_SOCKET, (AF_INET, SOCK_RAW, 1), id="socket-inet-raw"),
        pytest.param(
            NR_SOCKET, (AF_INET, SOCK_RAW | SOCK_CLOEXEC, 1), id="socket-inet-raw-cloexec"
        ),
        pytest.param(NR_SOCKET, (AF_INET6, SOCK_RAW | SOCK_NONBLOCK, 58), id="socket-inet6-raw"),
        pytest.param(NR_SOCKET, (AF_INET, SOCK_PACKET, 0x0300), id="socket-inet-sock-packet"),
        pytest.param(NR_CHMOD, (0x1000, 0o4755), id="chmod-setuid"),
        pytest.param(NR_CHMOD, (0x1000, 0o2755), id="chmod-setgid"),
        pytest.param(NR_FCHMOD, (3, 0o6755), id="fchmod-setuid"),
        pytest.param(NR_FCHMOD, (3, HIGH_JUNK | 0o4000), id="fchmod-setuid-high-bits"),
        pytest.param(NR_FCHMODAT, (AT_FDCWD, 0x1000, 0o4711), id="fchmodat-setuid"),
        pytest.param(NR_FCHMODAT2, (AT_FDCWD, 0x1000, 0o2711, 0), id="fchmodat2-setgid"),
        pytest.param(NR_CREAT, (0x1000, 0o4755), id="creat-setuid"),
        pytest.param(NR_MKNOD, (0x1000, S_IFREG | 0o4755, 0), id="mknod-setuid"),
        pytest.param(NR_MKNODAT, (AT_FDCWD, 0x1000, S_IFREG | 0o2755, 0), id="mknodat-setgid"),
        pytest.param(NR_OPEN, (0x1000, O_WRONLY | O_CREAT, 0o4755), id="open-create-setuid"),
        pytest.param(NR_OPENAT, (AT_FDCWD, 0x1000, O_CREAT, 0o6755), id="openat-create-setuid"),
        pytest.param(NR_OPENAT, (AT_FDCWD, 0x1000, O_TMPFILE, 0o2755), id="openat-tmpfile-setgid"),
        pytest.param(NR_PERSONALITY, (ADDR_NO_RANDOMIZE,), id="personality-no-aslr"),
        pytest.param(NR_PERSONALITY, (READ_IMPLIES_EXEC,), id="personality-read-implies-exec"),
        pytest.param(
            NR_PERSONALITY, (0x0008 | ADDR_NO_RANDOMIZE,), id="personality-linux32-no-aslr"
        ),
    ],
)
def test_denied_by_argument_x86_64(x86_64: bytes, nr: int, args: tuple[int, ...]) -> None:
    assert decide(x86_64, nr, *args) == RET_EPERM


# NETLINK_USERSOCK (2) and NETLINK_KOBJECT_UEVENT (15) among them.
@pytest.mark.parametrize("protocol", [1, 2, 9, 12, 15, 16, 21, 31, 0xFFFF_FFFF])
def test_netlink_protocols_but_route_and_sock_diag_are_not_supported(
    x86_64: bytes, protocol: int
) -> None:
    """User-to-user netlink pinned gigabytes of unaccounted buffers and uevents carried the
    host's device events: every netlink protocol but ROUTE and SOCK_DIAG is unsupported."""
    for kind in (SOCK_RAW, SOCK_DGRAM | SOCK_CLOEXEC):
        assert decide(x86_64, NR_SOCKET, AF_NETLINK, kind, protocol) == 0x00050000 | 93


@pytest.mark.parametrize("family", [0, 3, AF_KEY, AF_BLUETOOTH, AF_ALG, AF_VSOCK, AF_XDP, 45, 255])
def test_socket_families_outside_the_allowlist_do_not_exist(x86_64: bytes, family: int) -> None:
    """Families other than unix, IP and netlink fail as if the kernel lacked them."""
    assert decide(x86_64, NR_SOCKET, family, SOCK_STREAM, 0) == RET_EAFNOSUPPORT
    assert decide(x86_64, NR_SOCKET, family, SOCK_DGRAM | SOCK_CLOEXEC, 0) == RET_EAFNOSUPPORT


@pytest.mark.parametrize(
    ("nr", "arch"),
    [
        pytest.param(20, AUDIT_ARCH_I386, id="i386-getpid"),
        pytest.param(NR_READ, AUDIT_ARCH_I386, id="i386-nr0"),
        pytest.param(NR_GETPID, AUDIT_ARCH_AARCH64, id="aarch64-on-x86_64"),
        pytest.param(X32_SYSCALL_BIT | NR_GETPID, AUDIT_ARCH_X86_64, id="x32-getpid"),
        pytest.param(X32_SYSCALL_BIT | NR_READ, AUDIT_ARCH_X86_64, id="x32-read"),
        pytest.param(X32_SYSCALL_BIT | 165, AUDIT_ARCH_X86_64, id="x32-mount"),
        pytest.param(0x7FFFFFFF, AUDIT_ARCH_X86_64, id="nr-0x7fffffff"),
    ],
)
def test_foreign_abi_is_killed_x86_64(x86_64: bytes, nr: int, arch: int) -> None:
    assert run_filter(x86_64, seccomp_data(nr, arch=arch)) == RET_KILL_PROCESS


def test_aarch64_decisions(aarch64: bytes) -> None:
    def on_arm(nr: int, *args: int, arch: int = AUDIT_ARCH_AARCH64) -> int:
        return run_filter(aarch64, seccomp_data(nr, args, arch=arch))

    read, write, openat, clone, ioctl, socket = 63, 64, 56, 220, 29, 198
    assert on_arm(read, 0, 0x1000, 10) == RET_ALLOW
    assert on_arm(write, 1, 0x1000, 10) == RET_ALLOW
    assert on_arm(openat, 0, 0x1000, 0) == RET_ALLOW
    assert on_arm(clone, THREAD_FLAGS) == RET_ALLOW
    assert on_arm(clone, 0x10000000 | SIGCHLD) == RET_EPERM
    assert on_arm(ioctl, 0, TIOCSTI) == RET_EPERM
    assert on_arm(ioctl, 0, TCGETS) == RET_ALLOW
    assert on_arm(socket, AF_INET, SOCK_RAW) == RET_EPERM
    assert on_arm(socket, AF_INET, SOCK_STREAM) == RET_ALLOW
    assert on_arm(read, arch=AUDIT_ARCH_X86_64) == RET_KILL_PROCESS
    assert on_arm(read, arch=0x40000028) == RET_KILL_PROCESS  # 32-bit ARM compat
    assert on_arm(read, arch=0x800000B7) == RET_KILL_PROCESS  # big-endian aarch64


# --- real bubblewrap ------------------------------------------------------------------------


@pytest.fixture
def bwrap() -> Path:
    if not BWRAP.exists():
        pytest.skip(f"bubblewrap is not installed at {BWRAP}")
    if platform.machine() != "x86_64":
        pytest.skip("the in-sandbox probes use x86_64 syscall numbers")
    if not PYTHON.exists():
        pytest.skip(f"{PYTHON} is needed inside the sandbox")
    return BWRAP


@pytest.fixture
def filter_fd() -> Iterator[int]:
    """A pipe holding the whole program, write end closed so bwrap reads it up to EOF."""
    read_end, write_end = os.pipe()
    program = seccomp.build_filter()
    assert len(program) < 4096, "must fit in the pipe buffer without a writer thread"
    os.write(write_end, program)
    os.close(write_end)
    yield read_end
    os.close(read_end)


def run_sandboxed(
    code: str,
    argv: Sequence[str] = (),
    seccomp_fd: int | None = None,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run python `code` under bwrap as an unprivileged uid; sandboxes never run as host root."""
    command = [
        str(BWRAP),
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        *extra,
    ]  # fmt: skip
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    command += ["--", str(PYTHON), "-c", code, *argv]
    root = os.geteuid() == 0
    return subprocess.run(
        command,
        pass_fds=() if seccomp_fd is None else (seccomp_fd,),
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=120,
        check=False,
        user=NOBODY if root else None,
        group=NOBODY if root else None,
        extra_groups=[] if root else None,
    )


# Arguments chosen so that, without the filter, the kernel answers something other than the
# filter's errno where that is easy (EBADF, EFAULT, success), making the probes discriminating.
PROBE_ARGS: dict[str, list[int]] = {
    "setns": [-1, 0],
    "perf_event_open": [0, 0, -1, -1, 0],
    "io_uring_setup": [1, 0],
    "keyctl": [0, -3, 0],  # KEYCTL_GET_KEYRING_ID of the session keyring, do not create
    "fsopen": [0, 0],
    "clone3": [0, 0],
}

PROBE_CHILD = textwrap.dedent(
    r"""
    import ctypes, errno, fcntl, json, os, socket, subprocess, sys, termios, threading

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def outcome(result, err):
        return "ok" if result >= 0 else errno.errorcode.get(err, str(err))

    def raw(nr, *args):
        # Always pass six arguments: the registers of missing ones would hold garbage.
        args = [*args, *[0] * (6 - len(args))]
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        return outcome(result, ctypes.get_errno())

    def isolated(probe):
        # Run a probe in a throwaway child: if the filter failed, its side effects (a new
        # namespace, being traced, a changed personality) must not leak into later probes.
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                os.write(write_end, probe().encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(pid, 0)
        return answer or "probe died"

    def os_error(action):
        try:
            action()
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        return "ok"

    def fork_like_clone(flags):
        result = libc.syscall(ctypes.c_long(56), ctypes.c_long(flags), 0, 0, 0, 0)
        if result == 0:
            os._exit(0)
        err = ctypes.get_errno()
        if result > 0:
            os.waitpid(result, 0)
        return outcome(result, err)

    def tiocsti():
        os.setsid()
        controller, terminal = os.openpty()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)  # the attack targets the controlling tty
        return os_error(lambda: fcntl.ioctl(terminal, termios.TIOCSTI, b"x"))

    def pty_tcgetattr():
        controller, terminal = os.openpty()
        return os_error(lambda: termios.tcgetattr(terminal))

    def open_socket(family, kind, proto=0):
        return os_error(lambda: socket.socket(family, kind, proto).close())

    def thread():
        seen = []
        worker = threading.Thread(target=seen.append, args=("ran",))
        worker.start()
        worker.join()
        return "ok" if seen == ["ran"] else f"thread did not run: {seen}"

    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        return "ok" if os.waitstatus_to_exitcode(status) == 7 else f"status {status}"

    def spawn():
        return "ok" if subprocess.run(["/bin/true"]).returncode == 0 else "failed"

    def tcp_loopback():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=10) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"ping")
                    return "ok" if peer.recv(4) == b"ping" else "wrong bytes"

    def seccomp_mode():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Seccomp:"):
                    return line.split()[1]
        return "unknown"

    results = {"uid": str(os.getuid()), "seccomp_mode": seccomp_mode()}
    for name, (nr, *args) in json.loads(sys.argv[1]).items():
        results[name] = isolated(lambda: raw(nr, *args))
    results.update({
        "libc unshare(CLONE_NEWUSER)": isolated(lambda: outcome(libc.unshare(0x10000000),
                                                                ctypes.get_errno())),
        "libc mount tmpfs": isolated(lambda: outcome(
            libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno())),
        "libc ptrace(PTRACE_TRACEME)": isolated(lambda: outcome(libc.ptrace(0, 0, 0, 0),
                                                                ctypes.get_errno())),
        "clone(CLONE_NEWUSER)": isolated(lambda: fork_like_clone(0x10000000 | 17)),
        "clone(CLONE_NEWNET)": isolated(lambda: fork_like_clone(0x40000000 | 17)),
        "personality(ADDR_NO_RANDOMIZE)": isolated(lambda: raw(135, 0x0040000)),
        "personality(query)": isolated(lambda: raw(135, 0xFFFFFFFF)),
        "ioctl(TIOCSTI)": isolated(tiocsti),
        "tcgetattr(pty)": isolated(pty_tcgetattr),
        "socket(AF_PACKET)": open_socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
        "socket(AF_INET, SOCK_RAW)": open_socket(socket.AF_INET, socket.SOCK_RAW, 1),
        "socket(AF_INET6, SOCK_RAW)": open_socket(socket.AF_INET6, socket.SOCK_RAW, 58),
        "socket(AF_NETLINK, SOCK_RAW)": open_socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        "socketpair(AF_UNIX)": os_error(lambda: [s.close() for s in socket.socketpair()]),
        "socket(AF_INET, SOCK_DGRAM)": open_socket(socket.AF_INET, socket.SOCK_DGRAM),
        "socket(AF_INET, SOCK_PACKET)": open_socket(socket.AF_INET, 10, 0x0300),
        "socket(AF_VSOCK)": open_socket(40, socket.SOCK_STREAM),
        "socket(AF_ALG)": open_socket(38, socket.SOCK_SEQPACKET),
        "threading.Thread": thread(),
        "os.fork": fork(),
        "subprocess /bin/true": spawn(),
        "tcp loopback": tcp_loopback(),
    })
    print(json.dumps(results))
    """
)


def probe(seccomp_fd: int | None, extra: Sequence[str] = ()) -> dict[str, str]:
    probes = {name: [nr, *PROBE_ARGS.get(name, [])] for name, (nr, _) in X86_64_DENIED.items()}
    result = run_sandboxed(PROBE_CHILD, [json.dumps(probes)], seccomp_fd, extra)
    assert result.returncode == 0, result.stderr
    outcomes: dict[str, str] = json.loads(result.stdout)
    return outcomes


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
def test_sandbox_blocks_denied_syscalls(filter_fd: int) -> None:
    outcomes = probe(filter_fd)
    assert outcomes["seccomp_mode"] == "2", "the filter was not installed"
    if os.geteuid() == 0:
        assert outcomes["uid"] == str(NOBODY)
    expected_name = {EPERM: "EPERM", ENOSYS: "ENOSYS"}
    wrong = {
        name: outcomes[name]
        for name, (_, errno) in X86_64_DENIED.items()
        if outcomes[name] != expected_name[errno]
    }
    assert wrong == {}, "denied syscalls that did not fail with the policy's errno"

    assert outcomes["libc unshare(CLONE_NEWUSER)"] == "EPERM"
    assert outcomes["libc mount tmpfs"] == "EPERM"
    assert outcomes["libc ptrace(PTRACE_TRACEME)"] == "EPERM"
    assert outcomes["clone(CLONE_NEWUSER)"] == "EPERM"
    assert outcomes["clone(CLONE_NEWNET)"] == "EPERM"
    assert outcomes["personality(ADDR_NO_RANDOMIZE)"] == "EPERM"
    assert outcomes["ioctl(TIOCSTI)"] == "EPERM"
    assert outcomes["socket(AF_PACKET)"] == "EPERM"
    assert outcomes["socket(AF_INET, SOCK_RAW)"] == "EPERM"
    assert outcomes["socket(AF_INET6, SOCK_RAW)"] == "EPERM"
    assert outcomes["socket(AF_INET, SOCK_PACKET)"] == "EPERM"
    assert outcomes["socket(AF_VSOCK)"] == "EAFNOSUPPORT"
    assert outcomes["socket(AF_ALG)"] == "EAFNOSUPPORT"


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
def test_sandbox_keeps_ordinary_work_working(filter_fd: int) -> None:
    outcomes = probe(filter_fd)
    assert outcomes["seccomp_mode"] == "2", "the filter was not installed"
    for name in [
        "threading.Thread",  # glibc tries clone3 (ENOSYS) and falls back to clone
        "os.fork",
        "subprocess /bin/true",
        "tcp loopback",
        "socketpair(AF_UNIX)",
        "socket(AF_INET, SOCK_DGRAM)",
        "socket(AF_NETLINK, SOCK_RAW)",
        "tcgetattr(pty)",
        "personality(query)",
    ]:
        assert outcomes[name] == "ok", f"{name}: {outcomes[name]}"


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
def test_probes_are_meaningful_without_the_filter() -> None:
    # Without --seccomp the same probes reach the kernel and get its own answers, so the
    # filtered results above are the filter's doing, not bwrap's or the uid's.
    outcomes = probe(None)
    assert outcomes["seccomp_mode"] == "0"
    assert outcomes["setns"] == "EBADF"
    assert outcomes["clone3"] not in {"ENOSYS", "EPERM"}
    assert outcomes["perf_event_open"] != "EPERM"
    assert outcomes["libc ptrace(PTRACE_TRACEME)"] == "ok"
    assert outcomes["personality(ADDR_NO_RANDOMIZE)"] == "ok"
    assert outcomes["threading.Thread"] == "ok"
    if Path("/dev/vsock").exists():  # a VM guest: vsock reaches the hypervisor host
        assert outcomes["socket(AF_VSOCK)"] == "ok"


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
def test_disable_userns_stops_new_user_namespaces_without_the_filter() -> None:
    """bubblewrap's --disable-userns (which the sandbox uses) is a second layer under the
    filter's unshare/clone rules: even unfiltered, no user namespace can be made inside."""
    assert probe(None)["libc unshare(CLONE_NEWUSER)"] == "ok"
    assert probe(None, ["--disable-userns"])["libc unshare(CLONE_NEWUSER)"] == "ENOSPC"


# As uid 0 of its own user namespace (still nobody on the host) with capabilities there and its
# own network namespace, the sandbox could mount, open packet sockets and create namespaces: only
# the filter stands in the way. (--uid 0 keeps bwrap from nesting a second user namespace that
# would not own the mount and network namespaces.)
WITH_CAPABILITIES = [
    "--unshare-net",
    "--uid", "0",
    "--gid", "0",
    "--cap-add", "CAP_SYS_ADMIN",
    "--cap-add", "CAP_NET_RAW",
]  # fmt: skip
NEEDS_ONLY_CAPABILITIES = [
    "libc mount tmpfs",
    "clone(CLONE_NEWNET)",
    "socket(AF_PACKET)",
    "socket(AF_INET, SOCK_RAW)",
    "socket(AF_INET6, SOCK_RAW)",
    "socket(AF_INET, SOCK_PACKET)",
]


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
def test_filter_holds_when_the_sandbox_has_capabilities(filter_fd: int) -> None:
    unfiltered = probe(None, WITH_CAPABILITIES)
    if any(unfiltered[name] != "ok" for name in NEEDS_ONLY_CAPABILITIES):
        pytest.skip(f"bwrap could not grant namespaced capabilities here: {unfiltered}")

    filtered = probe(filter_fd, WITH_CAPABILITIES)
    assert {name: filtered[name] for name in NEEDS_ONLY_CAPABILITIES} == dict.fromkeys(
        NEEDS_ONLY_CAPABILITIES, "EPERM"
    )
    assert filtered["tcp loopback"] == "ok"


KILL_CHILD = textwrap.dedent(
    """
    import ctypes, mmap, resource, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would otherwise dump core
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def x32_getpid():
        return libc.syscall(ctypes.c_long(0x40000000 | 39))

    def i386_getpid():
        # mov eax, 20 (getpid in the i386 table); int 0x80; ret
        code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code.write(b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3")
        address = ctypes.addressof(ctypes.c_char.from_buffer(code))
        return ctypes.CFUNCTYPE(ctypes.c_int)(address)()

    print("started", flush=True)
    result = {"x32": x32_getpid, "i386": i386_getpid}[sys.argv[1]]()
    print("survived", result, flush=True)
    """
)


@pytest.mark.unprivileged
@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("abi", ["x32", "i386"])
def test_sandbox_kills_foreign_abis(filter_fd: int, abi: str) -> None:
    unfiltered = run_sandboxed(KILL_CHILD, [abi])
    if "survived" not in unfiltered.stdout:
        pytest.skip(f"this kernel cannot run {abi} syscalls at all: {unfiltered.stderr}")

    filtered = run_sandboxed(KILL_CHILD, [abi], filter_fd)
    assert filtered.stdout.split() == ["started"], filtered.stderr
    # bwrap reports a child killed by a signal as 128 + signal.
    assert filtered.returncode == 128 + signal.SIGSYS, filtered.stderr
