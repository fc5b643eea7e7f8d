"""The supervisor's byte relay (runtime.relay) on real sockets: a unix socket client on one side, a
TCP listener standing in for the kernel's port on the other.

The relay reaches the kernel at the sandbox's loopback address; outside a sandbox that is this
host's loopback, so a listener there plays the kernel.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.relay import Relay
from runtime.spec import SANDBOX_IP, Channel

PAYLOAD = 24 * 1024 * 1024  # larger than any buffer on the way: the relay's, the pipe's, a socket's
TIMEOUT = 30.0


class RelayUnderTest:
    def __init__(self, path: Path) -> None:
        self.kernel_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.kernel_port.bind((SANDBOX_IP, 0))
        self.kernel_port.listen()
        self.kernel_port.settimeout(TIMEOUT)
        self.path = path
        self.alive = threading.Event()
        self.alive.set()
        channel = Channel("iopub", str(path), self.kernel_port.getsockname()[1])
        self.relay = Relay([channel], self.alive)
        self.relay.listen()
        self._selector = selectors.DefaultSelector()
        for fd in self.relay.listeners:
            self._selector.register(fd, selectors.EVENT_READ)
        # What the supervisor's loop does with a listener that is ready.
        threading.Thread(target=self._accept_one, daemon=True).start()

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
    client, kernel = relay.connect()
    upstream, downstream = os.urandom(PAYLOAD), os.urandom(PAYLOAD)
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
    client.close()
    kernel.close()


def test_an_end_of_sending_is_passed_on_while_the_other_way_stays_open(
    relay: RelayUnderTest,
) -> None:
    client, kernel = relay.connect()
    send_then_end(client, b"request")
    assert read_to_end(kernel) == b"request"
    send_then_end(kernel, b"reply")
    assert read_to_end(client) == b"reply"
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
