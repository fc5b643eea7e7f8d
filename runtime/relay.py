"""Byte relay from the host's unix sockets to the kernel's ports on the sandbox loopback.

The supervisor lives in the sandbox's network namespace, so it can reach 127.0.0.1 there, while the
unix sockets it listens on are paths in a host directory only the server's user can open. Bytes are
spliced, not parsed: the ZeroMQ traffic is CurveZMQ-encrypted end to end and the relay never holds
a key. One thread per direction keeps the copy loop in blocking C calls that release the GIL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Iterable

from runtime.spec import SANDBOX_IP, Channel

CHUNK = 256 * 1024
# How long a client connection waits for the kernel to start listening on its port.
CONNECT_PATIENCE = 60.0
# Meanwhile it tries again after a fiftieth of the time since the sandbox started, within these
# bounds: a kernel that starts in 250 ms answers its first client about 2.5 ms late on average,
# and twenty sandboxes starting at once do not spend the CPU their kernels need on refused
# connects (trying every millisecond made such a burst three times slower).
RETRY_FRACTION = 1 / 50
RETRY_BOUNDS = (0.001, 0.02)
_RETRYABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EAGAIN}

threading.stack_size(512 * 1024)


class Relay:
    """Listens on every channel's host socket and relays each accepted connection."""

    def __init__(self, channels: Iterable[Channel], alive: threading.Event) -> None:
        self._channels = tuple(channels)
        # Cleared when the sandbox is gone, so pending connects stop waiting for it.
        self._alive = alive
        self.listeners: dict[int, tuple[socket.socket, Channel]] = {}
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def listen(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(channel.host_path)  # left by a supervisor that was killed
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # The directory is 0700; the socket is 0600 as well, before anything can connect.
            old_umask = os.umask(0o177)
            try:
                sock.bind(channel.host_path)
            finally:
                os.umask(old_umask)
            sock.listen(64)
            sock.setblocking(False)
            self.listeners[sock.fileno()] = (sock, channel)

    def accept(self, fd: int) -> None:
        """Accept one pending client on listener `fd` and relay it in the background."""
        listener, channel = self.listeners[fd]
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        threading.Thread(
            target=self._serve, args=(client, channel.sandbox_port), daemon=True
        ).start()

    def _serve(self, client: socket.socket, port: int) -> None:
        kernel = self._connect(port)
        if kernel is None:
            client.close()
            return
        with self._lock:
            self._open.update((client, kernel))
        back = threading.Thread(target=_pump, args=(kernel, client), daemon=True)
        back.start()
        _pump(client, kernel)
        back.join()
        with self._lock:
            self._open.difference_update((client, kernel))
        client.close()
        kernel.close()

    def _connect(self, port: int) -> socket.socket | None:
        """A connection to the kernel's port, retried while the kernel is still starting."""
        deadline = time.monotonic() + CONNECT_PATIENCE
        while self._alive.is_set() and time.monotonic() < deadline:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect((SANDBOX_IP, port))
            except OSError as e:
                sock.close()
                if e.errno not in _RETRYABLE:
                    return None
                time.sleep(self._retry_interval())
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        return None

    def _retry_interval(self) -> float:
        since_start = time.monotonic() - self._started
        low, high = RETRY_BOUNDS
        return min(high, max(low, since_start * RETRY_FRACTION))

    def close(self) -> None:
        """Stop listening, remove the socket paths and cut every open connection."""
        for sock, channel in self.listeners.values():
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(channel.host_path)
        self.listeners.clear()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Move bytes until `source` ends, then pass the end on to `sink`."""
    with contextlib.suppress(OSError):
        _splice(source, sink)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _splice(source: socket.socket, sink: socket.socket) -> None:
    """Move bytes through a pipe with splice(2), so they never enter this process: that halves
    the relay's CPU per byte, which on a small machine the kernel and its client need."""
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    try:
        while n := os.splice(source.fileno(), pipe_w, CHUNK):
            while n:
                n -= os.splice(pipe_r, sink.fileno(), n)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
