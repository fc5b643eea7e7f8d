"""A websocket aborted right after its upgrade and a new one for the same session, as JupyterLab
makes on page load and on a network blip: the new one always gets the kernel's shell replies.

jupyter_server gives every websocket of a session the session's ZeroMQ routing id on shell,
control and stdin; the kernel's ROUTER sockets give the id to the connection whose handshake
completed last. An aborted websocket's connections must therefore never complete their handshakes
after the new one's, however the relay's threads are scheduled.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import uuid
from urllib.parse import urlsplit

import pytest
import websocket

from server_harness import KernelSocket, Server

# Seconds between the upgrade request and the abort: before the server has answered, while it
# connects the session's channels, and once it has.
ABORT_DELAYS = [0.0, 0.002, 0.01, 0.05]
TRIES_PER_DELAY = 50
REPLY_PATIENCE = 10.0


def abort_after_upgrade(server: Server, kernel_id: str, session_id: str, delay: float) -> None:
    """Ask to upgrade to a kernel websocket of `session_id`, then reset the connection."""
    url = urlsplit(server.url)
    query = f"token={server.token}&session_id={session_id}"
    path = f"{url.path}/api/kernels/{kernel_id}/channels?{query}"
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request.encode())
        time.sleep(delay)
        # Linger 0: the close is a reset, as when a browser tab goes away.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def shell_replies(server: Server, kernel_id: str, session_id: str) -> bool:
    """Whether a new websocket of `session_id` gets the reply to a kernel_info_request."""
    ws_url = server.url.replace("http://", "ws://", 1)
    ws = websocket.create_connection(
        f"{ws_url}/api/kernels/{kernel_id}/channels?token={server.token}&session_id={session_id}",
        timeout=30,
    )
    try:
        ks = KernelSocket(ws)
        ks.session = session_id
        msg_id = ks.send("kernel_info_request", {})
        return ks.wait_for(
            lambda m: (
                m.get("msg_type") == "kernel_info_reply"
                and m.get("parent_header", {}).get("msg_id") == msg_id
            ),
            REPLY_PATIENCE,
        )
    finally:
        ws.close()


@pytest.mark.parametrize("delay", ABORT_DELAYS)
def test_a_new_websocket_after_an_aborted_one_gets_shell_replies(
    server: Server, delay: float
) -> None:
    kernel_id = server.start_kernel()
    assert shell_replies(server, kernel_id, uuid.uuid4().hex), server.log()[-3000:]
    lost = 0
    for _ in range(TRIES_PER_DELAY):
        session_id = uuid.uuid4().hex
        abort_after_upgrade(server, kernel_id, session_id, delay)
        if not shell_replies(server, kernel_id, session_id):
            lost += 1
    assert lost == 0, f"{lost} of {TRIES_PER_DELAY} new websockets got no shell reply"
