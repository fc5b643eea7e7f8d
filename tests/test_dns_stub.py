"""The sandbox's DNS (runtime.dns_stub): queries from glibc's own resolver in a network
namespace the test makes, hand-built hostile packets, and the name map's bounds."""

from __future__ import annotations

import ipaddress
import json
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.dns_stub import (
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    BadQuery,
    NameMap,
    error_response,
    parse_query,
    response,
)

PROJECT = Path(__file__).resolve().parent.parent

# Runs in a new mount and network namespace: loopback up, a resolv.conf naming 127.0.0.1 bound
# over the real one, the stub answering on 127.0.0.1:53 (pypi.org and *.pythonhosted.org get
# stand-in addresses, everything else NXDOMAIN), and glibc's getaddrinfo asking.
GLIBC_CLIENT = """
import ipaddress, json, os, socket, subprocess, sys, threading
sys.path.insert(0, {project!r})
from runtime import dns_stub

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open({resolv!r}, "w") as f:
    f.write("nameserver 127.0.0.1\\noptions attempts:1 timeout:2\\n")
subprocess.run(["mount", "--bind", {resolv!r}, "/etc/resolv.conf"], check=True)
# A name glibc would find in /etc/hosts first must come from the stub here.
subprocess.run(["mount", "--bind", "/dev/null", "/etc/hosts"], check=True)

names = dns_stub.NameMap()
seen = []
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 53))

def serve():
    while True:
        packet, client = server.recvfrom(4096)
        try:
            query = dns_stub.parse_query(packet)
        except dns_stub.BadQuery as e:
            server.sendto(dns_stub.error_response(e), client)
            continue
        seen.append((query.name, query.qtype))
        allowed = query.name == "pypi.org" or query.name.endswith(".pythonhosted.org")
        if allowed:
            reply = dns_stub.response(query, dns_stub.NOERROR, (names.address_for(query.name),))
        else:
            reply = dns_stub.response(query, dns_stub.NXDOMAIN)
        server.sendto(reply, client)

threading.Thread(target=serve, daemon=True).start()

def lookup(name, family=socket.AF_UNSPEC):
    try:
        found = socket.getaddrinfo(name, 443, family, socket.SOCK_STREAM)
        return sorted({{a[4][0] for a in found}})
    except socket.gaierror as e:
        return e.errno

result = {{
    "pypi": lookup("pypi.org"),
    "files": lookup("Files.PythonHosted.org"),
    "pypi_again": lookup("pypi.org"),
    "pypi_v6_only": lookup("pypi.org", socket.AF_INET6),
    "denied": lookup("evil.example"),
    "seen": sorted(set(seen)),
}}
print(json.dumps(result))
"""


def test_glibc_resolves_allowed_names_to_stand_ins_and_gets_nxdomain_for_others(
    tmp_path: Path,
) -> None:
    script = GLIBC_CLIENT.format(project=str(PROJECT), resolv=str(tmp_path / "resolv.conf"))
    run = subprocess.run(
        ["unshare", "--mount", "--net", sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["pypi"] == ["198.18.0.1"]
    assert result["files"] == ["198.18.0.2"]
    assert result["pypi_again"] == ["198.18.0.1"]  # the same name keeps its address
    assert result["pypi_v6_only"] in (-2, -5)  # EAI_NONAME or EAI_NODATA: no AAAA record
    assert result["denied"] == -2  # EAI_NONAME: NXDOMAIN
    assert ["evil.example", TYPE_A] in result["seen"]
    assert ["pypi.org", TYPE_AAAA] in result["seen"]  # asked, and answered with no record


def query(name: bytes, qtype: int = TYPE_A, flags: int = 0x0100, **counts: int) -> bytes:
    labels = b"".join(bytes([len(label)]) + label for label in name.split(b".") if label)
    header = struct.pack(
        "!HHHHHH",
        0x1234,
        flags,
        counts.get("questions", 1),
        counts.get("answers", 0),
        0,
        counts.get("additional", 0),
    )
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def test_an_answer_echoes_the_question_and_carries_the_stand_ins() -> None:
    parsed = parse_query(query(b"PyPI.org."))
    assert (parsed.id, parsed.name, parsed.qtype) == (0x1234, "pypi.org", TYPE_A)
    answer = response(parsed, NOERROR, (ipaddress.IPv4Address("198.18.0.7"),))
    packet_id, flags, questions, answers = struct.unpack_from("!HHHH", answer)
    assert (packet_id, questions, answers) == (0x1234, 1, 1)
    assert flags & 0x8000  # a response
    assert flags & 0x0100  # recursion desired, as asked
    assert flags & 0xF == NOERROR
    assert answer[12 : 12 + len(parsed.question)] == parsed.question
    assert answer.endswith(bytes([198, 18, 0, 7]))
    aaaa = response(
        parse_query(query(b"pypi.org", TYPE_AAAA)), NOERROR, (ipaddress.IPv4Address("198.18.0.7"),)
    )
    assert struct.unpack_from("!HHHH", aaaa)[3] == 0  # no A record in an AAAA answer
    denied = response(parsed, NXDOMAIN, (ipaddress.IPv4Address("198.18.0.7"),))
    assert struct.unpack_from("!HHHH", denied)[1] & 0xF == NXDOMAIN
    assert struct.unpack_from("!HHHH", denied)[3] == 0


@pytest.mark.parametrize(
    ("packet", "rcode", "reason"),
    [
        (query(b"pypi.org", flags=0x2800), NOTIMP, "not a standard query"),
        (query(b"pypi.org", questions=2), FORMERR, "not exactly one question"),
        (query(b"pypi.org", answers=1), FORMERR, "not exactly one question"),
        (query(b"pypi.org")[:-6], FORMERR, "a name running past the packet"),
        (query(b"pypi.org")[:-2], FORMERR, "a name too long, or no type and class"),
        (
            query(b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 63),
            FORMERR,
            "a name too long",
        ),
        (query(b"x")[:12] + b"\xc0\x0c\x00\x01\x00\x01", FORMERR, "a compressed or extended label"),
        (query(b"x")[:12] + b"\x08pypi.org\x00\x00\x01\x00\x01", FORMERR, "not a host name"),
        (query(b"x")[:12] + b"\x05py\npi\x00\x00\x01\x00\x01", FORMERR, "not a host name"),
        (query(b"x")[:12] + b"\x04caf\xc3\x00\x00\x01\x00\x01", FORMERR, "not a host name"),
    ],
)
def test_a_hostile_query_gets_an_error_code_and_nothing_else(
    packet: bytes, rcode: int, reason: str
) -> None:
    with pytest.raises(BadQuery, match=reason) as raised:
        parse_query(packet)
    assert raised.value.rcode == rcode
    answer = error_response(raised.value)
    assert struct.unpack("!HHHHHH", answer) == (0x1234, 0x8080 | rcode, 0, 0, 0, 0)


@pytest.mark.parametrize("packet", [b"", b"\x12\x34\x81\x80", query(b"pypi.org", flags=0x8180)])
def test_what_is_not_a_query_is_dropped(packet: bytes) -> None:
    with pytest.raises(ValueError, match=r"header|response") as raised:
        parse_query(packet)
    assert not isinstance(raised.value, BadQuery)


def test_random_damage_to_a_query_never_breaks_the_parser() -> None:
    good = query(b"files.pythonhosted.org")
    rng = random.Random(18)  # noqa: S311 - repeatable damage, not secrets
    for _ in range(5000):
        damaged = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            parsed = parse_query(bytes(damaged))
        except ValueError:
            continue
        assert all(c.isalnum() or c in ".-_" for c in parsed.name), parsed
        response(parsed, NOERROR, (ipaddress.IPv4Address("198.18.0.1"),))


def test_the_name_map_is_bounded_and_forgets_the_least_recently_used() -> None:
    names = NameMap(ipaddress.IPv4Network("198.18.0.0/24"), limit=3)
    a, b, c = (names.address_for(n) for n in ("a.org", "b.org", "c.org"))
    assert [str(x) for x in (a, b, c)] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert names.name_for(a) == "a.org"  # a.org is now the most recently used
    d = names.address_for("d.org")  # b.org goes
    assert len(names) == 3
    assert names.name_for(b) is None
    assert names.name_for(a) == "a.org"
    assert names.address_for("c.org") == c
    # b.org's old address is not handed to the next name: a client may still hold it.
    assert d == ipaddress.IPv4Address("198.18.0.4")
    assert names.address_for("e.org") == ipaddress.IPv4Address("198.18.0.5")
    assert names.holds(b)
    assert not names.holds(ipaddress.IPv4Address("151.101.0.223"))
    assert names.name_for(ipaddress.IPv6Address("::1")) is None


def test_the_name_map_comes_round_the_block_skipping_addresses_in_use() -> None:
    names = NameMap(ipaddress.IPv4Network("198.18.0.0/28"), limit=3)  # 14 usable
    kept = names.address_for("kept.org")
    for i in range(40):
        names.address_for(f"n{i}.org")
        names.name_for(kept)  # keeps kept.org recent
    assert names.name_for(kept) == "kept.org"
    assert len(names) == 3
    assert all(names.holds(names.address_for(f"n{i}.org")) for i in range(3))


def test_a_name_map_needs_room_to_come_round() -> None:
    with pytest.raises(ValueError, match="fewer than twice 8 addresses"):
        NameMap(ipaddress.IPv4Network("198.18.0.0/28"), limit=8)
