"""A kernel cannot make its client allocate by what it sends: the relay checks the ZMTP framing
of everything that comes out of the sandbox (runtime.zmtp) and stops a kernel that sends a
malformed greeting or frame, or a frame over its bound, before its client has allocated for it.

The attacks run in a real sandboxed ipykernel that turns hostile: the kernel's process replaces
itself with a server that takes over the kernel's ports and answers each new connection with a
header announcing an 8 GiB frame, then sends 512 MiB of it. libzmq allocates a frame's whole
announced size as soon as it has read the header, before CurveZMQ has checked anything, and
fills it as the bytes come. The clients are a jupyter_client-like DEALER with CurveZMQ keys in a
process of its own, and the test process itself, whose KernelManager keeps a control connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from traitlets import TraitError

from conftest import Kernel, assert_no_leaks, wait_until
from hopx_kernel.provisioner import HopxProvisioner
from runtime.spec import SandboxSpec
from runtime.units import LimitError, parse_size
from server_harness import Server

MiB = 1024**2
GiB = 1024**3
ANNOUNCED = 8 * GiB
SENT_PER_CONNECTION = 512 * MiB
# What a client may grow by that is not the attack: libzmq's buffers, a CurveZMQ handshake.
CLIENT_GROWTH_LIMIT = 64 * MiB
STOP_TIMEOUT = 30.0

ZMTP3_GREETING = (
    b"\xff" + bytes(8) + b"\x7f" + bytes([3, 1]) + b"CURVE".ljust(20, b"\0") + bytes(32)
)
# How the hostile kernel opens each connection, and what the stop detail then says.
OPENINGS = {
    # A valid greeting, as ipykernel's own, then a command frame (flags COMMAND | LONG).
    "zmtp3-command": (
        ZMTP3_GREETING + bytes([0x06]) + struct.pack(">Q", ANNOUNCED),
        f"a command frame of {ANNOUNCED} bytes (8.0 GiB); commands are limited to 65536 bytes",
    ),
    # A malformed greeting: a ZMTP 1.0 frame header announcing 8 GiB where the signature
    # belongs (bit 0 of its tenth octet is clear, which tells libzmq "ZMTP 1.0, no security").
    # libzmq 4.3's CurveZMQ clients hang up on it; the relay must not pass it on at all.
    "zmtp1-frame": (
        b"\xff" + struct.pack(">Q", ANNOUNCED + 1) + b"\x00",
        "not a ZMTP 3 signature",
    ),
}

# The kernel's process becomes this server (OPENING and BUDGET are filled in).
HOSTILE_SERVER = """
import json, socket, threading, time
info = json.load(open("/run/hopx/kernel.json"))
ports = [v for k, v in info.items() if k.endswith("_port")]
zeros = bytes(1 << 20)

def serve(conn):
    try:
        conn.sendall(OPENING)
        for _ in range(BUDGET):
            conn.sendall(zeros)
        conn.recv(1)
    except OSError:
        pass

def listen(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

for port in ports:
    threading.Thread(target=listen, args=(port,), daemon=True).start()
time.sleep(3600)
"""

# A client as jupyter_client makes one: a DEALER with CurveZMQ keys for the kernel's public key.
# It connects when told to (a line on stdin), so that its size before can be measured.
VICTIM = """
import sys, zmq
endpoint, server_key = sys.argv[1], sys.argv[2].encode()
sock = zmq.Context().socket(zmq.DEALER)
sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
sock.curve_serverkey = server_key
sock.linger = 0
print("ready", flush=True)
sys.stdin.readline()
sock.connect(endpoint)
print("connected", flush=True)
sys.stdin.readline()
"""


def memory_kib(pid: int | str, field: str) -> int:
    """A figure of /proc/PID/status in KiB: VmRSS (now) or VmHWM (peak)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


class RssWatch:
    """The largest resident size of a process while the watch runs (VmHWM would be the peak of
    the process's whole life: the test session's, the server's)."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.before = self.peak = memory_kib(pid, "VmRSS") * 1024
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, memory_kib(self.pid, "VmRSS") * 1024)

    def stop(self) -> int:
        """How much it grew, in bytes."""
        self._done.set()
        self._thread.join()
        return self.peak - self.before


class Victim:
    def __init__(self, endpoint: str, server_key: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", VICTIM, endpoint, server_key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n"
        self.before = memory_kib(self.process.pid, "VmRSS") * 1024

    def connect(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("connect\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "connected\n"

    def growth(self) -> int:
        """How much its peak resident size grew since it was ready, in bytes."""
        return memory_kib(self.process.pid, "VmHWM") * 1024 - self.before

    def close(self) -> None:
        self.process.kill()
        self.process.communicate()


@pytest.fixture
def victims() -> Iterator[list[Victim]]:
    started: list[Victim] = []
    yield started
    for victim in started:
        victim.close()


def hostile_code(opening: bytes) -> str:
    """A cell that makes the kernel's process HOSTILE_SERVER, opening connections with
    `opening`."""
    server = HOSTILE_SERVER.replace("OPENING", repr(opening)).replace(
        "BUDGET", str(SENT_PER_CONNECTION // MiB)
    )
    return f"import os, sys; os.execv(sys.executable, [sys.executable, '-c', {server!r}])"


def turn_hostile(kernel: Kernel, opening: bytes) -> None:
    """Have the kernel turn hostile; the test's own client goes away first, the manager's
    control connection stays."""
    kernel.kc.execute(hostile_code(opening))
    kernel.kc.stop_channels()


@pytest.mark.parametrize("opening", OPENINGS)
def test_a_frame_announcing_8_gib_stops_the_kernel_before_its_clients_grow(
    start_kernel: Callable[..., Kernel], victims: list[Victim], runtime_dir: Path, opening: str
) -> None:
    """The hostile kernel answers every connection with a header announcing 8 GiB and sends
    512 MiB after it. Neither the victim process nor the test process (the kernel's owner) grows
    by 64 MiB; the kernel is stopped with reason "protocol", whose detail says what it sent and
    the bound; both clients stay up, and nothing of the sandbox is left."""
    sent, expected = OPENINGS[opening]
    kernel = start_kernel()
    info = kernel.km.get_connection_info()
    victim = Victim(f"ipc://{info['ip']}-{info['shell_port']}", str(info["curve_publickey"]))
    victims.append(victim)
    owner = RssWatch()
    turn_hostile(kernel, sent)
    victim.connect()

    stopped = wait_until(lambda: not kernel.km.is_alive(), STOP_TIMEOUT)
    owner_growth = owner.stop()
    print(
        f"\n  {opening}: the victim grew by {victim.growth() / MiB:.1f} MiB (peak), the owner "
        f"by {owner_growth / MiB:.1f} MiB; kernel stopped: {stopped}"
    )
    assert victim.process.poll() is None
    assert victim.growth() < CLIENT_GROWTH_LIMIT
    assert owner_growth < CLIENT_GROWTH_LIMIT
    assert stopped
    provisioner = kernel.km.provisioner
    assert isinstance(provisioner, HopxProvisioner)
    assert provisioner.last_exit_reason == "protocol"
    assert provisioner.supervisor is not None
    detail = provisioner.supervisor.exit_detail
    print(f"  stop detail: {detail}")
    assert re.match(r"on its (shell|control) channel it sent ", detail), detail
    assert expected in detail
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_a_hostile_kernel_of_a_jupyter_server_is_stopped_and_the_server_stays_up(
    server: Server,
) -> None:
    """The same attack on a kernel of a real jupyter_server with a websocket client: the
    server's own connections to the kernel (its activity watch on IOPub, the websocket's
    channels) reconnect to the hostile kernel. The server grows by less than 64 MiB, logs the
    stop, emits a "stopped" event with reason "protocol" naming the 8 GiB frame, restarts the
    kernel as it restarts a crashed one, and keeps answering."""
    events = server.events()
    kernel_id = server.start_kernel()
    websocket = server.connect(kernel_id)
    assert websocket.value("print(1)") == 1
    watch = RssWatch(server.process.pid)
    websocket.send_execute(hostile_code(OPENINGS["zmtp3-command"][0]))
    stopped = events.wait_for_hopx("stopped", kernel_id, STOP_TIMEOUT, reason="protocol")
    growth = watch.stop()
    print(f"\n  the server grew by {growth / MiB:.1f} MiB; event: {stopped}")
    assert server.process.poll() is None
    assert growth < CLIENT_GROWTH_LIMIT
    assert stopped is not None
    assert f"a command frame of {ANNOUNCED} bytes" in stopped["msg"]
    assert server.status_ok()
    restarted = events.wait_for(
        lambda e: (
            e.get("action") == "started"
            and e.get("kernel_id") == kernel_id
            and e["received_at"] >= stopped["received_at"]
        ),
        STOP_TIMEOUT,
    )
    assert restarted is not None
    assert server.connect(kernel_id).value("print(6 * 7)") == 42
    assert "broke the ZeroMQ protocol" in server.log()


# -- the bound on a legitimate kernel's frames ---------------------------------------------------

# Displays {size} bytes of text in one output (one frame on IOPub) and prints its digest.
DISPLAY = """
import hashlib
from IPython.display import display
data = '0123456789abcdef' * ({size} // 16)
display({{'text/plain': data}}, raw=True)
print(hashlib.sha256(data.encode()).hexdigest())
"""


def display_arrives_intact(kernel: Kernel, size: int) -> bool:
    """Have the kernel display `size` bytes of text; whether the text arrived unchanged."""
    content, digest = kernel.run(DISPLAY.format(size=size), timeout=60)
    assert content["status"] == "ok", content
    texts = [
        str(m["content"]["data"]["text/plain"])
        for m in kernel.outputs
        if m["msg_type"] == "display_data"
    ]
    return len(texts) == 1 and hashlib.sha256(texts[0].encode()).hexdigest() == digest.strip()


def test_outputs_of_tens_of_megabytes_pass(start_kernel: Callable[..., Kernel]) -> None:
    """Two outputs of 48 MB each, one frame each, arrive intact under the default bound and the
    kernel keeps working."""
    kernel = start_kernel()
    for _ in range(2):
        assert display_arrives_intact(kernel, 48 * 1000**2)
    assert kernel.value("print(6 * 7)") == 42
    assert kernel.km.is_alive()


def test_an_output_over_max_frame_size_stops_the_kernel(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    """With max_frame_size = '1M', an output of half a megabyte arrives; one of two megabytes
    does not reach the client: the kernel is stopped (reason "protocol") with a detail naming
    the IOPub channel, the frame's size, the bound and the setting."""
    kernel = start_kernel(max_frame_size="1M")
    assert display_arrives_intact(kernel, 500_000)
    kernel.kc.execute(DISPLAY.format(size=2_000_000))
    assert wait_until(lambda: not kernel.km.is_alive(), STOP_TIMEOUT)
    provisioner = kernel.km.provisioner
    assert isinstance(provisioner, HopxProvisioner)
    assert provisioner.last_exit_reason == "protocol"
    assert provisioner.supervisor is not None
    detail = provisioner.supervisor.exit_detail
    assert detail.startswith("on its iopub channel it sent a message frame of "), detail
    assert "frames are limited to 1048576 bytes (1.0 MiB, the max_frame_size setting)" in detail
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


@pytest.mark.parametrize("value", [0, "0", "512K", 1000])
def test_max_frame_size_has_no_off_switch_and_a_floor(value: object) -> None:
    """0 is not "no limit" here, and a bound too small for ordinary messages is refused, with
    the setting's name and an example, by the provisioner and by the sandbox spec."""
    with pytest.raises(TraitError, match=r"^max_frame_size .* use e\.g\. '256M'$"):
        HopxProvisioner(kernel_id="k", kernel_spec=None, max_frame_size=value)
    spec = {
        "sandbox_id": "s",
        "kernel_id": "k",
        "argv": ["python"],
        "env": {},
        "connection_json": "{}",
        "channels": [],
        "state_dir": "/nonexistent",
        "max_frame_size": parse_size("max_frame_size", value),
    }
    with pytest.raises(LimitError, match=r"^max_frame_size .* use e\.g\. '256M'$"):
        SandboxSpec.from_json(json.dumps(spec))
    accepted = HopxProvisioner(kernel_id="k", kernel_spec=None, max_frame_size="1M")
    assert accepted.max_frame_size == 1024**2
