"""`client_gone`, which decides whether a kernel websocket may take its session's replies, on real
TCP connections: a client that is there is there whether or not it has sent anything; one that
closed or reset its connection is gone, noticed by the server or not."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from hopx_kernel.websocket_sessions import client_gone


class Stream:
    """What client_gone reads of a tornado IOStream."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.socket = sock

    def closed(self) -> bool:
        return self.socket is None


def handler_for(server_side: socket.socket | None, **fields: Any) -> Any:
    connection = SimpleNamespace(stream=Stream(server_side))
    return SimpleNamespace(request=SimpleNamespace(connection=connection), **fields)


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client's TCP connection on loopback, and the server's end of it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
    with client, server_side:
        yield client, server_side


def test_a_client_that_waits_is_there(connection: tuple[socket.socket, socket.socket]) -> None:
    client, server_side = connection
    assert not client_gone(handler_for(server_side))
    client.sendall(b"\x81\x00")  # a frame sent early: still there
    assert not client_gone(handler_for(server_side))


def test_a_client_that_closed_is_gone(connection: tuple[socket.socket, socket.socket]) -> None:
    client, server_side = connection
    client.close()
    assert client_gone(handler_for(server_side))


def test_a_client_that_reset_is_gone(connection: tuple[socket.socket, socket.socket]) -> None:
    client, server_side = connection
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert client_gone(handler_for(server_side))


def test_what_the_server_has_noticed_counts(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    _, server_side = connection
    assert client_gone(handler_for(None))
    assert client_gone(handler_for(server_side, _on_close_called=True))
    # Once upgraded, the websocket's own stream is the one that counts.
    upgraded = SimpleNamespace(stream=Stream(None))
    assert client_gone(handler_for(server_side, ws_connection=upgraded))
