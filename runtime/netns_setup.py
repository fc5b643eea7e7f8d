"""The sandbox's network namespace as outbound access needs it (not switched on yet): its own
address on loopback, a local default route, no IPv6, and an nftables table that hands every
TCP connection to one listener and lets no UDP but DNS and no ICMP out. Set by rtnetlink,
sysctl and nft from the process that owns the namespace, before the kernel starts
(docs/network-design.md).

With `local default dev lo src <address>` every destination is delivered on the machine, so a
connection to any address reaches whatever listens in the namespace for it and never leaves.
Nothing here needs a host privilege: the namespace's owner (root, or an unprivileged uid in its
own user namespace) has what it takes inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import struct

_NLMSG_ERROR = 2
_RTM_NEWADDR = 20
_RTM_NEWROUTE = 24
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_RTA_OIF = 4
_RTA_PREFSRC = 7
_RT_TABLE_LOCAL = 255
_RTPROT_BOOT = 3
_RT_SCOPE_HOST = 254
_RTN_LOCAL = 2

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def give_address(address: ipaddress.IPv4Address, *, route_everything: bool = True) -> None:
    """Put `address`/32 on loopback. With `route_everything` (outbound access), also route every
    IPv4 destination locally from it, for the egress's listener to take, and switch IPv6 off,
    so the namespace has one family, judged one way (a host booted without IPv6 has nothing to
    switch off). Without, every other destination stays unreachable, as before."""
    index = socket.if_nametoindex("lo")
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as rtnl:
        rtnl.bind((0, 0))
        packed = address.packed
        _request(
            rtnl,
            _RTM_NEWADDR,
            _IFADDRMSG.pack(socket.AF_INET, 32, 0, _RT_SCOPE_HOST, index)
            + _attribute(_IFA_LOCAL, packed)
            + _attribute(_IFA_ADDRESS, packed),
        )
        if not route_everything:
            return
        _add_local_default_route(rtnl, index, packed)
    for scope in ("all", "default", "lo"):
        path = f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"
        with contextlib.suppress(FileNotFoundError), open(path, "w") as f:
            f.write("1")


def _add_local_default_route(rtnl: socket.socket, index: int, source: bytes) -> None:
    _request(
        rtnl,
        _RTM_NEWROUTE,
        _RTMSG.pack(
            socket.AF_INET,
            0,
            0,
            0,
            _RT_TABLE_LOCAL,
            _RTPROT_BOOT,
            _RT_SCOPE_HOST,
            _RTN_LOCAL,
            0,
        )
        + _attribute(_RTA_OIF, struct.pack("=I", index))
        + _attribute(_RTA_PREFSRC, source),
    )


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _request(rtnl: socket.socket, kind: int, body: bytes) -> None:
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
    rtnl.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, 1, 0) + body)
    reply = rtnl.recv(4096)
    length, reply_kind, _, _, _ = _HEADER.unpack_from(reply)
    if reply_kind != _NLMSG_ERROR or length < _HEADER.size + 4:
        msg = f"rtnetlink answered message type {reply_kind} to {kind}"
        raise OSError(errno.EPROTO, msg)
    (error,) = struct.unpack_from("=i", reply, _HEADER.size)
    if error:
        raise OSError(-error, os.strerror(-error))


def interception_rules(own: ipaddress.IPv4Address, listener_port: int) -> str:
    """The namespace's nftables table. Every TCP connection, but to loopback and to the sandbox's
    own address (a notebook's own servers), goes to the transparent listener on
    127.0.0.1:`listener_port`, where `getsockname()` gives its original destination; UDP leaves
    only to or from port 53 (the stub), and no ICMP at all. Dropped sends fail at once (EPERM).
    Each condition is a rule of its own: nft 1.0.6 merges two adjacent `!=` matches wrongly."""
    return f"""table inet hopx {{
    chain intercept {{
        type filter hook prerouting priority mangle; policy accept;
        ip daddr 127.0.0.0/8 accept
        ip daddr {own} accept
        meta l4proto tcp tproxy ip to 127.0.0.1:{listener_port}
    }}
    chain leave {{
        type filter hook output priority filter; policy accept;
        meta nfproto ipv6 drop
        meta l4proto {{ icmp, icmpv6 }} drop
        udp dport 53 accept
        udp sport 53 accept
        meta l4proto udp drop
    }}
}}
"""


def intercept(own: ipaddress.IPv4Address, listener_port: int) -> None:
    """Load `interception_rules` into the namespace this process is in, through libnftables in
    this process: an unprivileged owner's capabilities in its namespace do not survive an
    exec of `nft`."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
    except OSError as e:
        msg = f"Install nftables (libnftables): the sandbox's rules cannot be loaded ({e})"
        raise OSError(errno.ENOENT, msg) from e
    library.nft_ctx_new.restype = ctypes.c_void_p
    library.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    library.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    library.nft_ctx_free.argtypes = [ctypes.c_void_p]
    context = library.nft_ctx_new(0)
    try:
        library.nft_ctx_buffer_error(context)
        rules = interception_rules(own, listener_port).encode()
        if library.nft_run_cmd_from_buffer(context, rules) != 0:
            error = (library.nft_ctx_get_error_buffer(context) or b"").decode(errors="replace")
            msg = f"nftables could not load the sandbox's rules: {error.strip()}"
            raise OSError(errno.EPERM, msg)
    finally:
        library.nft_ctx_free(context)
