"""Inbound connections to servers a notebook started in its sandbox, for the Jupyter server's
/hopx/proxy: the supervisor's side.

The supervisor lives in the sandbox's network namespace, so it can reach the sandbox's own
ports; nothing listens anywhere else. The server connects to one unix socket in the sandbox's
state directory (0600, the server's user only), names a port in one line, and once the
supervisor answers `OK` the connection is the sandbox's port: bytes are spliced both ways until
either side ends. Only ports inside this sandbox can be named, never an address: the supervisor
connects to the sandbox's loopback, then to its own address (a server bound to that alone).

    server → supervisor:  b"8050\\n"
    supervisor → server:  b"OK\\n", or b"ERR <why>\\n" and the end of the connection
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Final

from runtime.relay import listen_unix, splice_until_end
from runtime.spec import SANDBOX_IP

SOCKET_NAME: Final = "inbound.sock"
# A port's line is at most "65535\n"; a client that sends more, or nothing for this long, is cut.
MAX_REQUEST: Final = 8
REQUEST_TIMEOUT: Final = 5.0
# Connections into the sandbox at once: each holds two threads of the supervisor.
CONNECTIONS: Final = 64


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


class InboundRelay:
    """Listens on the state directory's inbound socket and relays each connection."""

    def __init__(
        self,
        path: str,
        reserved_ports: Iterable[int],
        own_address: Callable[[], str],
        connections: int = CONNECTIONS,
    ) -> None:
        self.path = path
        # The kernel's channels, and the egress's listener: not servers of the notebook's.
        self._reserved = frozenset(reserved_ports)
        self._own_address = own_address
        self._limit = connections
        self._open = 0
        self._lock = threading.Lock()
        self.listener: socket.socket | None = None

    def listen(self) -> None:
        """Bind the socket; called in the host's network namespace (bound in the sandbox's,
        /proc/net/unix would show the kernel its path)."""
        self.listener = listen_unix(self.path)

    def close(self) -> None:
        """Stop listening and remove the socket; connections under way end with the sandbox."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def accept(self) -> None:
        """Accept one pending connection and serve it in the background."""
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            if self._open >= self._limit:
                _answer(client, f"ERR the sandbox has {self._open} inbound connections open")
                client.close()
                return
            self._open += 1
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                client.settimeout(REQUEST_TIMEOUT)
                port = self._requested_port(client)
                if isinstance(port, str):
                    _answer(client, f"ERR {port}")
                    return
                app = self._connect(port)
                if isinstance(app, str):
                    _answer(client, f"ERR {app}")
                    return
                with app:
                    client.settimeout(None)
                    if not _answer(client, "OK"):
                        return
                    _relay_both_ways(client, app)
        finally:
            with self._lock:
                self._open -= 1

    def _requested_port(self, client: socket.socket) -> int | str:
        """The port the line names, or why it is refused."""
        line = b""
        with contextlib.suppress(OSError):
            while not line.endswith(b"\n") and len(line) < MAX_REQUEST:
                # One byte at a time: what follows the line is the client's, for the app.
                part = client.recv(1)
                if not part:
                    break
                line += part
        text = line.strip()
        if not line.endswith(b"\n") or not text.isdigit() or not 0 < int(text) <= 65535:
            return "the request must be one port number and a newline"
        port = int(text)
        if port in self._reserved:
            return f"port {port} is the sandbox's own, not a notebook server's"
        return port

    def _connect(self, port: int) -> socket.socket | str:
        """A connection to `port` on the sandbox's loopback, else on its own address."""
        failures = []
        for address in dict.fromkeys((SANDBOX_IP, self._own_address())):
            if not address:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(REQUEST_TIMEOUT)
            try:
                sock.connect((address, port))
            except OSError as e:
                sock.close()
                failures.append(e.errno)
                continue
            sock.settimeout(None)
            return sock
        if errno.ECONNREFUSED in failures:
            return f"nothing in the sandbox listens on port {port}"
        return f"port {port} of the sandbox did not answer"


def _answer(client: socket.socket, line: str) -> bool:
    try:
        client.sendall(line.encode() + b"\n")
    except OSError:
        return False
    return True


def _relay_both_ways(client: socket.socket, app: socket.socket) -> None:
    """Splice each way until that side ends (then end the other's sending side), and return
    once both have ended or either failed."""
    outward = threading.Thread(target=_pump, args=(app, client), daemon=True)
    outward.start()
    _pump(client, app)
    outward.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        splice_until_end(source, sink)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        # A reset on one side resets the other: neither waits for an end that will not come.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
