"""A real jupyter_server runs Hopx kernels: REST API and sessions, the websocket protocol,
interrupt, restart, shutdown, an out-of-memory kernel, the token kept from the kernel, and a server
stopped with SIGTERM or killed with SIGKILL leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket

from conftest import assert_no_leaks, leftovers, wait_until
from server_harness import DATA, Server


def sandbox_record(runtime_dir: Path, kernel_id: str) -> dict[str, Any]:
    path = runtime_dir / "hopx" / kernel_id / "sandbox.json"
    assert wait_until(path.exists, 10), path
    return dict(json.loads(path.read_text()))


def test_kernelspec_listed_and_kernel_started_in_the_notebook_folder(server: Server) -> None:
    """`/api/kernelspecs` lists the Hopx kernelspec with its provisioner; a kernel started with a
    `path` runs in that folder, which it can read but not write."""
    specs = server.api("GET", "/api/kernelspecs").json()["kernelspecs"]
    assert "hopx-test" in specs
    spec = specs["hopx-test"]["spec"]
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "hopx-provisioner"

    kernel_id = server.start_kernel(path="notebooks")
    ks = server.connect(kernel_id)
    seen = ks.value(
        textwrap.dedent(
            """
            import json, os
            try:
                open("data.txt", "a").write("changed")
                write_error = None
            except OSError as e:
                write_error = type(e).__name__
            try:
                open("new.txt", "w").close()
                create_error = None
            except OSError as e:
                create_error = type(e).__name__
            print(json.dumps({"cwd": os.getcwd(), "data": open("data.txt").read(),
                              "write": write_error, "create": create_error, "uid": os.getuid()}))
            """
        )
    )
    folder = server.root / "notebooks"
    assert seen["cwd"] == os.path.realpath(folder)
    assert seen["data"] == DATA
    assert seen["write"] is not None
    assert seen["create"] is not None
    assert seen["uid"] == 1000
    assert (folder / "data.txt").read_text() == DATA
    assert not (folder / "new.txt").exists()


@pytest.mark.parametrize(
    "server_args",
    [[], ["--MappingKernelManager.transport_encryption=required"]],
    ids=["default", "encryption-required"],
)
def test_websocket_execute_prints_and_replies(server: Server) -> None:
    """The kernel websocket carries an execute_request to the sandbox and brings back the stream
    output on iopub and an `ok` execute_reply on shell, also when the server requires transport
    encryption for its kernels."""
    kernel_id = server.start_kernel()
    ks = server.connect(kernel_id)
    content, stdout = ks.execute("print(6*7)")
    assert content["status"] == "ok"
    assert stdout == "42\n"


def test_kernel_cannot_see_the_token_or_reach_the_server(server: Server, runtime_dir: Path) -> None:
    """Code in the kernel finds the server's token neither in its environment nor in the runtime
    directory (the server's jpserver-*.json and the connection files are hidden), and cannot
    connect to the server's port: the sandbox has its own loopback."""
    assert list(runtime_dir.glob("jpserver-*.json"))
    assert server.token in "".join(p.read_text() for p in runtime_dir.glob("jpserver-*.json"))
    kernel_id = server.start_kernel()
    ks = server.connect(kernel_id)
    port = int(server.url.rsplit(":", 1)[1])
    seen = ks.value(
        textwrap.dedent(
            f"""
            import json, os, socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                reached = True
            except OSError:
                reached = False
            runtime = {str(runtime_dir)!r}
            print(json.dumps({{"env": dict(os.environ), "reached": reached,
                              "runtime": os.listdir(runtime) if os.path.isdir(runtime) else []}}))
            """
        )
    )
    assert server.token not in json.dumps(seen["env"])
    assert seen["runtime"] == []
    assert seen["reached"] is False


@pytest.mark.parametrize("kernel_name", ["hopx-test", "python3"])
def test_session_kernel_knows_its_notebook(server: Server, kernel_name: str) -> None:
    """A kernel started for a notebook session (POST /api/sessions, as JupyterLab does) gets the
    notebook's path as `__session__`, as the stock kernel does (jupyter_server passes it in the
    launch env as JPY_SESSION_NAME)."""
    notebook = server.root / "notebooks" / "analysis.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    ks = server.connect(server.open_notebook("notebooks/analysis.ipynb", kernel_name))
    seen = ks.value("import json; print(json.dumps(globals().get('__session__')))")
    assert seen == str(notebook)


def test_interrupt_and_restart_through_the_api(server: Server, runtime_dir: Path) -> None:
    """POST .../interrupt stops a sleeping cell with KeyboardInterrupt; POST .../restart brings up
    a fresh sandbox, reachable over the websocket that was open and over a new one."""
    kernel_id = server.start_kernel()
    ks = server.connect(kernel_id)
    msg_id = ks.send_execute("import time; time.sleep(60)")
    assert ks.wait_busy(msg_id, 30)
    started = time.monotonic()
    assert server.api("POST", f"/api/kernels/{kernel_id}/interrupt").status_code == 204
    assert ks.wait_for(lambda _: bool(ks.replies_to(msg_id, "execute_reply")), 30)
    assert time.monotonic() - started < 30
    (reply,) = ks.replies_to(msg_id, "execute_reply")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"

    content, _ = ks.execute("before_restart = 1; open('/tmp/marker', 'w').close()")
    assert content["status"] == "ok"
    first = sandbox_record(runtime_dir, kernel_id)

    response = server.api("POST", f"/api/kernels/{kernel_id}/restart")
    assert response.status_code == 200, response.text
    second = sandbox_record(runtime_dir, kernel_id)
    assert second["sandbox_id"] != first["sandbox_id"]
    assert wait_until(lambda: not os.path.exists(f"/proc/{first['supervisor_pid']}"), 10)
    assert not any(os.path.exists(c) for c in first["cgroups"])

    fresh_code = "import json, os; print(json.dumps(['before_restart' in dir(), "
    fresh_code += "os.path.exists('/tmp/marker')]))"
    assert ks.value(fresh_code) == [False, False]
    again = server.connect(kernel_id)
    assert again.value(fresh_code) == [False, False]


def test_delete_leaves_nothing(server: Server, runtime_dir: Path) -> None:
    """DELETE /api/kernels/<id> answers 204 and removes the sandbox: processes, cgroups, state
    directory and the server's connection file."""
    kernel_id = server.start_kernel()
    ks = server.connect(kernel_id)
    content, _ = ks.execute("import subprocess; p = subprocess.Popen(['sleep', '600'])")
    assert content["status"] == "ok"
    assert leftovers(runtime_dir)
    assert list(runtime_dir.glob(f"kernel-{kernel_id}*.json"))

    assert server.api("DELETE", f"/api/kernels/{kernel_id}").status_code == 204
    assert server.api("GET", f"/api/kernels/{kernel_id}").status_code == 404
    assert_no_leaks(runtime_dir)
    assert not list(runtime_dir.glob(f"kernel-{kernel_id}*.json"))


def test_the_api_needs_the_token(server: Server) -> None:
    """Sanity check of the server set-up: without the token the API and the websocket refuse."""
    assert server.api("GET", "/api/kernels", token=False).status_code in (401, 403)
    assert server.api("POST", "/api/kernels", token=False, json={}).status_code in (401, 403)
    assert server.api("GET", "/api/kernels").status_code == 200
    kernel_id = server.start_kernel()
    ws_url = server.url.replace("http://", "ws://", 1)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{ws_url}/api/kernels/{kernel_id}/channels", timeout=30)
    assert refused.value.status_code in (401, 403)


def test_out_of_memory_kernel_is_restarted_and_the_server_survives(
    server: Server, runtime_dir: Path
) -> None:
    """A kernel going past memory_limit 256M is killed by the cgroup OOM killer; the server stays
    up, its restarter reports the kernel as restarting (or dead) and then brings it back in a
    fresh sandbox; after DELETE nothing is left."""
    kernel_id = server.start_kernel(name="hopx-small")
    ks = server.connect(kernel_id)
    content, _ = ks.execute("survivor = 1")
    assert content["status"] == "ok"
    first = sandbox_record(runtime_dir, kernel_id)

    states: list[str] = []

    def kernel_went_down() -> bool:
        state = server.kernel_model(kernel_id)["execution_state"]
        if not states or states[-1] != state:
            states.append(state)
        return state in ("restarting", "starting", "dead")

    msg_id = ks.send_execute("hog = b'x' * (600 * 1024 * 1024)")
    assert wait_until(kernel_went_down, 60), (states, server.log()[-3000:])
    assert server.process.poll() is None
    assert server.status_ok()
    assert not ks.replies_to(msg_id, "execute_reply")
    assert "out of memory" in server.log()
    assert not any(os.path.exists(c) for c in first["cgroups"])

    if states[-1] != "dead":
        # The websocket was told, and the restarted kernel is a fresh one, reachable over the
        # websocket that was open and over a new one; the server then sees it idle.
        assert ks.wait_for(
            lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "restarting",
            30,
        ), ks.received[-10:]
        assert sandbox_record(runtime_dir, kernel_id)["sandbox_id"] != first["sandbox_id"]
        fresh_code = "import json; print(json.dumps('survivor' in dir()))"
        assert ks.value(fresh_code) is False
        fresh = server.connect(kernel_id)
        assert fresh.value(fresh_code) is False
        assert wait_until(lambda: server.kernel_model(kernel_id)["execution_state"] == "idle", 10)

    assert server.api("DELETE", f"/api/kernels/{kernel_id}").status_code == 204
    assert_no_leaks(runtime_dir)


def test_server_kill_9_leaves_nothing(server: Server, runtime_dir: Path) -> None:
    """A Jupyter server killed with SIGKILL takes its sandboxes with it within seconds, and
    each supervisor says why in the server's log (reason owner_died)."""
    kernel_ids = [server.start_kernel(), server.start_kernel(name="hopx-small")]
    records = [sandbox_record(runtime_dir, kernel_id) for kernel_id in kernel_ids]
    for record in records:
        assert os.path.exists(f"/proc/{record['supervisor_pid']}")
        assert all(os.path.exists(c) for c in record["cgroups"])

    server.process.kill()
    server.process.wait()
    assert_no_leaks(runtime_dir, timeout=10)
    assert not list(runtime_dir.glob("kernel-*.json"))
    for kernel_id in kernel_ids:
        assert f"kernel {kernel_id}: its owner is gone (owner_died)" in server.log()


def test_server_sigterm_shuts_its_kernels_down(server: Server, runtime_dir: Path) -> None:
    """A server stopped with SIGTERM shuts its kernels down and exits cleanly: nothing left."""
    for _ in range(2):
        server.start_kernel()
    assert len(list((runtime_dir / "hopx").iterdir())) == 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0, server.log()[-3000:]
    assert "Shutting down 2 kernels" in server.log()
    assert_no_leaks(runtime_dir)
    assert not list(runtime_dir.glob("kernel-*.json"))


def test_a_failed_start_says_why_through_every_api(
    server: Server, make_kernelspec: Callable[..., str]
) -> None:
    """A Hopx kernel that cannot start (workspace = "rw" on a folder owned by root): the kernels
    API, which answered {"message": "Unhandled error"}, and the sessions API both give the
    reason, what to do first."""
    make_kernelspec("hopx-rw", workspace="rw")
    for path, body in (
        ("/api/kernels", {"name": "hopx-rw", "path": "notebooks"}),
        (
            "/api/sessions",
            {"path": "notebooks/a.ipynb", "type": "notebook", "kernel": {"name": "hopx-rw"}},
        ),
    ):
        response = server.api("POST", path, json=body)
        assert response.status_code == 500, response.text
        message = response.json()["message"]
        assert message.startswith("Set workspace = 'ro', or give "), (path, message)
        assert "Hopx could not start a sandbox for kernel" in message
    assert server.api("GET", "/api/kernels").json() == []
