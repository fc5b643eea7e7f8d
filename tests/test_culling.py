"""The timeout policy in a real jupyter_server: idle kernels are warned about and culled on time,
busy ones only at their max lifetime (or for idleness with cull_busy), activity and keep-alive
requests push the cull back, kills by hand through the REST API and `jupyter hopx kill` stop a
kernel for good, and the `/hopx/api` endpoints need the token and reject bad requests.

Each cull's delay (when its event reached a subscriber, minus the deadline it was due at: the
warning's cull_at or the REST model's next_cull.at; for a kill by hand, the moment it was asked
for) is checked against generous bounds only, and recorded as a JSON line in the file named by
$HOPX_CULL_DELAYS, if set, for looking at across runs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_no_leaks, hopx_processes, parent_pid, wait_until
from server_harness import EventStream, KernelSocket, Server, event_time

# Generous bounds for how late a cull may be: this is not a benchmark.
MAX_DELAY = 10.0
# Longer than the kernel restarter's poll interval (3 s): a restart would show within it.
RESTART_WINDOW = 4.0
# The extend endpoint's 400 messages show a valid body.
EXAMPLE_BODY = 'e.g. {"seconds": 600}'


def record_delay(reason: str, delay: float) -> None:
    """Append one measured delay to $HOPX_CULL_DELAYS (JSON lines), if that is set."""
    path = os.environ.get("HOPX_CULL_DELAYS")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    with open(path, "a") as f:
        f.write(json.dumps({"test": test, "reason": reason, "delay": round(delay, 3)}) + "\n")


def cull_delay(event: dict[str, Any] | None, deadline: float, reason: str) -> float:
    """How long after `deadline` (seconds since the epoch) the event reached us; recorded, and
    checked against generous bounds only."""
    assert event is not None
    delay = float(event["received_at"]) - deadline
    record_delay(reason, delay)
    assert 0 <= delay < MAX_DELAY, (reason, delay)
    return delay


def listen(events: EventStream, seconds: float) -> None:
    """Wait `seconds` while receiving events, so each is timestamped when it arrives."""
    events.wait_for(lambda _: False, seconds)


def kernel_ids(server: Server) -> list[str]:
    response = server.api("GET", "/api/kernels")
    assert response.status_code == 200, response.text
    return [k["id"] for k in response.json()]


def sandbox(server: Server, kernel_id: str) -> dict[str, Any]:
    """GET /hopx/api/sandboxes/<kernel_id>, which must answer 200."""
    response = server.api("GET", f"/hopx/api/sandboxes/{kernel_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def server_sandboxes(server: Server) -> list[str]:
    """`hopx_processes()` started by this test's server (other suites may run on the host)."""
    found = []
    for process in hopx_processes():
        pid = int(process.split(":", 1)[0])
        while pid > 1 and pid != server.process.pid:
            pid = parent_pid(pid)
        if pid == server.process.pid:
            found.append(process)
    return found


def started_count(events: EventStream, kernel_id: str) -> int:
    return sum(1 for e in events.hopx(kernel_id) if e["action"] == "started")


def assert_not_restarted(server: Server, events: EventStream, *kernels: str) -> None:
    """Over longer than the restarter's poll interval no kernel of `kernels` gets a new sandbox
    or comes back to the server's list."""
    listen(events, RESTART_WINDOW)
    assert all(started_count(events, k) == 1 for k in kernels), events.hopx()
    assert not set(kernels) & set(kernel_ids(server))
    assert not server_sandboxes(server)


def start_busy(ks: KernelSocket, code: str = "import time; time.sleep(120)") -> str:
    """Send a silent long-running cell and wait until the kernel reports it busy."""
    msg_id = ks.send_execute(code)
    assert ks.wait_busy(msg_id, 30), ks.received[-10:]
    return msg_id


def stopped_cell(ks: KernelSocket, msg_id: str) -> dict[str, Any]:
    """The execute_reply of the cell that was running when its kernel was stopped."""
    assert ks.wait_for(lambda _: bool(ks.replies_to(msg_id, "execute_reply")), 30), ks.received
    (reply,) = ks.replies_to(msg_id, "execute_reply")
    content: dict[str, Any] = reply["content"]
    assert content["status"] == "error", content
    assert content["ename"] == "SandboxStopped", content
    # The same error is shown to the user on iopub.
    errors = ks.replies_to(msg_id, "error")
    assert [e["content"]["ename"] for e in errors] == ["SandboxStopped"], errors
    return content


def test_idle_kernel_is_warned_about_then_culled(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """An idle kernel with idle_timeout 3s and warn_before 1s gets a cull_warning event whose
    cull_at is still ahead, then is culled (a `culled` event, reason "idle") within generous
    bounds of that time; it leaves the server's kernel list, nothing of its sandbox is left, and
    it is not restarted."""
    name = make_kernelspec("hopx-idle", idle_timeout="3s", warn_before="1s", cull_interval="1s")
    events = server.events()
    kernel_id = server.start_kernel(name)
    assert events.wait_for_hopx("started", kernel_id, 30)
    assert server_sandboxes(server)

    warning = events.wait_for_hopx("cull_warning", kernel_id, 30)
    assert warning is not None, server.log()[-3000:]
    assert warning["reason"] == "idle"
    cull_at = event_time(warning["cull_at"])
    assert cull_at > warning["received_at"], warning
    assert 0 < warning["seconds_left"] <= 1.5, warning
    assert kernel_id in kernel_ids(server)

    culled = events.wait_for_hopx("culled", kernel_id, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "idle"
    assert culled["received_at"] > warning["received_at"]
    cull_delay(culled, cull_at, "idle")

    assert wait_until(lambda: kernel_id not in kernel_ids(server), 10)
    assert wait_until(lambda: not server_sandboxes(server), 10), server_sandboxes(server)
    assert_no_leaks(runtime_dir)
    assert_not_restarted(server, events, kernel_id)


def test_busy_silent_kernel_is_culled_only_at_max_lifetime(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """A kernel busy with a silent cell is not culled for idleness although its idle_timeout
    (3s) passes long before: its only deadline is max_lifetime (8s), where it is culled with
    reason "max_lifetime". The running cell ends with a SandboxStopped error naming
    max_lifetime, and nothing is left behind."""
    name = make_kernelspec(
        "hopx-busy",
        idle_timeout="3s",
        max_lifetime="8s",
        warn_before="2s",
        cull_interval="1s",
    )
    events = server.events()
    kernel_id = server.start_kernel(name)
    ks = server.connect(kernel_id)
    msg_id = start_busy(ks)

    assert wait_until(lambda: sandbox(server, kernel_id)["state"] == "busy", 10)
    model = sandbox(server, kernel_id)
    assert model["idle_since"] is None
    assert model["next_cull"]["reason"] == "max_lifetime"
    lifetime_end = event_time(model["next_cull"]["at"])
    assert lifetime_end == pytest.approx(event_time(model["started"]) + 8, abs=1e-3)

    warning = events.wait_for_hopx("cull_warning", kernel_id, 30, reason="max_lifetime")
    assert warning is not None, server.log()[-3000:]
    assert event_time(warning["cull_at"]) == pytest.approx(lifetime_end, abs=1e-3)
    # Well past the idle timeout, still there, never culled for idleness.
    assert warning["received_at"] > event_time(model["started"]) + 3 + 1
    assert kernel_id in kernel_ids(server)
    assert sandbox(server, kernel_id)["state"] == "busy"

    culled = events.wait_for_hopx("culled", kernel_id, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "max_lifetime"
    cull_delay(culled, lifetime_end, "max_lifetime")

    error = stopped_cell(ks, msg_id)
    assert "max_lifetime" in error["evalue"], error
    assert "maximum lifetime of 8s" in error["evalue"], error
    assert wait_until(lambda: kernel_id not in kernel_ids(server), 10)
    assert_no_leaks(runtime_dir)
    assert_not_restarted(server, events, kernel_id)


def test_activity_keeps_a_kernel_alive_until_it_stops(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """With idle_timeout 3s, a short cell about every second for 6 s keeps the kernel alive:
    each time the REST model's next cull (reason "idle") has moved later. Once the cells stop,
    the kernel is culled for idleness about 3 s after the last one."""
    name = make_kernelspec("hopx-active", idle_timeout="3s", warn_before="1s", cull_interval="1s")
    events = server.events()
    kernel_id = server.start_kernel(name)
    ks = server.connect(kernel_id)

    first_cull = event_time(sandbox(server, kernel_id)["next_cull"]["at"])
    previous = first_cull
    until = time.monotonic() + 6
    rounds = 0
    while time.monotonic() < until:
        content, _ = ks.execute("x = 1")
        assert content["status"] == "ok"
        next_cull = sandbox(server, kernel_id)["next_cull"]
        assert next_cull["reason"] == "idle"
        assert event_time(next_cull["at"]) > previous, (next_cull, previous)
        previous = event_time(next_cull["at"])
        rounds += 1
        listen(events, 1.0)
    # Alive well past the deadline it had before the cells, which has moved by more than the
    # idle timeout.
    assert rounds >= 3
    assert time.time() > first_cull + 2
    assert previous > first_cull + 3
    assert kernel_id in kernel_ids(server)
    assert not [e for e in events.hopx(kernel_id) if e["action"] == "culled"]

    deadline = event_time(sandbox(server, kernel_id)["next_cull"]["at"])
    culled = events.wait_for_hopx("culled", kernel_id, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "idle"
    cull_delay(culled, deadline, "idle")
    assert wait_until(lambda: kernel_id not in kernel_ids(server), 10)
    assert_no_leaks(runtime_dir)


def test_cull_busy_culls_a_busy_kernel_for_idleness(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """With cull_busy true a kernel busy with a silent cell counts as idle: it is culled with
    reason "idle" about idle_timeout (2s) after its last output, and the running cell ends with a
    SandboxStopped error saying it was idle."""
    name = make_kernelspec(
        "hopx-cull-busy",
        idle_timeout="2s",
        cull_busy=True,
        warn_before="1s",
        cull_interval="1s",
    )
    events = server.events()
    kernel_id = server.start_kernel(name)
    ks = server.connect(kernel_id)
    msg_id = start_busy(ks)
    model = sandbox(server, kernel_id)
    assert model["next_cull"]["reason"] == "idle"
    deadline = event_time(model["next_cull"]["at"])

    culled = events.wait_for_hopx("culled", kernel_id, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "idle"
    cull_delay(culled, deadline, "idle")

    error = stopped_cell(ks, msg_id)
    assert "idle beyond its idle timeout of 2s" in error["evalue"], error
    assert wait_until(lambda: kernel_id not in kernel_ids(server), 10)
    assert_no_leaks(runtime_dir)


def test_extend_keeps_a_kernel_alive_but_not_past_max_lifetime(
    server: Server, make_kernelspec: Callable[..., str], runtime_dir: Path
) -> None:
    """POST .../extend {"seconds": 10} keeps a kernel with idle_timeout 2s alive past 2 s (still
    listed 4 s later), answers capped false with the next cull about 10 s ahead, emits an
    `extended` event, and the kernel is culled for idleness at that time. Asking for 10**6 s on a
    kernel with max_lifetime 6s answers capped true with the max lifetime as the next cull, and
    the kernel is culled then (reason "max_lifetime", not "idle")."""
    idle = make_kernelspec("hopx-extend", idle_timeout="2s", warn_before="1s", cull_interval="1s")
    capped = make_kernelspec(
        "hopx-extend-capped",
        idle_timeout="2s",
        max_lifetime="6s",
        warn_before="1s",
        cull_interval="1s",
    )
    events = server.events()
    kept = server.start_kernel(idle)
    short = server.start_kernel(capped)

    asked = time.time()
    response = server.api("POST", f"/hopx/api/sandboxes/{kept}/extend", json={"seconds": 10})
    assert response.status_code == 200, response.text
    model = response.json()
    assert model["capped"] is False
    assert model["next_cull"]["reason"] == "idle"
    kept_until = event_time(model["next_cull"]["at"])
    assert asked + 10 - 1 <= kept_until <= time.time() + 10 + 1, (model, asked)
    assert event_time(model["extended_until"]) == pytest.approx(kept_until, abs=1e-3)

    response = server.api("POST", f"/hopx/api/sandboxes/{short}/extend", json={"seconds": 10**6})
    assert response.status_code == 200, response.text
    model = response.json()
    assert model["capped"] is True
    assert model["next_cull"]["reason"] == "max_lifetime"
    lifetime_end = event_time(model["next_cull"]["at"])
    assert lifetime_end == pytest.approx(event_time(model["started"]) + 6, abs=1e-3)

    extended = events.wait_for_hopx("extended", kept, 10)
    assert extended is not None
    assert extended["capped"] is False
    assert event_time(extended["cull_at"]) == pytest.approx(kept_until, abs=1e-3)
    extended = events.wait_for_hopx("extended", short, 10)
    assert extended is not None
    assert extended["capped"] is True
    assert event_time(extended["cull_at"]) == pytest.approx(lifetime_end, abs=1e-3)

    listen(events, max(0.0, asked + 4 - time.time()))
    assert kept in kernel_ids(server)
    assert not [e for e in events.hopx(kept) if e["action"] == "culled"]

    culled = events.wait_for_hopx("culled", short, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "max_lifetime"
    cull_delay(culled, lifetime_end, "max_lifetime")

    culled = events.wait_for_hopx("culled", kept, 30)
    assert culled is not None, server.log()[-3000:]
    assert culled["reason"] == "idle"
    cull_delay(culled, kept_until, "idle")
    assert wait_until(lambda: not {kept, short} & set(kernel_ids(server)), 10)
    assert_no_leaks(runtime_dir)


def test_kill_through_the_rest_api(server: Server, runtime_dir: Path) -> None:
    """DELETE /hopx/api/sandboxes/<id> answers 204 once the kernel is gone: a `killed` event
    (reason "manual"), off the server's list, not restarted, nothing left. A busy kernel's cell
    ends with a SandboxStopped error saying it was killed by hand. An unknown kernel id is a 404
    for GET, DELETE and extend."""
    events = server.events()
    idle = server.start_kernel()
    busy = server.start_kernel()
    ks = server.connect(busy)
    msg_id = start_busy(ks)

    for kernel_id in (idle, busy):
        asked = time.time()
        response = server.api("DELETE", f"/hopx/api/sandboxes/{kernel_id}")
        assert response.status_code == 204, response.text
        assert kernel_id not in kernel_ids(server)
        assert server.api("GET", f"/hopx/api/sandboxes/{kernel_id}").status_code == 404
        killed = events.wait_for_hopx("killed", kernel_id, 10)
        assert killed is not None, server.log()[-3000:]
        assert killed["reason"] == "manual"
        cull_delay(killed, asked, "manual")

    error = stopped_cell(ks, msg_id)
    assert "killed by hand" in error["evalue"], error
    assert_not_restarted(server, events, idle, busy)
    assert_no_leaks(runtime_dir)

    unknown = str(uuid.uuid4())
    assert server.api("GET", f"/hopx/api/sandboxes/{unknown}").status_code == 404
    assert server.api("DELETE", f"/hopx/api/sandboxes/{unknown}").status_code == 404
    response = server.api("POST", f"/hopx/api/sandboxes/{unknown}/extend", json={"seconds": 5})
    assert response.status_code == 404


def test_jupyter_hopx_kill_stops_a_server_kernel_for_good(
    server: Server, runtime_dir: Path
) -> None:
    """`jupyter hopx kill <kernel_id>` stops a kernel the server runs: it exits 0 saying "Killed
    kernel", the server drops the kernel within a few seconds (its restarter notices) without
    restarting it, a `killed` event with reason "manual" is emitted, and nothing is left. An id
    matching no sandbox is an error that points at `jupyter hopx list`."""
    events = server.events()
    kernel_id = server.start_kernel()
    assert events.wait_for_hopx("started", kernel_id, 30)
    assert server_sandboxes(server)

    asked = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "kill", kernel_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"Killed kernel {kernel_id}" in result.stdout

    killed = events.wait_for_hopx("killed", kernel_id, 20)
    assert killed is not None, server.log()[-3000:]
    assert killed["reason"] == "manual"
    cull_delay(killed, asked, "manual")
    assert wait_until(lambda: kernel_id not in kernel_ids(server), 10)
    assert_not_restarted(server, events, kernel_id)
    assert_no_leaks(runtime_dir)

    result = subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "kill", str(uuid.uuid4())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "jupyter hopx list" in result.stderr


def test_the_hopx_api_needs_the_token_and_a_valid_body(server: Server) -> None:
    """Without the token every /hopx/api endpoint refuses (401 or 403) and changes nothing: the
    kernel is still listed and not extended. With it, extend bodies that are not a positive
    number of seconds are a 400 whose message shows a valid body."""
    kernel_id = server.start_kernel()
    base = f"/hopx/api/sandboxes/{kernel_id}"
    refused = {
        "GET list": server.api("GET", "/hopx/api/sandboxes", token=False),
        "GET one": server.api("GET", base, token=False),
        "DELETE": server.api("DELETE", base, token=False),
        "POST extend": server.api("POST", f"{base}/extend", token=False, json={"seconds": 60}),
    }
    allowed = {
        what: r.status_code for what, r in refused.items() if r.status_code not in (401, 403)
    }
    assert allowed == {}
    assert kernel_id in kernel_ids(server)
    model = sandbox(server, kernel_id)
    assert model["extended_until"] is None
    assert model["stopping"] is False

    bad_bodies = ['{"seconds": -1}', '{"seconds": "x"}', "not json", '{"seconds": true}']
    bad_bodies += ['{"seconds": 0}', "[600]", "[" * 100_000 + "]" * 100_000]
    for body in bad_bodies:
        response = server.api("POST", f"{base}/extend", data=body)
        assert response.status_code == 400, (body, response.status_code, response.text)
        assert EXAMPLE_BODY in response.json()["message"], (body, response.text)
    assert sandbox(server, kernel_id)["extended_until"] is None
    assert kernel_id in kernel_ids(server)


def test_the_rest_model_of_a_running_sandbox(
    server: Server, make_kernelspec: Callable[..., str]
) -> None:
    """GET /hopx/api/sandboxes/<id> describes a running Hopx kernel: its id and state, limits and
    policy exactly as the kernelspec sets them, current memory use and task count, since when it
    is idle, and its next cull (time, reason, seconds left). The list endpoint shows Hopx kernels
    only."""
    settings: dict[str, Any] = {
        "memory_limit": "256M",
        "cpu_limit": 0.5,
        "pids_limit": 128,
        "disk_limit": "32M",
        "files_limit": 5000,
        "idle_timeout": "90s",
        "max_lifetime": "10m",
        "cull_busy": True,
        "warn_before": "20s",
        "cull_interval": "5s",
    }
    name = make_kernelspec("hopx-model", **settings)
    kernel_id = server.start_kernel(name)
    other = server.start_kernel("python3")
    # jupyter_server reports a kernel "starting" until a client has talked to it.
    server.connect(kernel_id)
    assert wait_until(lambda: sandbox(server, kernel_id)["state"] == "idle", 30)
    model = sandbox(server, kernel_id)
    assert model["kernel_id"] == kernel_id
    assert model["kernel_name"] == name
    assert ipaddress.ip_address(model["address"]) in ipaddress.ip_network("100.64.0.0/16")
    assert model["limits"] == {
        "memory": 256 << 20,
        "cpus": 0.5,
        "pids": 128,
        "disk": 32 << 20,
        "files": 5000,
    }
    usage = model["usage"]
    assert isinstance(usage["memory_bytes"], int)
    assert usage["memory_bytes"] > 0
    assert isinstance(usage["pids"], int)
    assert usage["pids"] >= 1
    # Starting ipykernel alone takes a good fraction of a CPU second.
    assert isinstance(usage["cpu_seconds"], float)
    assert usage["cpu_seconds"] > 0.05
    assert model["policy"] == {
        "idle_timeout": 90.0,
        "max_lifetime": 600.0,
        "cull_busy": True,
        "warn_before": 20.0,
        "cull_interval": 5.0,
    }
    assert model["idle_since"] == model["last_activity"]
    next_cull = model["next_cull"]
    assert set(next_cull) == {"at", "reason", "in_seconds"}
    assert next_cull["reason"] == "idle"
    assert event_time(next_cull["at"]) == pytest.approx(
        event_time(model["last_activity"]) + 90, abs=1e-3
    )
    assert 0 < next_cull["in_seconds"] <= 90
    assert model["extended_until"] is None
    assert model["stopping"] is False

    listed = server.api("GET", "/hopx/api/sandboxes").json()
    assert [m["kernel_id"] for m in listed] == [kernel_id]
    assert server.api("GET", f"/hopx/api/sandboxes/{other}").status_code == 404


def test_the_sandbox_list_answers_while_a_kernel_is_starting(server: Server) -> None:
    """JupyterLab asks for the list as soon as a kernel appears, before the server has recorded
    any activity for it: the list must answer then too, not fail with a server error."""
    statuses: list[int] = []
    listed: set[str] = set()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            response = server.api("GET", "/hopx/api/sandboxes")
            statuses.append(response.status_code)
            if response.status_code == 200:
                listed.update(s["kernel_id"] for s in response.json())

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for poller in pollers:
        poller.start()
    try:
        # The window is short (the end of each start): a few starts make it likely to be hit.
        for _ in range(3):
            kernel_id = server.start_kernel()
            # Called at once, within this turn of the loop.
            assert wait_until(lambda: kernel_id in listed, 30)  # noqa: B023
    finally:
        done.set()
        for poller in pollers:
            poller.join(30)
    assert statuses, "the list was never asked for"
    assert set(statuses) == {200}, sorted(set(statuses))
