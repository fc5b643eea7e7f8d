"""The DNS a sandbox sees: its queries read, and answers built, as pure functions.

A sandbox never learns a real address. For a name the policy lets it reach, it gets a stand-in
address from a block no network routes (`NameMap`); a connection to that address is then known
to be for that name, and the host side resolves the name itself and connects there. For any
other name it gets NXDOMAIN at once, so a refused lookup fails fast and says so.

Every packet is hostile: exactly one question, no compression in it, bounded names, and
anything else is answered FORMERR or NOTIMP (or, when not even the header parses, dropped).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from runtime.network_policy import is_host_name, normalise_name

# Stand-in addresses come from the benchmarking block (RFC 2544), which no network routes.
DEFAULT_STAND_IN_NETWORK: Final = ipaddress.IPv4Network("198.18.0.0/15")
# A sandbox holds at most this many names at once; the least recently used one goes first.
MAX_NAMES: Final = 4096
# Short, so a name that stops being allowed (a new policy on restart) is not cached for long.
TTL_SECONDS: Final = 30

TYPE_A: Final = 1
TYPE_AAAA: Final = 28
CLASS_IN: Final = 1

NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5

_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_OPCODE = 0x7800
_RD = 0x0100
_RA = 0x0080


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # normalised, without the trailing dot
    qtype: int
    qclass: int
    question: bytes  # as it came, to echo in the answer


class BadQuery(ValueError):
    """A packet that is a DNS query of a kind the stub does not answer."""

    def __init__(self, message: str, packet_id: int, rcode: int) -> None:
        super().__init__(message)
        self.id = packet_id
        self.rcode = rcode


def parse_query(packet: bytes) -> Query:
    """The one question of `packet`; raises BadQuery (with the code to answer) or ValueError
    (not even a header: drop it)."""
    if len(packet) < _HEADER.size:
        msg = "shorter than a DNS header"
        raise ValueError(msg)
    packet_id, flags, questions, answers, authorities, additional = _HEADER.unpack_from(packet)
    if flags & _QR:
        msg = "a response, not a query"
        raise ValueError(msg)
    if flags & _OPCODE:
        msg = "not a standard query"
        raise BadQuery(msg, packet_id, NOTIMP)
    if questions != 1 or answers or authorities or additional > 1:
        msg = "not exactly one question"
        raise BadQuery(msg, packet_id, FORMERR)
    at = _HEADER.size
    labels = []
    while True:
        if at >= len(packet):
            msg = "a name running past the packet"
            raise BadQuery(msg, packet_id, FORMERR)
        length = packet[at]
        at += 1
        if length == 0:
            break
        if length > 63:  # a compression pointer, or reserved label types
            msg = "a compressed or extended label"
            raise BadQuery(msg, packet_id, FORMERR)
        labels.append(packet[at : at + length])
        at += length
    if at + 4 > len(packet) or at - _HEADER.size > 255:
        msg = "a name too long, or no type and class"
        raise BadQuery(msg, packet_id, FORMERR)
    qtype, qclass = struct.unpack_from("!HH", packet, at)
    try:
        name = normalise_name(b".".join(labels).decode("ascii"))
    except UnicodeError:
        name = ""
    if not is_host_name(name) or len(labels) != name.count(".") + 1:
        msg = "a name that is not a host name"
        raise BadQuery(msg, packet_id, FORMERR)
    question = packet[_HEADER.size : at + 4]
    return Query(packet_id, flags, name, qtype, qclass, question)


def response(query: Query, rcode: int, addresses: tuple[ipaddress.IPv4Address, ...] = ()) -> bytes:
    """The answer to `query`: `rcode`, with an A record for each address (only for an A
    question; any other question gets none, which says the name has no such record)."""
    records = addresses if query.qtype == TYPE_A and rcode == NOERROR else ()
    flags = _QR | (query.flags & _RD) | _RA | rcode
    header = _HEADER.pack(query.id, flags, 1, len(records), 0, 0)
    answers = b"".join(
        # The name as a pointer to the question's (offset 12), class IN, TTL, 4 bytes of data.
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL_SECONDS, 4) + address.packed
        for address in records
    )
    return header + query.question + answers


def error_response(error: BadQuery) -> bytes:
    """What a bad query gets: its id and code, no question echoed."""
    return _HEADER.pack(error.id, _QR | _RA | error.rcode, 0, 0, 0, 0)


class NameMap:
    """One sandbox's names and their stand-in addresses, both ways, at most `limit` of them.

    The same name keeps its address while it is held, so a client that resolved once and
    connects later still reaches it; past the limit, the name used least recently goes, and a
    connection to its old address is no longer known to be for it. Addresses are handed out
    round the whole block, so one comes back to another name only after all the others."""

    def __init__(
        self, network: ipaddress.IPv4Network = DEFAULT_STAND_IN_NETWORK, limit: int = MAX_NAMES
    ) -> None:
        if limit * 2 > network.num_addresses - 2:
            msg = f"{network} holds fewer than twice {limit} addresses"
            raise ValueError(msg)
        self._network = network
        self._limit = limit
        self._by_name: OrderedDict[str, ipaddress.IPv4Address] = OrderedDict()
        self._by_address: dict[ipaddress.IPv4Address, str] = {}
        self._next = 1  # host offset in the network; 0 is its network address

    def __len__(self) -> int:
        return len(self._by_name)

    def address_for(self, name: str) -> ipaddress.IPv4Address:
        """The stand-in address of `name`, given one now if it has none."""
        address = self._by_name.get(name)
        if address is not None:
            self._by_name.move_to_end(name)
            return address
        if len(self._by_name) >= self._limit:
            _, evicted = self._by_name.popitem(last=False)
            del self._by_address[evicted]
        # Onwards round the whole block, not the address just freed: a client may still hold
        # an evicted name's address for its TTL, and must not reach another name through it.
        while True:
            address = self._network[self._next]
            self._next = self._next % (self._network.num_addresses - 2) + 1
            if address not in self._by_address:
                break
        self._by_name[name] = address
        self._by_address[address] = name
        return address

    def name_for(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The name `address` stands in for, if it is one of this map's."""
        if isinstance(address, ipaddress.IPv6Address):
            return None
        name = self._by_address.get(address)
        if name is not None:
            self._by_name.move_to_end(name)
        return name

    def holds(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether `address` lies in the stand-in block (held by a name now or not)."""
        return isinstance(address, ipaddress.IPv4Address) and address in self._network
