"""The sandbox's seccomp filter, built as a classic-BPF program for ``bwrap --seccomp FD``.

bubblewrap does not take a policy, only a compiled program: it reads raw ``struct sock_filter``
entries from the descriptor until EOF and installs them just before it execs the kernel. We
assemble that program here in pure Python so the runtime needs neither libseccomp nor a C
toolchain, and so the whole policy is a few tables that can be read and tested.

The policy is a deny-list in the spirit of Flatpak's and Docker's default profiles: everything
is allowed except syscalls that reach kernel attack surface a notebook has no use for (mounting,
namespaces, tracing, keyrings, BPF, modules, io_uring, clock and swap administration, ...).
Denied syscalls fail with EPERM, the error an unprivileged process gets anyway, so software
degrades gracefully. Three fail with ENOSYS instead so that libc falls back to an older
interface we can inspect: ``clone3`` (its flags live in a struct BPF cannot read, glibc retries
with ``clone``), ``openat2`` (likewise its mode) and the new mount API (callers fall back to
``mount``, which is EPERM). No syscall may give a file setuid or setgid bits.

Program shape: check ``seccomp_data.arch`` (anything else, e.g. i386 ``int 0x80`` or x32 on an
x86_64 host, kills the process), load the syscall number, then one short block per rule
(``JEQ nr`` skips over it) and a final ``RET ALLOW``. Every jump stays inside its own block, so
offsets never approach the 255 limit of ``jt``/``jf``. Arguments are only loaded inside the
block of the syscall that owns them, which lets the kernel's action cache (Linux 5.11+) prove
every other syscall ALLOW and skip running the filter for it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = ["SeccompError", "UnsupportedArchitecture", "build_filter"]


class SeccompError(Exception):
    """The seccomp program could not be built."""


class UnsupportedArchitecture(SeccompError):
    """There is no syscall table for this machine."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        supported = ", ".join(sorted(_ARCHES))
        super().__init__(
            f"no seccomp syscall table for architecture {machine!r} (supported: {supported})"
        )


# --- classic BPF encoding (linux/filter.h, linux/bpf_common.h) --------------------------------

BPF_LD: Final = 0x00
BPF_ALU: Final = 0x04
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_W: Final = 0x00
BPF_ABS: Final = 0x20
BPF_K: Final = 0x00
BPF_AND: Final = 0x50
BPF_JEQ: Final = 0x10
BPF_JGE: Final = 0x30
BPF_JSET: Final = 0x40

SOCK_FILTER: Final = struct.Struct("<HBBI")  # struct sock_filter {u16 code; u8 jt, jf; u32 k}
MAX_JUMP: Final = 0xFF

# --- seccomp ABI (linux/seccomp.h) -------------------------------------------------------------

SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_ERRNO: Final = 0x00050000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_RET_DATA: Final = 0x0000FFFF

# struct seccomp_data {int nr; u32 arch; u64 instruction_pointer; u64 args[6];}
OFFSET_NR: Final = 0
OFFSET_ARCH: Final = 4
OFFSET_ARGS: Final = 16

# Errno values are Linux's (the same on x86_64 and aarch64), not the building host's.
EPERM: Final = 1
ENOSYS: Final = 38
EAFNOSUPPORT: Final = 97

AUDIT_ARCH_X86_64: Final = 0xC000003E
AUDIT_ARCH_AARCH64: Final = 0xC00000B7
# x32-ABI syscalls arrive on x86_64 with AUDIT_ARCH_X86_64 and this bit set in nr.
X32_SYSCALL_BIT: Final = 0x40000000
# nr == -1 is not x32: it is how a tracer skips a syscall; let it through like libseccomp does.
NR_SKIPPED: Final = 0xFFFFFFFF

# --- argument values the policy looks at ---------------------------------------------------------

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000
CLONE_NAMESPACE_FLAGS: Final = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

TIOCSTI: Final = 0x5412  # pushes input into a terminal: escapes to whatever reads it
TIOCLINUX: Final = 0x541C  # console selection/paste can do the same on a VT

AF_UNIX: Final = 1
AF_INET: Final = 2
AF_INET6: Final = 10
AF_NETLINK: Final = 16
AF_PACKET: Final = 17
SOCK_RAW: Final = 3
SOCK_PACKET: Final = 10  # obsolete: the kernel turns (AF_INET, SOCK_PACKET) into AF_PACKET
SOCK_TYPE_MASK: Final = 0xF  # the rest of `type` is SOCK_NONBLOCK / SOCK_CLOEXEC
# Netlink protocols a kernel's libraries use: ROUTE (glibc's getaddrinfo and getifaddrs) and
# SOCK_DIAG (ss, which sees only the sandbox's own sockets). Others carry host device events
# (KOBJECT_UEVENT) or let processes message each other through unaccounted buffers (USERSOCK).
NETLINK_ROUTE: Final = 0
NETLINK_SOCK_DIAG: Final = 4
EPROTONOSUPPORT: Final = 93

# A file with these bits (or capabilities, which need privileges the sandbox lacks) runs with
# its owner's rights for whoever starts it: through a read-write workspace, a host user's.
S_ISUID: Final = 0o4000
S_ISGID: Final = 0o2000
PRIVILEGE_BITS: Final = S_ISUID | S_ISGID
# open and openat look at their mode only when they create a file.
O_CREAT: Final = 0o100
O_TMPFILE_BIT: Final = 0o20000000  # __O_TMPFILE, the same on x86_64 and aarch64

PER_LINUX: Final = 0x0000
PER_LINUX32: Final = 0x0008
PERSONALITY_QUERY: Final = 0xFFFFFFFF
ALLOWED_PERSONALITIES: Final = (PER_LINUX, PER_LINUX32, PERSONALITY_QUERY)

# --- policy -------------------------------------------------------------------------------------


def errno_action(errno: int) -> int:
    """The seccomp return value that fails a syscall with `errno`."""
    return SECCOMP_RET_ERRNO | (errno & SECCOMP_RET_DATA)


DENY: Final = errno_action(EPERM)
NOT_IMPLEMENTED: Final = errno_action(ENOSYS)

# Syscall name -> action, whatever the arguments. Names missing on an architecture are skipped.
DENIED_SYSCALLS: Final[Mapping[str, int]] = {
    # mounts and namespaces: the sandbox's layout is fixed by bwrap before exec
    "mount": DENY,
    "umount2": DENY,
    "pivot_root": DENY,
    "chroot": DENY,
    "unshare": DENY,
    "setns": DENY,
    # the new mount API: ENOSYS makes callers fall back to mount(2), which is denied
    "fsopen": NOT_IMPLEMENTED,
    "fsconfig": NOT_IMPLEMENTED,
    "fsmount": NOT_IMPLEMENTED,
    "fspick": NOT_IMPLEMENTED,
    "open_tree": NOT_IMPLEMENTED,
    "move_mount": NOT_IMPLEMENTED,
    "mount_setattr": NOT_IMPLEMENTED,
    "open_tree_attr": NOT_IMPLEMENTED,
    # clone3 passes its flags in memory BPF cannot read; glibc retries with clone on ENOSYS
    "clone3": NOT_IMPLEMENTED,
    # openat2's mode is in memory too; libc's open uses openat, whose mode the filter reads
    "openat2": NOT_IMPLEMENTED,
    # reading or comparing other processes
    "ptrace": DENY,
    "process_vm_readv": DENY,
    "process_vm_writev": DENY,
    "kcmp": DENY,
    "pidfd_getfd": DENY,  # takes a copy of another process's file descriptor
    "process_madvise": DENY,
    # memory hidden even from the kernel's direct map: pinned, unswappable, and unaccounted on
    # older kernels
    "memfd_secret": DENY,
    # kernel attack surface with a long CVE history
    "bpf": DENY,
    "perf_event_open": DENY,
    "userfaultfd": DENY,
    "io_uring_setup": DENY,
    "io_uring_enter": DENY,
    "io_uring_register": DENY,
    # keyrings are not namespaced
    "keyctl": DENY,
    "add_key": DENY,
    "request_key": DENY,
    # modules, kexec, reboot, swap, accounting, quotas, kernel log
    "init_module": DENY,
    "finit_module": DENY,
    "delete_module": DENY,
    "kexec_load": DENY,
    "kexec_file_load": DENY,
    "reboot": DENY,
    "swapon": DENY,
    "swapoff": DENY,
    "acct": DENY,
    "quotactl": DENY,
    "quotactl_fd": DENY,
    "syslog": DENY,
    # file handles bypass path-based confinement (the "shocker" escape)
    "open_by_handle_at": DENY,
    "name_to_handle_at": DENY,
    # the system clock is shared with the host
    "settimeofday": DENY,
    "clock_settime": DENY,
    "clock_adjtime": DENY,
    "adjtimex": DENY,
    # obsolete or hardware-level interfaces
    "lookup_dcookie": DENY,
    "nfsservctl": DENY,
    "uselib": DENY,
    "iopl": DENY,
    "ioperm": DENY,
    "modify_ldt": DENY,
    "fanotify_init": DENY,
    "vhangup": DENY,
    # NUMA placement: migrate_pages and move_pages reach other processes' memory; the rest go
    # too, as in Flatpak, so libnuma sees no NUMA at all rather than half of it
    "mbind": DENY,
    "set_mempolicy": DENY,
    "get_mempolicy": DENY,
    "set_mempolicy_home_node": DENY,
    "migrate_pages": DENY,
    "move_pages": DENY,
}


# --- assembler: one helper per instruction kind, symbolic jump targets -----------------------


@dataclass(frozen=True)
class Instruction:
    """One `struct sock_filter`."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k)


@dataclass(frozen=True)
class _Jump:
    """A conditional jump whose targets are label names; None means the next instruction."""

    op: int
    k: int
    jt: str | None
    jf: str | None


@dataclass(frozen=True)
class _Label:
    name: str


_Item: TypeAlias = Instruction | _Jump | _Label


def load(offset: int) -> Instruction:
    """A = the 32-bit word at `offset` in seccomp_data."""
    return Instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset)


def load_arg(index: int) -> Instruction:
    """A = low 32 bits of args[index] (both supported ABIs are little endian)."""
    return load(OFFSET_ARGS + 8 * index)


def and_(mask: int) -> Instruction:
    return Instruction(BPF_ALU | BPF_AND | BPF_K, 0, 0, mask)


def ret(action: int) -> Instruction:
    return Instruction(BPF_RET | BPF_K, 0, 0, action)


def jeq(k: int, jt: str | None = None, jf: str | None = None) -> _Jump:
    return _Jump(BPF_JEQ, k, jt, jf)


def jge(k: int, jt: str | None = None, jf: str | None = None) -> _Jump:
    return _Jump(BPF_JGE, k, jt, jf)


def jset(k: int, jt: str | None = None, jf: str | None = None) -> _Jump:
    return _Jump(BPF_JSET, k, jt, jf)


def label(name: str) -> _Label:
    return _Label(name)


def _assemble(items: Sequence[_Item]) -> list[Instruction]:
    """Resolve labels into forward jump offsets (cBPF cannot jump backwards)."""
    positions: dict[str, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, _Label):
            if item.name in positions:
                msg = f"duplicate label {item.name!r}"
                raise SeccompError(msg)
            positions[item.name] = pc
        else:
            pc += 1

    def offset(source: int, target: str | None) -> int:
        if target is None:
            return 0
        if target not in positions:
            msg = f"jump to unknown label {target!r}"
            raise SeccompError(msg)
        distance = positions[target] - source - 1
        if not 0 <= distance <= MAX_JUMP:
            msg = f"jump to {target!r} spans {distance} instructions"
            raise SeccompError(msg)
        return distance

    program: list[Instruction] = []
    for item in items:
        if isinstance(item, _Jump):
            pc = len(program)
            code = BPF_JMP | item.op | BPF_K
            program.append(Instruction(code, offset(pc, item.jt), offset(pc, item.jf), item.k))
        elif isinstance(item, Instruction):
            program.append(item)
    return program


# --- rules that look at arguments ------------------------------------------------------------
# Each block starts with A = nr and ends in RET on every path, so it never leaks into the next.


def _clone_rule(done: str) -> list[_Item]:
    # Only the low 32 bits of the flags matter: the kernel truncates them (lower_32_bits).
    return [
        load_arg(0),
        jset(CLONE_NAMESPACE_FLAGS, jf=done),
        ret(DENY),
        label(done),
        ret(SECCOMP_RET_ALLOW),
    ]


def _ioctl_rule(done: str) -> list[_Item]:
    # The request is an unsigned int in the kernel, so high bits cannot smuggle TIOCSTI past us.
    deny = f"{done}.deny"
    return [
        load_arg(1),
        jeq(TIOCSTI, jt=deny),
        jeq(TIOCLINUX, jt=deny, jf=done),
        label(deny),
        ret(DENY),
        label(done),
        ret(SECCOMP_RET_ALLOW),
    ]


def _socket_rule(done: str) -> list[_Item]:
    # Only the families a kernel uses: unix, IP and netlink, and of netlink only ROUTE and
    # SOCK_DIAG. Any other family (vsock, which ignores network namespaces; AF_ALG; families
    # a distribution kernel loads on demand) fails as a family the kernel lacks, as in Flatpak.
    # Packet and raw IP sockets see or forge other traffic: EPERM, as without CAP_NET_RAW.
    deny, unsupported, check_type = f"{done}.deny", f"{done}.unsupported", f"{done}.type"
    netlink, no_protocol = f"{done}.netlink", f"{done}.no_protocol"
    return [
        load_arg(0),
        jeq(AF_UNIX, jt=done),
        jeq(AF_NETLINK, jt=netlink),
        jeq(AF_PACKET, jt=deny),
        jeq(AF_INET, jt=check_type),
        jeq(AF_INET6, jt=check_type, jf=unsupported),
        label(check_type),
        load_arg(1),
        and_(SOCK_TYPE_MASK),
        jeq(SOCK_RAW, jt=deny),
        jeq(SOCK_PACKET, jt=deny, jf=done),
        label(netlink),
        load_arg(2),
        jeq(NETLINK_ROUTE, jt=done),
        jeq(NETLINK_SOCK_DIAG, jt=done, jf=no_protocol),
        label(deny),
        ret(DENY),
        label(unsupported),
        ret(errno_action(EAFNOSUPPORT)),
        label(no_protocol),
        ret(errno_action(EPROTONOSUPPORT)),
        label(done),
        ret(SECCOMP_RET_ALLOW),
    ]


def _mode_rule(mode_arg: int) -> Callable[[str], list[_Item]]:
    """chmod, mknod and their kin: no setuid or setgid bit, on any file."""

    def rule(done: str) -> list[_Item]:
        return [
            load_arg(mode_arg),
            jset(PRIVILEGE_BITS, jf=done),
            ret(DENY),
            label(done),
            ret(SECCOMP_RET_ALLOW),
        ]

    return rule


def _open_rule(flags_arg: int) -> Callable[[str], list[_Item]]:
    """open and openat: a file they create gets no setuid or setgid bit. Without O_CREAT or
    O_TMPFILE the mode is ignored, and so is whatever a caller passes there."""

    def rule(done: str) -> list[_Item]:
        return [
            load_arg(flags_arg),
            jset(O_CREAT | O_TMPFILE_BIT, jf=done),
            *_mode_rule(flags_arg + 1)(done),
        ]

    return rule


def _personality_rule(done: str) -> list[_Item]:
    # Querying is harmless and PER_LINUX32 is how 32-bit tools set themselves up; flags such as
    # ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC weaken exploit mitigations.
    items: list[_Item] = [load_arg(0)]
    items += [jeq(persona, jt=done) for persona in ALLOWED_PERSONALITIES]
    items += [ret(DENY), label(done), ret(SECCOMP_RET_ALLOW)]
    return items


ARGUMENT_RULES: Final[Mapping[str, Callable[[str], list[_Item]]]] = {
    "clone": _clone_rule,
    "ioctl": _ioctl_rule,
    "socket": _socket_rule,
    "personality": _personality_rule,
    "chmod": _mode_rule(1),
    "fchmod": _mode_rule(1),
    "fchmodat": _mode_rule(2),
    "fchmodat2": _mode_rule(2),
    "creat": _mode_rule(1),
    "mknod": _mode_rule(1),
    "mknodat": _mode_rule(2),
    "open": _open_rule(1),
    "openat": _open_rule(2),
}


# --- per-architecture syscall numbers ------------------------------------------------------------
# Only the syscalls the policy names; None marks one the architecture does not have.

X86_64_SYSCALLS: Final[Mapping[str, int | None]] = {  # asm/unistd_64.h
    "open": 2,
    "ioctl": 16,
    "socket": 41,
    "clone": 56,
    "ptrace": 101,
    "syslog": 103,
    "creat": 85,
    "chmod": 90,
    "fchmod": 91,
    "mknod": 133,
    "uselib": 134,
    "personality": 135,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "mbind": 237,
    "set_mempolicy": 238,
    "get_mempolicy": 239,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "migrate_pages": 256,
    "openat": 257,
    "mknodat": 259,
    "fchmodat": 268,
    "unshare": 272,
    "move_pages": 279,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "openat2": 437,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "memfd_secret": 447,
    "set_mempolicy_home_node": 450,
    "fchmodat2": 452,
    "open_tree_attr": 467,
}

AARCH64_SYSCALLS: Final[Mapping[str, int | None]] = {  # asm-generic/unistd.h
    "lookup_dcookie": 18,
    "ioctl": 29,
    "mknodat": 33,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "nfsservctl": 42,
    "chroot": 51,
    "fchmod": 52,
    "fchmodat": 53,
    "openat": 56,
    "vhangup": 58,
    "quotactl": 60,
    "acct": 89,
    "personality": 92,
    "unshare": 97,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "ptrace": 117,
    "reboot": 142,
    "settimeofday": 170,
    "adjtimex": 171,
    "socket": 198,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,  # clone(flags, stack, parent_tid, tls, child_tid): flags is still arg 0
    "swapon": 224,
    "swapoff": 225,
    "mbind": 235,
    "get_mempolicy": 236,
    "set_mempolicy": 237,
    "migrate_pages": 238,
    "move_pages": 239,
    "perf_event_open": 241,
    "fanotify_init": 262,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "bpf": 280,
    "userfaultfd": 282,
    "kexec_file_load": 294,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "openat2": 437,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "memfd_secret": 447,
    "set_mempolicy_home_node": 450,
    "fchmodat2": 452,
    "open_tree_attr": 467,
    # x86-only (aarch64 has only the *at forms)
    "open": None,
    "creat": None,
    "chmod": None,
    "mknod": None,
    "uselib": None,
    "iopl": None,
    "ioperm": None,
    "modify_ldt": None,
}


@dataclass(frozen=True)
class _Arch:
    audit_arch: int
    syscalls: Mapping[str, int | None]
    has_x32: bool


_ARCHES: Final[Mapping[str, _Arch]] = {
    "x86_64": _Arch(AUDIT_ARCH_X86_64, X86_64_SYSCALLS, has_x32=True),
    "aarch64": _Arch(AUDIT_ARCH_AARCH64, AARCH64_SYSCALLS, has_x32=False),
}
_ALIASES: Final[Mapping[str, str]] = {"amd64": "x86_64", "arm64": "aarch64"}


def _program(arch: _Arch) -> list[_Item]:
    # A foreign arch also guards the little-endian argument offsets: big-endian aarch64 has a
    # different AUDIT_ARCH value and is killed here.
    items: list[_Item] = [
        load(OFFSET_ARCH),
        jeq(arch.audit_arch, jt="native_arch"),
        ret(SECCOMP_RET_KILL_PROCESS),
        label("native_arch"),
        load(OFFSET_NR),
    ]
    if arch.has_x32:
        items += [
            jge(X32_SYSCALL_BIT, jf="native_abi"),
            jeq(NR_SKIPPED, jt="native_abi"),
            ret(SECCOMP_RET_KILL_PROCESS),
            label("native_abi"),
        ]
    for name, rule in ARGUMENT_RULES.items():
        nr = _number(arch, name)
        if nr is not None:
            items += [jeq(nr, jf=f"{name}.next"), *rule(f"{name}.done"), label(f"{name}.next")]
    for name, action in DENIED_SYSCALLS.items():
        nr = _number(arch, name)
        if nr is not None:
            items += [jeq(nr, jf=f"{name}.next"), ret(action), label(f"{name}.next")]
    items.append(ret(SECCOMP_RET_ALLOW))
    return items


def _number(arch: _Arch, name: str) -> int | None:
    try:
        return arch.syscalls[name]
    except KeyError:
        # A policy name missing from a table is a bug, not a syscall to silently allow.
        msg = f"no syscall number for {name!r}"
        raise SeccompError(msg) from None


def build_filter(machine: str | None = None) -> bytes:
    """The sandbox's seccomp program for `bwrap --seccomp`, for this host's architecture
    (this machine's when None)."""
    name = os.uname().machine if machine is None else machine
    arch = _ARCHES.get(_ALIASES.get(name, name))
    if arch is None:
        raise UnsupportedArchitecture(name)
    return b"".join(instruction.pack() for instruction in _assemble(_program(arch)))
