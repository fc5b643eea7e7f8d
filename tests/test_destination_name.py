"""The name a connection's first bytes ask for (runtime.destination_name): real ClientHellos
from OpenSSL, hand-built hostile ones, and HTTP/1 request heads."""

from __future__ import annotations

import random
import ssl

import pytest

from runtime.destination_name import (
    MAX_FIRST_BYTES,
    NEED_MORE,
    Malformed,
    Named,
    destination_name,
)


def openssl_client_hello(server_hostname: str | None) -> bytes:
    """The first flight of a real TLS client (this Python's OpenSSL) for `server_hostname`."""
    context = ssl.create_default_context()
    context.check_hostname = server_hostname is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def record(handshake: bytes, version: bytes = b"\x03\x01") -> bytes:
    return b"\x16" + version + len(handshake).to_bytes(2, "big") + handshake


def vector(data: bytes, size: int) -> bytes:
    return len(data).to_bytes(size, "big") + data


def sni_extension(*names: bytes, kind: int = 0) -> tuple[int, bytes]:
    entries = b"".join(bytes([kind]) + vector(name, 2) for name in names)
    return (0, vector(entries, 2))


def client_hello(*extensions: tuple[int, bytes], session_id: bytes = b"") -> bytes:
    """A ClientHello handshake message with these extensions, as a TLS 1.3 client sends."""
    body = (
        b"\x03\x03"
        + bytes(32)
        + vector(session_id, 1)
        + vector(b"\x13\x01\x13\x02", 2)
        + vector(b"\x00", 1)
        + vector(
            b"".join(kind.to_bytes(2, "big") + vector(data, 2) for kind, data in extensions), 2
        )
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize(
    ("server_hostname", "name"),
    [
        ("pypi.org", "pypi.org"),
        ("Files.PythonHosted.org", "files.pythonhosted.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        (None, None),
    ],
)
def test_a_real_client_hello_names_its_server(
    server_hostname: str | None, name: str | None
) -> None:
    assert destination_name(openssl_client_hello(server_hostname)) == Named("tls", name)


def test_every_cut_of_a_client_hello_asks_for_more() -> None:
    """Whatever piece has arrived, nothing is decided before the whole ClientHello."""
    hello = openssl_client_hello("pypi.org")
    for cut in range(1, len(hello)):
        assert destination_name(hello[:cut]) is NEED_MORE, cut


def test_a_client_hello_split_over_records_is_put_together() -> None:
    handshake = client_hello(sni_extension(b"pypi.org"))
    first, rest = handshake[:10], handshake[10:]
    assert destination_name(record(first) + record(rest)) == Named("tls", "pypi.org")
    assert destination_name(record(first) + record(rest)[:7]) is NEED_MORE


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (record(client_hello(sni_extension(b"a.org", b"b.org"))), "more than one server name"),
        (
            record(client_hello(sni_extension(b"a.org"), sni_extension(b"b.org"))),
            "extension 0 twice",
        ),
        (
            record(client_hello(sni_extension(b"caf\xc3\xa9.org"))),
            "a server name that is not ASCII",
        ),
        (
            record(client_hello(sni_extension(b"a.org/evil"))),
            "a server name that is not a host name",
        ),
        (record(client_hello(sni_extension(b""))), "a server name that is not a host name"),
        (record(client_hello(sni_extension(b"a" * 254))), "a server name that is not a host name"),
        (record(client_hello(session_id=bytes(33))), "a session id longer than 32 bytes"),
        (
            record(client_hello(sni_extension(b"pypi.org"))[:10]) + b"\x17\x03\x03\x00\x05hello",
            "a record other than a handshake one before the ClientHello ended",
        ),
        (b"\x16\x03\x01\x00\x00", "a handshake record of 0 bytes"),
        (b"\x16\x03\x01\x40\x01", "a handshake record of 16385 bytes"),
        (record(b"\x02\x00\x00\x00"), "the handshake does not start with a ClientHello"),
        (record(b"\x01\xff\xff\xff"), "a ClientHello of 16777215 bytes"),
        (record(b"\x01\x00\x00\x05" + bytes(5)), "lengths that do not add up"),
    ],
)
def test_a_hostile_client_hello_is_malformed_never_guessed_at(first: bytes, reason: str) -> None:
    assert destination_name(first) == Malformed("tls", reason)


def test_a_server_name_list_whose_lengths_lie_is_malformed() -> None:
    lying = (0, vector(b"\x00" + (200).to_bytes(2, "big") + b"pypi.org", 2))
    assert destination_name(record(client_hello(lying))) == Malformed(
        "tls", "lengths that do not add up"
    )


def test_random_damage_to_a_client_hello_never_breaks_the_parser() -> None:
    """Flipped bytes give an answer of the three kinds, and any name given is a host name."""
    hello = openssl_client_hello("pypi.org")
    rng = random.Random(15)  # noqa: S311 - repeatable damage, not secrets
    for _ in range(3000):
        damaged = bytearray(hello)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        answer = destination_name(bytes(damaged))
        assert answer is NEED_MORE or isinstance(answer, (Named, Malformed))
        if isinstance(answer, Named) and answer.name is not None:
            assert answer.name.isascii()
            assert all(c.isalnum() or c in ".-_" for c in answer.name), answer


REQUEST = b"GET /simple/ HTTP/1.1\r\nHost: PyPI.org\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        (REQUEST, Named("http", "pypi.org")),
        (b"POST / HTTP/1.0\r\nhost: pypi.org:8080\r\n\r\nbody", Named("http", "pypi.org")),
        (b"GET http://pypi.org/x HTTP/1.1\r\nHost: pypi.org\r\n\r\n", Named("http", "pypi.org")),
        (b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n", Named("http", "pypi.org")),
        (b"GET / HTTP/1.1\r\nHost: 151.101.0.223\r\n\r\n", Named("http", None)),
        (b"GET / HTTP/1.1\r\nHost: [2a04:4e42::223]:80\r\n\r\n", Named("http", None)),
        (
            b"GET http://evil.example/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n",
            Malformed("http", "a request for one host with a Host header naming another"),
        ),
        (
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n",
            Malformed("http", "a request for one host with a Host header naming another"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: pypi.org\r\nHost: evil.example\r\n\r\n",
            Malformed("http", "2 Host headers"),
        ),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Malformed("http", "0 Host headers")),
        (
            b"GET / HTTP/1.1\r\nHost : evil.example\r\nHost: pypi.org\r\n\r\n",
            Malformed("http", "a header line without a name"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: pypi.org:http\r\n\r\n",
            Malformed("http", "a Host that is not host[:port]"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: [pypi.org]\r\n\r\n",
            Malformed("http", "a Host that is not host[:port]"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n",
            Malformed("http", "a Host that is not a host name"),
        ),
        (
            b"GET / HTTP/2\r\nHost: pypi.org\r\n\r\n",
            Malformed("http", "a request line that is not HTTP/1"),
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Named("tcp", None)),
        (b"PING\r\n", Named("tcp", None)),
        (b"EHLO client.example\r\n", Named("tcp", None)),
        (b"GET /\r\nHost: evil.example\r\n\r\n", Named("tcp", None)),
        (
            b"GET / HTTP/1.1 \r\nHost: pypi.org\r\n\r\n",
            Malformed("http", "a request line that is not HTTP/1"),
        ),
        (b"GET / HTTP/3\r\n", Malformed("http", "a request line that is not HTTP/1")),
        (b"\x00\x01binary", Named("tcp", None)),
    ],
)
def test_http_requests_name_their_host(first: bytes, answer: object) -> None:
    assert destination_name(first) == answer


def test_every_cut_of_a_request_head_asks_for_more() -> None:
    for cut in range(1, REQUEST.index(b"\r\n\r\n") + 3):
        assert destination_name(REQUEST[:cut]) is NEED_MORE, REQUEST[:cut]


def test_random_damage_to_a_request_head_never_breaks_the_parser() -> None:
    rng = random.Random(16)  # noqa: S311 - repeatable damage, not secrets
    for _ in range(3000):
        damaged = bytearray(REQUEST)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.choice(b"\r\n:[]@ /aZ\x00\xff")
        answer = destination_name(bytes(damaged))
        assert answer is NEED_MORE or isinstance(answer, (Named, Malformed))
        if isinstance(answer, Named) and answer.name is not None:
            assert all(c.isalnum() or c in ".-_" for c in answer.name), answer


def test_a_request_head_that_never_ends_is_malformed_at_the_bound() -> None:
    endless = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * MAX_FIRST_BYTES
    assert destination_name(endless[: MAX_FIRST_BYTES - 1]) is NEED_MORE
    assert destination_name(endless) == Malformed(
        "http", f"no end of the request head within {MAX_FIRST_BYTES} bytes"
    )


def test_nothing_yet_asks_for_more() -> None:
    assert destination_name(b"") is NEED_MORE
