"""The client side of a sandboxed kernel's channels is private, encrypted and authenticated.

Clients reach the kernel over `ipc://` unix sockets in a 0700 directory; the supervisor splices
bytes to the kernel's TCP ports on the sandbox's own loopback. CurveZMQ runs end to end between
client and kernel, so the kernel must refuse clients without its server key, messages must still
carry a valid HMAC signature, and nothing readable may pass through the host socket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.session import Session
from zmq.utils.monitor import recv_monitor_message

from conftest import Kernel

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
TCP_LISTEN = "0A"
NO_REPLY_WAIT = 3.0


def sandbox_ports(kernel: Kernel) -> set[int]:
    """The TCP ports the kernel listens on inside its sandbox, from its own connection file."""
    ports = kernel.value(
        "import json; print(json.dumps([v for k, v in json.load(open('/run/hopx/kernel.json'))"
        ".items() if k.endswith('_port')]))"
    )
    assert len(ports) == len(CHANNELS)
    return set(ports)


def channel_path(kernel: Kernel, channel: str) -> Path:
    """The host unix socket path of `channel`, as jupyter_client builds `ipc://` endpoints."""
    info = kernel.km.get_connection_info()
    return Path(f"{info['ip']}-{info[f'{channel}_port']}")


# -- 1. what the manager holds ----------------------------------------------------------------


def test_connection_info_is_ipc_with_curve_keys_in_a_private_directory(
    start_kernel: Callable[..., Kernel],
) -> None:
    """The manager's connection info is ipc + CurveZMQ; sockets and connection file are private."""
    kernel = start_kernel()
    info = kernel.km.get_connection_info()
    assert info["transport"] == "ipc"
    public, secret = info["curve_publickey"], info["curve_secretkey"]
    assert isinstance(public, str)
    assert len(public) == 40
    assert zmq.curve_public(secret.encode()) == public.encode()

    paths = [channel_path(kernel, channel) for channel in CHANNELS]
    directory = paths[0].parent
    assert all(p.parent == directory for p in paths)
    assert directory == kernel.state_dir
    dir_stat = directory.stat()
    assert stat.S_IMODE(dir_stat.st_mode) == 0o700
    assert dir_stat.st_uid == os.geteuid()
    for path in paths:
        sock_stat = path.stat()
        assert stat.S_ISSOCK(sock_stat.st_mode), path
        assert stat.S_IMODE(sock_stat.st_mode) == 0o600, path
        assert sock_stat.st_uid == os.geteuid(), path

    connection_file = Path(kernel.km.connection_file)
    assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
    on_disk = kernel.km.connection_file
    loaded = BlockingKernelClient(connection_file=on_disk)
    loaded.load_connection_file()
    assert loaded.transport == "ipc"
    assert loaded.curve_publickey == public.encode()
    assert loaded.curve_secretkey == secret.encode()


# -- 2, 3. who gets an answer -----------------------------------------------------------------


def kernel_info_probe(
    kernel: Kernel,
    *,
    serverkey: bytes | None,
    keypair: tuple[bytes, bytes] | None = None,
    hmac_key: bytes | None = None,
    wait: float = NO_REPLY_WAIT,
) -> tuple[dict[str, Any] | None, set[int]]:
    """Send one kernel_info_request on a fresh shell DEALER; returns the reply (or None) and the
    socket monitor events seen. `serverkey=None` means a plaintext (NULL mechanism) client.

    A reply is awaited for `wait` seconds after the handshake ended (or after sending, if it never
    ends), so a slow handshake on a loaded machine does not pass for "no answer"."""
    km = kernel.km
    session = Session(key=km.session.key if hmac_key is None else hmac_key)
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        if serverkey is not None:
            public, secret = keypair or zmq.curve_keypair()
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = serverkey
        monitor = sock.get_monitor_socket()
        sock.connect(f"ipc://{channel_path(kernel, 'shell')}")
        session.send(sock, "kernel_info_request")
        reply = None
        events: set[int] = set()
        handshake_ended = {
            zmq.EVENT_HANDSHAKE_SUCCEEDED,
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.EVENT_HANDSHAKE_FAILED_AUTH,
        }
        deadline = time.monotonic() + wait
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while reply is None and (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000)))
            while monitor.poll(0):
                event = recv_monitor_message(monitor)["event"]
                if event in handshake_ended and not events & handshake_ended:
                    deadline = time.monotonic() + wait
                events.add(event)
            if sock in ready:
                _, message = session.feed_identities(sock.recv_multipart())
                reply = session.deserialize(message)
        sock.disable_monitor()
        return reply, events
    finally:
        context.destroy(linger=0)


def test_wrong_or_missing_curve_keys_get_no_answer(start_kernel: Callable[..., Kernel]) -> None:
    """Only a client that knows the kernel's Curve server key completes the handshake; a wrong
    server key or a plaintext client is never answered. The same probe with the right key is."""
    kernel = start_kernel()
    server_key = kernel.km.curve_publickey
    impostor_key, _ = zmq.curve_keypair()

    reply, events = kernel_info_probe(kernel, serverkey=impostor_key)
    assert reply is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
    assert zmq.EVENT_CONNECTED in events  # the socket was reachable: the handshake is what failed

    reply, events = kernel_info_probe(kernel, serverkey=None)
    assert reply is None
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events

    # Positive controls: the probe itself, with the keys from the connection info, and the
    # manager's own client.
    keypair = (kernel.km.curve_publickey, kernel.km.curve_secretkey)
    reply, events = kernel_info_probe(kernel, serverkey=server_key, keypair=keypair, wait=30)
    assert reply is not None
    assert reply["msg_type"] == "kernel_info_reply"
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED in events
    assert kernel.kc.kernel_info(reply=True, timeout=30)["content"]["status"] == "ok"


def test_right_curve_keys_with_a_wrong_hmac_key_get_no_answer(
    start_kernel: Callable[..., Kernel],
) -> None:
    """CurveZMQ alone does not authorise a client: a message signed with another HMAC key is
    dropped by the kernel, while the same request signed with the session key is answered."""
    kernel = start_kernel()
    keypair = (kernel.km.curve_publickey, kernel.km.curve_secretkey)
    server_key = kernel.km.curve_publickey

    reply, events = kernel_info_probe(
        kernel, serverkey=server_key, keypair=keypair, hmac_key=b"not-the-session-key"
    )
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED in events  # the transport was fine
    assert reply is None

    reply, _ = kernel_info_probe(kernel, serverkey=server_key, keypair=keypair, wait=30)
    assert reply is not None
    assert reply["content"]["status"] == "ok"


# -- 4. no TCP listener on the host -----------------------------------------------------------


def tcp_listeners(net_dir: str) -> dict[int, tuple[str, int]]:
    """Listening TCP sockets of one network namespace: inode -> (local address hex, port)."""
    found = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(net_dir, name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == TCP_LISTEN:
                address, port = fields[1].split(":")
                found[int(fields[9])] = (address, int(port, 16))
    return found


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat_line = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def socket_inodes(pids: set[int]) -> dict[int, int]:
    """Socket inode -> pid for every socket the processes `pids` hold open."""
    inodes = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes[int(target[8:-1])] = pid
    return inodes


def test_nothing_listens_on_tcp_in_the_host_network_namespace(
    start_kernel: Callable[..., Kernel],
) -> None:
    """The kernel's TCP listeners exist only in the sandbox's network namespace: none of the
    sandbox's sockets, and none of its ports, shows up among the host's listeners."""
    before = tcp_listeners("/proc/self/net")
    kernel = start_kernel()
    ports = sandbox_ports(kernel)
    after = tcp_listeners("/proc/self/net")

    tree = process_tree(kernel.supervisor_pid)
    owned = socket_inodes(tree)
    new = {inode: where for inode, where in after.items() if inode not in before}
    assert {inode: new[inode] for inode in new if inode in owned} == {}
    assert not [where for where in after.values() if where[1] in ports]

    # Control: the same reading, from inside the sandbox's namespace, finds the kernel's five
    # channel listeners (and any other the kernel opened), held by processes of the sandbox. So
    # the host reading above would have seen them.
    (kernel_pid, *_) = [
        pid for pid in tree if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    inside = tcp_listeners(f"/proc/{kernel_pid}/net")
    assert {port for inode, (_, port) in inside.items() if inode in owned} >= ports


def test_channel_ports_cannot_be_taken_by_outgoing_connections(
    start_kernel: Callable[..., Kernel],
) -> None:
    """The kernel's fixed channel ports lie outside the sandbox network namespace's ephemeral port
    range (or are reserved there). The relay starts connecting to them while the kernel is still
    starting; a connection given one of them as its source port (or a retried connect that
    self-connects, source port == destination port) holds the port, and the kernel then dies at
    start with `Address already in use (addr='tcp://127.0.0.1:50104')`."""
    kernel = start_kernel()
    ports = sandbox_ports(kernel)
    seen = kernel.value(
        "import json; print(json.dumps({"
        "'range': open('/proc/sys/net/ipv4/ip_local_port_range').read().split(), "
        "'reserved': open('/proc/sys/net/ipv4/ip_local_reserved_ports').read().strip()}))"
    )
    low, high = map(int, seen["range"])
    reserved: set[int] = set()
    for part in filter(None, seen["reserved"].split(",")):
        first, _, last = part.partition("-")
        reserved.update(range(int(first), int(last or first) + 1))
    exposed = sorted(p for p in ports if low <= p <= high and p not in reserved)
    assert exposed == [], f"ephemeral range {low}-{high} holds channel ports {exposed}"


# -- 5. what crosses the host socket ------------------------------------------------------------

ZMTP_SIGNATURE = b"\xff" + b"\0" * 7 + b"\x01\x7f"


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_channel_greets_with_the_curve_mechanism(
    start_kernel: Callable[..., Kernel], channel: str
) -> None:
    """Raw bytes from the host socket: the kernel's ZMTP 3 greeting, relayed unchanged, announces
    the CURVE mechanism (a plaintext kernel would announce NULL)."""
    kernel = start_kernel()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(str(channel_path(kernel, channel)))
        # Our signature and version 3.1 only: libzmq then sends its whole greeting and waits for
        # our mechanism, instead of hanging up on a mismatch before we have read its greeting.
        raw.sendall(ZMTP_SIGNATURE + bytes([3, 1]))
        greeting = read_exactly(raw, 64)
    assert len(greeting) == 64, greeting
    assert greeting[0] == 0xFF
    assert greeting[9] == 0x7F
    assert greeting[10] == 3  # ZMTP major version
    assert greeting[12:32] == b"CURVE".ljust(20, b"\0")


class RecordingProxy:
    """Unix sockets at `<directory>/ch-N` that pass every connection on to the kernel's socket of
    the same number and record all bytes, in both directions."""

    def __init__(self, directory: Path, upstream_prefix: str, numbers: list[int]) -> None:
        self.prefix = str(directory / "ch")
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._listeners = []
        for number in numbers:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(f"{self.prefix}-{number}")
            listener.listen(8)
            self._listeners.append(listener)
            self._spawn(self._accept, listener, f"{upstream_prefix}-{number}")

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, upstream_path: str) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(upstream_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:
                    self.recorded += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def recording_proxy(tmp_path: Path) -> Iterator[Callable[[Kernel], RecordingProxy]]:
    proxies: list[RecordingProxy] = []

    def make(kernel: Kernel) -> RecordingProxy:
        info = kernel.km.get_connection_info()
        numbers = [info[f"{channel}_port"] for channel in CHANNELS]
        proxy = RecordingProxy(tmp_path, info["ip"], numbers)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def test_session_traffic_on_the_host_socket_is_not_plaintext(
    start_kernel: Callable[..., Kernel], recording_proxy: Callable[[Kernel], RecordingProxy]
) -> None:
    """A whole session through a recording proxy on the host side: code, output and message
    headers never appear in the clear, although the session works."""
    kernel = start_kernel()
    proxy = recording_proxy(kernel)
    info = kernel.km.get_connection_info(session=True)
    info["ip"] = proxy.prefix
    for key in ("curve_publickey", "curve_secretkey"):
        info[key] = info[key].encode()
    client = BlockingKernelClient(**info)
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        outputs: list[dict[str, Any]] = []
        reply = client.execute_interactive(
            "print('plain' + 'text-' * 3 + 'marker')",
            timeout=60,
            output_hook=outputs.append,
        )
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok"
    assert any(
        m["msg_type"] == "stream" and m["content"]["text"] == "plaintext-text-text-marker\n"
        for m in outputs
    )
    recorded = bytes(proxy.recorded)
    assert len(recorded) > 1000  # the proxy saw the session
    assert b"CURVE" in recorded
    for plaintext in (b"plain", b"text-text", b"execute_request", b"kernel_info", b"msg_id"):
        assert plaintext not in recorded, plaintext
