"""The supervisor's byte relay (runtime.relay) on real sockets: a unix socket client on one side, a
TCP listener standing in for the kernel's port on the other.

The relay reaches the kernel at the sandbox's loopback address; outside a sandbox that is this
host's loopback, so a listener there plays the kernel. What it sends towards the client must be
ZMTP as a CurveZMQ kernel speaks it (tests/zmtp_wire.py): a hostile one is cut off before its
client reads what breaks the protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from zmtp_wire import GREETING, HANDSHAKE, SIGNATURE, command, frame, message_frame, session

from runtime.relay import Relay
from runtime.spec import SANDBOX_IP, Channel
from runtime.zmtp import ProtocolError

PAYLOAD = 24 * 1024 * 1024  # larger than any buffer on the way: the relay's, the pipe's, a socket's
TIMEOUT = 30.0
MiB = 1024**2


class RelayUnderTest:
    def __init__(self, path: Path, max_frame: int = 256 * MiB) -> None:
        self.kernel_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.kernel_port.bind((SANDBOX_IP, 0))
        self.kernel_port.listen()
        self.kernel_port.settimeout(TIMEOUT)
        self.path = path
        self.alive = threading.Event()
        self.alive.set()
        channel = Channel("iopub", str(path), self.kernel_port.getsockname()[1])
        # What the relay reported, as the supervisor would be told.
        self.violations: list[tuple[str, ProtocolError]] = []
        self.reported = threading.Event()
        self.relay = Relay(
            [channel], self.alive, max_frame=max_frame, on_violation=self._on_violation
        )
        self.relay.listen()
        self._selector = selectors.DefaultSelector()
        for fd in self.relay.listeners:
            self._selector.register(fd, selectors.EVENT_READ)
        # What the supervisor's loop does with a listener that is ready.
        threading.Thread(target=self._accept_one, daemon=True).start()

    def _on_violation(self, channel: Channel, error: ProtocolError) -> None:
        self.violations.append((channel.name, error))
        self.reported.set()

    def _accept_one(self) -> None:
        for key, _ in self._selector.select(TIMEOUT):
            self.relay.accept(int(key.fd))

    def connect(self) -> tuple[socket.socket, socket.socket]:
        """A client on the host socket, and the kernel's end of the relayed connection."""
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(TIMEOUT)
        client.connect(str(self.path))
        kernel, _ = self.kernel_port.accept()
        kernel.settimeout(TIMEOUT)
        return client, kernel

    def close(self) -> None:
        self.alive.clear()
        self.relay.close()
        self._selector.close()
        self.kernel_port.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayUnderTest]:
    under_test = RelayUnderTest(tmp_path / "iopub")
    yield under_test
    under_test.close()


def send_then_end(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def test_bytes_cross_intact_both_ways_at_once(
    relay: RelayUnderTest,
) -> None:
    """Anything from the client; from the kernel, a CurveZMQ session whose message frames run
    from 33 bytes to 3 MiB (checked and copied, or spliced)."""
    client, kernel = relay.connect()
    upstream, downstream = os.urandom(PAYLOAD), session(PAYLOAD)
    senders = [
        threading.Thread(target=send_then_end, args=(client, upstream)),
        threading.Thread(target=send_then_end, args=(kernel, downstream)),
    ]
    for sender in senders:
        sender.start()
    received: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: received.update(kernel=read_to_end(kernel)))
    reader.start()
    received["client"] = read_to_end(client)
    reader.join(TIMEOUT)
    for sender in senders:
        sender.join(TIMEOUT)
    assert hashlib.sha256(received["kernel"]).digest() == hashlib.sha256(upstream).digest()
    assert hashlib.sha256(received["client"]).digest() == hashlib.sha256(downstream).digest()
    assert relay.violations == []
    client.close()
    kernel.close()


def test_an_end_of_sending_is_passed_on_while_the_other_way_stays_open(
    relay: RelayUnderTest,
) -> None:
    client, kernel = relay.connect()
    send_then_end(client, b"request")
    assert read_to_end(kernel) == b"request"
    send_then_end(kernel, GREETING)
    assert read_to_end(client) == GREETING
    client.close()
    kernel.close()


def test_closing_the_relay_cuts_its_connections_and_removes_its_socket(
    relay: RelayUnderTest,
) -> None:
    client, kernel = relay.connect()
    client.sendall(b"ping")
    assert kernel.recv(4) == b"ping"
    relay.relay.close()
    # Both ends see the connection end instead of hanging.
    assert read_to_end(client) == b""
    assert read_to_end(kernel) == b""
    assert not relay.path.exists()
    client.close()
    kernel.close()


def test_a_kernel_dribbling_its_bytes_one_at_a_time_is_relayed_intact(
    relay: RelayUnderTest,
) -> None:
    """Each part is held until it is complete, and passes then."""
    client, kernel = relay.connect()
    kernel.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = HANDSHAKE + message_frame(300) + message_frame(33)
    for i in range(len(data)):
        kernel.sendall(data[i : i + 1])
    kernel.shutdown(socket.SHUT_WR)
    assert read_to_end(client) == data
    assert relay.violations == []
    client.close()
    kernel.close()


def test_the_greeting_goes_on_part_by_part_as_libzmq_exchanges_it(
    relay: RelayUnderTest,
) -> None:
    """libzmq sends its signature, waits for the peer's, sends its major version, waits for the
    peer's, then sends the rest: each part must reach the client before the next is sent."""
    client, kernel = relay.connect()
    kernel.sendall(SIGNATURE)
    assert read_exactly(client, 10) == SIGNATURE
    kernel.sendall(GREETING[10:11])
    assert read_exactly(client, 1) == GREETING[10:11]
    kernel.sendall(GREETING[11:])
    assert read_exactly(client, 53) == GREETING[11:]
    client.close()
    kernel.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


ONE_MIB_FRAME = message_frame(MiB)
HOSTILE = {
    # (what the kernel sends, the part before the offence, words of the relay's report)
    "zmtp1-greeting": (
        b"\xff" + (8 << 30).to_bytes(8, "big") + b"\x00" + bytes(1000),
        b"",
        "not a ZMTP 3 signature",
    ),
    "zmtp2-greeting": (SIGNATURE + b"\x01" + bytes(1000), SIGNATURE, "ZMTP version 1, not 3"),
    "null-mechanism": (
        GREETING[:12] + b"NULL".ljust(20, b"\0") + bytes(32) + command(b"READY"),
        GREETING[:11],
        "the security mechanism 'NULL'",
    ),
    "8-gib-command": (
        GREETING + bytes([0x06]) + (8 << 30).to_bytes(8, "big") + bytes(MiB),
        GREETING,
        "a command frame of 8589934592 bytes (8.0 GiB); commands are limited to 65536 bytes",
    ),
    "message-before-ready": (
        GREETING + command(b"WELCOME", bytes(160)) + frame(bytes(MiB)),
        GREETING + command(b"WELCOME", bytes(160)),
        "before the CurveZMQ handshake was complete",
    ),
    "frame-over-the-bound": (
        HANDSHAKE + ONE_MIB_FRAME + frame(bytes(2 * MiB)),
        HANDSHAKE + ONE_MIB_FRAME,
        "a message frame of 2097152 bytes (2.0 MiB); frames are limited to 1048576 bytes",
    ),
    "reserved-flags": (HANDSHAKE + b"\x80\x05hello", HANDSHAKE, "bits 7-3 are reserved"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_kernel_is_cut_off_before_its_client_reads_what_breaks_the_protocol(
    tmp_path: Path, case: str
) -> None:
    """The client gets at most the part before the offence (what the relay had checked before
    it read the offending part), then the end of the connection; the kernel's end is closed
    too, and the relay reports the violation once, with what the kernel sent and the bound."""
    sent, passed, words = HOSTILE[case]
    relay = RelayUnderTest(tmp_path / "iopub", max_frame=MiB)
    try:
        client, kernel = relay.connect()
        sender = threading.Thread(target=send_then_end_quietly, args=(kernel, sent), daemon=True)
        sender.start()
        received = read_to_end(client)
        assert passed.startswith(received), (len(received), len(passed))
        assert relay.reported.wait(TIMEOUT)
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        assert [(name, words in str(error)) for name, error in relay.violations] == [
            ("iopub", True)
        ], relay.violations
        client.close()
        kernel.close()
    finally:
        relay.close()


def send_then_end_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, until the relay hangs up on us."""
    with contextlib.suppress(OSError):
        send_then_end(sock, data)
