"""Web apps in a notebook: a small HTTP answer from an app in a Hopx kernel through /hopx/proxy,
against the same app in a stock kernel reached through jupyter-server-proxy (when installed:
`pip install -e .[bench]`) and directly, in one run of one Jupyter server.

Measured, interleaved: the latency of one GET (a keep-alive connection to the server, as a
browser has), and requests per second with CONCURRENT clients at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from jupyter_client.blocking.client import BlockingKernelClient

from benchmarks.kernels import HOPX, STOCK, jupyter_path, kernelspecs
from benchmarks.servers import answers, free_port, wait_until
from benchmarks.stats import Metric, Samples

LATENCY = Metric("GET of a small answer from a notebook's app", "s")
THROUGHPUT = Metric("GETs per second, 8 clients at once", "req/s", True)
METRICS = [LATENCY, THROUGHPUT]
PROXY, DIRECT = "jupyter-server-proxy", "direct"
CONCURRENT = 8

APP = textwrap.dedent(
    """
    import http.server, threading
    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # its head and body go out at once, as a real app's
        def do_GET(self):
            body = b"hello from the app"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    app = http.server.ThreadingHTTPServer(("127.0.0.1", {port}), Answer)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    """
)


def has_server_proxy() -> bool:
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def measure(rounds: int, gets: int, samples: Samples) -> dict[str, Any]:
    """`rounds` rounds, each `gets` sequential GETs and `gets` GETs spread over CONCURRENT
    clients, for each way in."""
    with kernelspecs() as specs, _server(jupyter_path(specs)) as (url, token, runtime):
        session = requests.Session()
        session.headers["Authorization"] = f"token {token}"
        hopx = _kernel_with_app(session, url, runtime, HOPX, 8000)
        stock_port = free_port()
        _kernel_with_app(session, url, runtime, STOCK, stock_port)
        ways = {
            HOPX: f"{url}/hopx/proxy/{hopx}/8000/",
            DIRECT: f"http://127.0.0.1:{stock_port}/",
        }
        if has_server_proxy():
            ways[PROXY] = f"{url}/proxy/{stock_port}/"
        for target in ways.values():
            _check(session, target)
        for _ in range(rounds):
            for way, target in ways.items():
                for seconds in _sequential(session, target, gets):
                    samples.add(LATENCY, way, seconds)
                samples.add(THROUGHPUT, way, _concurrent(token, target, gets))
        session.close()
    return {"ways": list(ways), "gets": gets, "concurrent": CONCURRENT}


def _check(session: requests.Session, target: str) -> None:
    response = session.get(target, timeout=30)
    if response.text != "hello from the app":
        msg = f"{target} answered {response.status_code}: {response.text[:200]}"
        raise RuntimeError(msg)


def _sequential(session: requests.Session, target: str, gets: int) -> list[float]:
    times = []
    for _ in range(gets):
        started = time.perf_counter()
        session.get(target, timeout=30).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def _concurrent(token: str, target: str, gets: int) -> float:
    per_client = max(1, gets // CONCURRENT)

    def client() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"token {token}"
            for _ in range(per_client):
                session.get(target, timeout=30).raise_for_status()

    threads = [threading.Thread(target=client) for _ in range(CONCURRENT)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_client * CONCURRENT / (time.perf_counter() - started)


@contextlib.contextmanager
def _server(kernels: str) -> Iterator[tuple[str, str, Path]]:
    """A Jupyter server on a free port, finding the benchmark's kernelspecs."""
    token = secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hopx-bench-proxy-") as folder:
        runtime, root = Path(folder) / "rt", Path(folder) / "root"
        runtime.mkdir()
        root.mkdir()
        env = {**os.environ, "JUPYTER_PATH": kernels, "JUPYTER_RUNTIME_DIR": str(runtime)}
        env["JUPYTER_CONFIG_DIR"] = str(Path(folder) / "config")
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
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: answers(f"{url}/api/status", token), 60, "Jupyter server")
            yield url, token, runtime
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _kernel_with_app(
    session: requests.Session, url: str, runtime: Path, name: str, port: int
) -> str:
    """A kernel of the server's, running the app on `port`; its id."""
    response = session.post(f"{url}/api/kernels", json={"name": name}, timeout=120)
    response.raise_for_status()
    kernel_id = str(response.json()["id"])
    client = BlockingKernelClient()
    client.load_connection_file(str(runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(APP.format(port=port), timeout=60)
        if reply["content"]["status"] != "ok":
            msg = f"the app did not start in the {name} kernel: {reply['content']}"
            raise RuntimeError(msg)
    finally:
        client.stop_channels()
    wait_until(lambda: answers(f"{url}/api/kernels/{kernel_id}", session=session), 10, "kernel")
    return kernel_id


def describe(measured: dict[str, Any]) -> str:
    note = json.dumps(measured["ways"])
    return (
        f"{measured['gets']} GETs one after another and {measured['gets']} spread over "
        f"{measured['concurrent']} clients, per round and way in ({note})"
    )
