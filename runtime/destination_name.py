"""The host name a connection's first bytes ask for: the server name of a TLS ClientHello
(SNI) or the Host of an HTTP request.

A sandbox's outbound connection is matched against the policy by name, and the name comes from
what the sandbox itself sends first. Every byte of it is hostile: lengths are checked against
what arrived and against fixed bounds, and anything that does not parse as exactly one name is
`Malformed`, never guessed at. Pure functions, no I/O: the caller reads until the answer is not
`NEED_MORE` (or its own bound is reached) and decides.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal

from runtime.network_policy import is_host_name, normalise_name

# A connection must have named its destination within this many bytes (a ClientHello in one
# full TLS record, or an HTTP request line and headers); a caller still told NEED_MORE by then
# refuses it.
MAX_FIRST_BYTES: Final = 16 * 1024

Protocol = Literal["tls", "http", "tcp"]


@dataclass(frozen=True)
class Named:
    """What the connection speaks, and the name it asks for (None: TLS without SNI, or an
    HTTP Host that is an address literal; the policy then decides by address)."""

    protocol: Protocol
    name: str | None


@dataclass(frozen=True)
class Malformed:
    """Bytes that claim to be TLS or HTTP but cannot be read as one request for one name."""

    protocol: Protocol
    reason: str


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = _NeedMore()

Answer = Named | Malformed | _NeedMore

_TLS_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_HOST_NAME = 0x00
_HTTP_METHOD = re.compile(rb"[A-Z]{1,16} ")


def destination_name(first: bytes) -> Answer:
    """What `first`, the bytes a connection sent so far, ask for."""
    if not first:
        return NEED_MORE
    if first[0] == _TLS_HANDSHAKE:
        protocol: Protocol = "tls"
    elif _HTTP_METHOD.match(first[:17]) or (
        len(first) < 17 and first.isalpha() and first.isupper()
    ):
        protocol = "http"
    else:
        return Named("tcp", None)
    try:
        return _tls(first) if protocol == "tls" else _http(first)
    except _Bad as e:
        return Malformed(protocol, str(e))


class _Bad(Exception):
    """Bytes that do not parse; the message says what was wrong."""


class _Short(_Bad):
    """A length reaching past the bytes that hold it."""

    def __init__(self) -> None:
        super().__init__("lengths that do not add up")


# --- TLS -----------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def take(self, size: int) -> bytes:
        if size > self.left:
            raise _Short
        part = self._data[self._at : self._at + size]
        self._at += size
        return part

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def take_all(self) -> bytes:
        return self.take(self.left)


def _tls(first: bytes) -> Named | _NeedMore:
    """The SNI of the ClientHello in `first`, which may span several handshake records."""
    handshake = bytearray()
    records = _Reader(first)
    while records.left >= 5:
        content_type, _version, length = records.number(1), records.number(2), records.number(2)
        if content_type != _TLS_HANDSHAKE:
            msg = "a record other than a handshake one before the ClientHello ended"
            raise _Bad(msg)
        if not 0 < length <= 16 * 1024:
            msg = f"a handshake record of {length} bytes"
            raise _Bad(msg)
        if length > records.left:
            return NEED_MORE
        handshake += records.take(length)
        if len(handshake) < 4:
            continue
        if handshake[0] != _CLIENT_HELLO:
            msg = "the handshake does not start with a ClientHello"
            raise _Bad(msg)
        size = int.from_bytes(handshake[1:4], "big")
        if size + 4 + 5 > MAX_FIRST_BYTES:
            msg = f"a ClientHello of {size} bytes"
            raise _Bad(msg)
        if len(handshake) >= size + 4:
            return Named("tls", _client_hello_name(_Reader(bytes(handshake[4 : size + 4]))))
    return NEED_MORE


def _client_hello_name(hello: _Reader) -> str | None:
    """The one host name in a whole ClientHello's server_name extension, if it has one."""
    hello.take(2 + 32)  # legacy version, random
    if len(hello.vector(1).take_all()) > 32:
        msg = "a session id longer than 32 bytes"
        raise _Bad(msg)
    suites = hello.vector(2)
    if suites.left == 0 or suites.left % 2:
        msg = "no cipher suites, or half of one"
        raise _Bad(msg)
    hello.vector(1)  # compression methods
    if hello.left == 0:
        return None  # no extensions at all
    extensions = hello.vector(2)
    if hello.left:
        msg = "bytes after the extensions"
        raise _Bad(msg)
    names: list[str] = []
    seen: set[int] = set()
    while extensions.left:
        kind, body = extensions.number(2), extensions.vector(2)
        if kind in seen:
            msg = f"extension {kind} twice"
            raise _Bad(msg)
        seen.add(kind)
        if kind == _SERVER_NAME:
            names += _server_names(body)
    if len(names) > 1:
        msg = "more than one server name"
        raise _Bad(msg)
    return names[0] if names else None


def _server_names(body: _Reader) -> list[str]:
    entries = body.vector(2)
    if body.left:
        msg = "bytes after the server name list"
        raise _Bad(msg)
    names = []
    while entries.left:
        kind, name = entries.number(1), entries.vector(2).take_all()
        if kind == _HOST_NAME:
            names.append(_checked_name(name, "a server name"))
    return names


def _checked_name(raw: bytes | str, what: str) -> str:
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        name = normalise_name(text)
    except UnicodeError:
        msg = f"{what} that is not ASCII"
        raise _Bad(msg) from None
    if not is_host_name(name):
        msg = f"{what} that is not a host name"
        raise _Bad(msg)
    return name


# --- HTTP ----------------------------------------------------------------------------------------

_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,8000}) HTTP/1\.[01]")
_ABSOLUTE = re.compile(r"^[a-z][a-z0-9+.-]*://([^/?#]*)", re.IGNORECASE)


def _http(first: bytes) -> Named | _NeedMore:
    """The Host of an HTTP/1 request: its one Host header's, which an absolute-form target (or
    CONNECT's) must agree with. A first line that ends without naming any HTTP version is
    another line-based protocol (SMTP's `EHLO name`), not HTTP."""
    line_end = first.find(b"\r\n")
    if line_end >= 0 and not _REQUEST_LINE.fullmatch(first[:line_end]):
        if b" HTTP/" not in first[:line_end]:
            return Named("tcp", None)
        msg = "a request line that is not HTTP/1"
        raise _Bad(msg)
    end = first.find(b"\r\n\r\n")
    if end < 0:
        if len(first) >= MAX_FIRST_BYTES:
            msg = f"no end of the request head within {MAX_FIRST_BYTES} bytes"
            raise _Bad(msg)
        return NEED_MORE
    lines = first[:end].split(b"\r\n")
    request = _REQUEST_LINE.fullmatch(lines[0])
    assert request is not None  # checked above
    hosts = []
    for line in lines[1:]:
        field, colon, value = line.partition(b":")
        if not colon or not field or field != field.strip():
            msg = "a header line without a name"
            raise _Bad(msg)
        if field.lower() == b"host":
            hosts.append(value.strip())
    if len(hosts) != 1:
        msg = f"{len(hosts)} Host headers"
        raise _Bad(msg)
    host = _authority_name(hosts[0])
    method, target = request[1], request[2].decode("latin-1")
    absolute = _ABSOLUTE.match(target)
    if method == b"CONNECT":
        authority: bytes | None = target.encode("latin-1")
    else:
        authority = absolute[1].encode("latin-1") if absolute else None
    if authority is not None and _authority_name(authority) != host:
        msg = "a request for one host with a Host header naming another"
        raise _Bad(msg)
    return Named("http", host)


def _authority_name(authority: bytes) -> str | None:
    """The host name in `host[:port]`, None for an address literal."""
    text = authority.decode("latin-1")
    if text.startswith("["):
        literal, bracket, port = text[1:].partition("]")
        port_ok = not port or (port[0] == ":" and _is_port(port[1:]))
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            port_ok = False
        if not (bracket and port_ok):
            msg = "a Host that is not host[:port]"
            raise _Bad(msg)
        return None
    host, _, port = text.partition(":")
    if port and not _is_port(port):
        msg = "a Host that is not host[:port]"
        raise _Bad(msg)
    name = _checked_name(host.encode("latin-1"), "a Host")
    return None if name.replace(".", "").isdigit() else name


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) <= 65535
