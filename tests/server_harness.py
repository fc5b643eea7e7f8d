"""A real jupyter_server for tests: started on a free port with a token, Hopx kernelspecs and a
notebook folder, spoken to over its REST API and kernel websockets."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from conftest import terminate, wait_until

DATA = "readable, not writable\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def receive_within(ws: websocket.WebSocket, timeout: float) -> str | bytes | None:
    """The next websocket message, or None if none came within `timeout`.

    Waits a second at a time: on this project's VMs one poll() with a 53 s timeout was seen still
    blocked three minutes later, under full CPU load."""
    deadline = time.monotonic() + timeout
    while True:
        ws.settimeout(max(min(deadline - time.monotonic(), 1.0), 0.01))
        try:
            data: str | bytes = ws.recv()
        except websocket.WebSocketTimeoutException:
            if time.monotonic() >= deadline:
                return None
        else:
            return data


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    token: str
    root: Path
    log_path: Path
    http: requests.Session = field(default_factory=requests.Session)
    sockets: list[KernelSocket | EventStream] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, *, token: bool = True, **kwargs: Any) -> Any:
        """An API request with the token; without it, from a session with no login cookie."""
        kwargs.setdefault("timeout", 60)
        if not token:
            with requests.Session() as anonymous:
                return anonymous.request(method, f"{self.url}{path}", **kwargs)
        headers = {"Authorization": f"token {self.token}"}
        return self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def status_ok(self) -> bool:
        try:
            return bool(self.api("GET", "/api/status", timeout=2).status_code == 200)
        except requests.RequestException:
            return False

    def start_kernel(self, name: str = "hopx-test", path: str = "notebooks") -> str:
        response = self.api("POST", "/api/kernels", json={"name": name, "path": path})
        assert response.status_code == 201, (response.text, self.log()[-3000:])
        return str(response.json()["id"])

    def open_notebook(self, path: str, kernel_name: str) -> str:
        """Open a notebook session as JupyterLab does (POST /api/sessions); its kernel's id."""
        model = {
            "path": path,
            "name": path.rsplit("/", 1)[-1],
            "type": "notebook",
            "kernel": {"name": kernel_name},
        }
        response = self.api("POST", "/api/sessions", json=model)
        assert response.status_code == 201, (response.text, self.log()[-3000:])
        return str(response.json()["kernel"]["id"])

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/kernels/{kernel_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def connect(self, kernel_id: str) -> KernelSocket:
        """A new kernel websocket, closed when the server fixture ends."""
        kernel_socket = KernelSocket(self._websocket(f"/api/kernels/{kernel_id}/channels"))
        self.sockets.append(kernel_socket)
        return kernel_socket

    def events(self) -> EventStream:
        """A subscription to the server's event bus (`/api/events/subscribe`), as a frontend
        has; closed when the server fixture ends."""
        stream = EventStream(self._websocket("/api/events/subscribe"))
        self.sockets.append(stream)
        return stream

    def _websocket(self, path: str) -> websocket.WebSocket:
        ws_url = self.url.replace("http://", "ws://", 1)
        return websocket.create_connection(f"{ws_url}{path}?token={self.token}", timeout=60)


HOPX_EVENTS = "https://events.hopx-kernel.org/sandbox/v1"


class EventStream:
    """Events as the server's websocket delivers them: each a dict with `schema_id` and the
    event's own fields, to which `received_at` (seconds since the epoch) is added here."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def hopx(self, kernel_id: str | None = None) -> list[dict[str, Any]]:
        """The Hopx events received so far, for one kernel if given."""
        return [
            e
            for e in self.received
            if e.get("schema_id") == HOPX_EVENTS
            and (kernel_id is None or e.get("kernel_id") == kernel_id)
        ]

    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """The first event, already received or arriving within `timeout`, that satisfies
        `condition`; None if there is none."""
        for event in self.received:
            if condition(event):
                return event
        deadline = time.monotonic() + timeout
        while deadline > time.monotonic():
            data = receive_within(self.ws, deadline - time.monotonic())
            if data is None:
                return None
            event = {**json.loads(data), "received_at": time.time()}
            self.received.append(event)
            if condition(event):
                return dict(event)
        return None

    def wait_for_hopx(
        self, action: str, kernel_id: str, timeout: float, **fields: Any
    ) -> dict[str, Any] | None:
        """The first Hopx event with this action for this kernel (and these field values)."""

        def wanted(e: dict[str, Any]) -> bool:
            return (
                e.get("schema_id") == HOPX_EVENTS
                and e.get("action") == action
                and e.get("kernel_id") == kernel_id
                and all(e.get(k) == v for k, v in fields.items())
            )

        return self.wait_for(wanted, timeout)


def event_time(timestamp: str) -> float:
    """An ISO 8601 time in UTC as Hopx writes it ("...Z": `cull_at`, REST times) as seconds
    since the epoch."""
    return (
        datetime.fromisoformat(timestamp.removesuffix("Z")).replace(tzinfo=timezone.utc).timestamp()
    )


class KernelSocket:
    """The kernel websocket with jupyter_server's JSON message protocol."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.session = uuid.uuid4().hex
        self.received: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "session": self.session,
            "username": "test",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        }
        message = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
        }
        self.ws.send(json.dumps(message))
        return msg_id

    def send_execute(self, code: str) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        return self.send("execute_request", content)

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON message, or None if none came within `timeout`."""
        data = receive_within(self.ws, timeout)
        if data is None:
            return None
        if isinstance(data, bytes):  # a message with binary buffers; not used here
            return {}
        message: dict[str, Any] = json.loads(data)
        self.received.append(message)
        return message

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Receive until a message satisfies `condition` (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message and condition(message):
                return True
        return False

    def wait_busy(self, msg_id: str, timeout: float) -> bool:
        """Receive until the kernel reports itself busy with request `msg_id`."""
        return self.wait_for(
            lambda m: (
                m.get("parent_header", {}).get("msg_id") == msg_id
                and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "busy"
            ),
            timeout,
        )

    def replies_to(self, msg_id: str, msg_type: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.received
            if m.get("parent_header", {}).get("msg_id") == msg_id and m["msg_type"] == msg_type
        ]

    def execute(self, code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
        """Run `code`; returns the execute_reply content and the stdout stream text."""
        msg_id = self.send_execute(code)

        def done(_: dict[str, Any]) -> bool:
            idle = any(
                m["content"].get("execution_state") == "idle"
                for m in self.replies_to(msg_id, "status")
            )
            return idle and bool(self.replies_to(msg_id, "execute_reply"))

        assert self.wait_for(done, timeout), self.received[-10:]
        (reply,) = self.replies_to(msg_id, "execute_reply")
        assert reply["channel"] == "shell"
        streams = self.replies_to(msg_id, "stream")
        assert all(m["channel"] == "iopub" for m in streams)
        stdout = "".join(m["content"]["text"] for m in streams if m["content"]["name"] == "stdout")
        return reply["content"], stdout

    def value(self, code: str, timeout: float = 60) -> Any:
        content, stdout = self.execute(code, timeout)
        assert content["status"] == "ok", content
        return json.loads(stdout)


@contextlib.contextmanager
def running_server(
    root: Path, token: str, env: dict[str, str], log_path: Path, server_args: list[str]
) -> Iterator[Server]:
    """A jupyter_server on a free port serving `root` with `token`, the environment plus `env`;
    its output goes to `log_path`. Stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--allow-root",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                *server_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    # A base URL (as JupyterHub gives each user's server) prefixes every path.
    base_url = next(
        (a.split("=", 1)[1] for a in server_args if a.startswith("--ServerApp.base_url=")), "/"
    )
    srv = Server(process, f"http://127.0.0.1:{port}{base_url.rstrip('/')}", token, root, log_path)
    try:
        wait_until(lambda: process.poll() is not None or srv.status_ok(), 60)
        assert srv.status_ok(), srv.log()[-3000:]
        yield srv
    finally:
        for ks in srv.sockets:
            with contextlib.suppress(Exception):
                ks.close()
        terminate(process)
        srv.http.close()


@pytest.fixture
def server_args() -> list[str]:
    """Extra command line arguments of the server; parametrize to change them."""
    return []


@pytest.fixture
def server(
    runtime_dir: Path,
    kernels_dir: Path,
    make_kernelspec: Callable[..., str],
    tmp_path: Path,
    server_args: list[str],
) -> Iterator[Server]:
    """A jupyter_server on a free port, with the Hopx kernelspecs `hopx-test` and `hopx-small`
    (memory_limit 256M) and a root directory holding `notebooks/data.txt`."""
    make_kernelspec("hopx-test")
    make_kernelspec("hopx-small", memory_limit="256M")
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "data.txt").write_text(DATA)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    token = secrets.token_hex(16)
    env = {"JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_TOKEN": token}
    assert os.environ["JUPYTER_RUNTIME_DIR"] == str(runtime_dir)
    assert os.environ["JUPYTER_PATH"] == str(kernels_dir.parent)
    with running_server(root, token, env, tmp_path / "server.log", server_args) as srv:
        yield srv
