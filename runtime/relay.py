"""Byte relay from the host's unix sockets to the kernel's ports on the sandbox loopback.

The supervisor lives in the sandbox's network namespace, so it can reach 127.0.0.1 there, while the
unix sockets it listens on are paths in a host directory only the server's user can open. The
ZeroMQ traffic is CurveZMQ-encrypted end to end and the relay never holds a key. What the client
sends is spliced as it comes. What the kernel sends is hostile input for the client's libzmq, so
its ZMTP framing is checked first (`runtime.zmtp`): greeting, frame headers and commands pass on
once checked, and large message bodies are spliced, exactly as many bytes as their header
announced. A kernel that breaks the framing, or sends a frame over its bound, loses the connection
before its client has read the offending header, and the relay reports it (the supervisor stops
the kernel, reason "protocol"). One thread per direction keeps the copy loops in blocking calls
that release the GIL.

Two things a direct TCP connection gives the kernel's ROUTER sockets, the relay gives too. The
kernel completes the CurveZMQ handshakes of one channel in the order their clients connected
(see `_HandshakeTurn`: otherwise a reconnecting session can lose its shell replies). And a client
that has gone takes its kernel-side connection with it, whether or not the kernel closes its end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable

from runtime.spec import SANDBOX_IP, Channel
from runtime.zmtp import DEFAULT_MAX_FRAME_BYTES, KernelStream, ProtocolError

CHUNK = 256 * 1024
# What the kernel sends is read into a buffer of this size to be checked; it holds a whole command
# with its header, the largest unit that must be complete before it is checked.
CHECK_BUFFER = 256 * 1024
# A message frame body with at least this much left, and nothing else pending, is spliced.
SPLICE_AT_LEAST = 64 * 1024
# How long a client connection waits for the kernel to start listening on its port.
CONNECT_PATIENCE = 60.0
# Meanwhile it tries again after a fiftieth of the time since the sandbox started, within these
# bounds: a kernel that starts in 250 ms answers its first client about 2.5 ms late on average,
# and twenty sandboxes starting at once do not spend the CPU their kernels need on refused
# connects (trying every millisecond made such a burst three times slower).
RETRY_FRACTION = 1 / 50
RETRY_BOUNDS = (0.001, 0.02)
_RETRYABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EAGAIN}
# How long a connection waits for the handshake of the one accepted before it on its channel,
# once that one has reached the kernel (see _HandshakeTurn). A CurveZMQ handshake takes a few
# milliseconds; a client that stalls in the middle of one delays the next by this much at most.
HANDSHAKE_PATIENCE = 10.0

threading.stack_size(512 * 1024)


# Told which channel's kernel broke the protocol, and how (see runtime.zmtp.ProtocolError).
ViolationHandler = Callable[[Channel, ProtocolError], None]


def listen_unix(path: str) -> socket.socket:
    """A non-blocking unix socket listening at `path` (replacing one a killed supervisor left),
    0600 from the start: its directory is 0700, and nothing can connect before the mode is set."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(64)
    sock.setblocking(False)
    return sock


class Relay:
    """Listens on every channel's host socket and relays each accepted connection.

    max_frame: the largest message frame the kernel may send its client. on_violation: called
    from a relay thread when the kernel has broken the protocol and its connection was cut;
    by default it logs on stderr."""

    def __init__(
        self,
        channels: Iterable[Channel],
        alive: threading.Event,
        *,
        max_frame: int = DEFAULT_MAX_FRAME_BYTES,
        on_violation: ViolationHandler | None = None,
    ) -> None:
        self._channels = tuple(channels)
        # Cleared when the sandbox is gone, so pending connects stop waiting for it.
        self._alive = alive
        self._max_frame = max_frame
        self._on_violation = on_violation or _log_violation
        self.listeners: dict[int, tuple[socket.socket, Channel]] = {}
        # Per listener, the turn of the connection accepted last.
        self._last_turns: dict[int, _HandshakeTurn] = {}
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def listen(self) -> None:
        for channel in self._channels:
            sock = listen_unix(channel.host_path)
            self.listeners[sock.fileno()] = (sock, channel)

    def accept(self, fd: int) -> None:
        """Accept one pending client on listener `fd` and relay it in the background."""
        listener, channel = self.listeners[fd]
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        # Accepted here, in the order the clients connected, so that is the order of turns.
        turn = _HandshakeTurn(self._last_turns.get(fd))
        self._last_turns[fd] = turn
        threading.Thread(target=self._serve, args=(client, channel, turn), daemon=True).start()

    def _serve(self, client: socket.socket, channel: Channel, turn: _HandshakeTurn) -> None:
        try:
            turn.wait()
            kernel = self._connect(channel.sandbox_port)
            turn.connected.set()
            if kernel is None:
                client.close()
                return
            self._relay(client, kernel, channel, turn)
        finally:
            turn.end()

    def _relay(
        self, client: socket.socket, kernel: socket.socket, channel: Channel, turn: _HandshakeTurn
    ) -> None:
        with self._lock:
            self._open.update((client, kernel))
        back = threading.Thread(
            target=self._pump_checked, args=(kernel, client, channel, turn), daemon=True
        )
        back.start()
        _pump(client, kernel)
        if _hung_up(client):
            # The client has closed, not only ended its sending: nothing the kernel sends can
            # reach it any more. Cut the kernel's side too, rather than wait for the kernel to
            # close it: libzmq leaves open, unread, a connection whose routing id another
            # connection took over, and that would pin this connection's threads.
            with contextlib.suppress(OSError):
                kernel.shutdown(socket.SHUT_RDWR)
        back.join()
        with self._lock:
            self._open.difference_update((client, kernel))
        client.close()
        kernel.close()

    def _pump_checked(
        self, kernel: socket.socket, client: socket.socket, channel: Channel, turn: _HandshakeTurn
    ) -> None:
        """Pass on what the kernel sends once checked; cut the connection at a violation."""
        try:
            with contextlib.suppress(OSError):
                _relay_checked(kernel, client, KernelStream(self._max_frame), turn.settled.set)
        except ProtocolError as e:
            for sock in (client, kernel):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._on_violation(channel, e)
            return
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

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


class _HandshakeTurn:
    """A relayed connection's place in the order of its channel's handshakes with the kernel.

    A connection connects to the kernel once the connection accepted before it on the same
    channel has connected (or given up), and at most HANDSHAKE_PATIENCE later once the kernel
    has completed that one's handshake (or the connection has ended): the kernel then completes
    the handshakes of a channel in the order their clients connected, as it does when they
    connect to it directly.

    Why the order matters: jupyter_server gives every websocket of a session the session's
    routing id on shell, control and stdin, and ipykernel's ROUTER sockets (ROUTER_HANDOVER)
    give a routing id to the connection whose handshake completed last. The connection they
    take it from gets no more messages, and libzmq leaves it open without reading it. A
    websocket aborted right after its upgrade and a new one for the same session (JupyterLab
    on page load, on a network blip, Kernel Gateway) leave the server holding both for a
    moment, the aborted one connected first. With one thread pair per connection, the relay
    could let the aborted one's handshake complete last: it took the routing id, was closed,
    and the new websocket never got a shell reply (the notebook stayed at "Unknown").

    The relay cannot tell which connections claim the same routing id (it is encrypted), so
    the order holds for all of a channel's connections; a connection that waits, waits for
    one handshake, a few milliseconds.
    """

    def __init__(self, before: _HandshakeTurn | None) -> None:
        self._before = before
        # This connection's connect to the kernel is over, made or not.
        self.connected = threading.Event()
        # The kernel has sent this connection's READY, so it has already handed the connection
        # to the socket (libzmq does that before it sends READY); or the connection has ended.
        self.settled = threading.Event()

    def wait(self) -> None:
        """Wait for the turn of the connection accepted before this one."""
        before, self._before = self._before, None  # no chain of every connection ever made
        if before is not None:
            before.connected.wait(CONNECT_PATIENCE + HANDSHAKE_PATIENCE)
            before.settled.wait(HANDSHAKE_PATIENCE)

    def end(self) -> None:
        self.connected.set()
        self.settled.set()


def _log_violation(channel: Channel, error: ProtocolError) -> None:
    print(
        f"hopx relay: cut off a kernel that broke the ZeroMQ protocol on its {channel.name} "
        f"channel: it sent {error}",
        file=sys.stderr,
        flush=True,
    )


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Move bytes until `source` ends, then pass the end on to `sink`."""
    with contextlib.suppress(OSError):
        splice_until_end(source, sink)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer of a unix stream socket has closed it (or shut down both directions),
    as opposed to having only ended its sending."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)  # POLLHUP is reported whatever is asked for
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def _relay_checked(
    source: socket.socket,
    sink: socket.socket,
    stream: KernelStream,
    on_ready: Callable[[], None],
) -> None:
    """Move what the kernel sends until it ends, each byte only once `stream` has checked it;
    `on_ready` is called once the kernel has sent its READY command.

    Bytes are read into a buffer and checked there; the checked ones are sent on and an
    incomplete rest stays for the next read. A message frame's body with much left and nothing
    pending goes through a pipe with splice(2), exactly the octets its header announced, so large
    outputs never enter this process."""
    buffer = bytearray(CHECK_BUFFER)
    view = memoryview(buffer)
    pending = 0  # read, not yet checked: an incomplete greeting part, frame header or command
    ready = False
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    try:
        while True:
            if not pending and stream.body_left >= SPLICE_AT_LEAST:
                n = os.splice(source.fileno(), pipe_w, min(stream.body_left, CHUNK))
                if not n:
                    return
                stream.passed(n)
                while n:
                    n -= os.splice(pipe_r, sink.fileno(), n)
                continue
            n = source.recv_into(view[pending:])
            if not n:
                return
            end = pending + n
            checked = stream.feed(view[:end])
            if not ready and stream.ready:
                ready = True
                on_ready()
            if checked:
                sink.sendall(view[:checked])
            pending = end - checked
            buffer[:pending] = view[checked:end]
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def splice_until_end(source: socket.socket, sink: socket.socket) -> None:
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
