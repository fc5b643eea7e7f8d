"""Kernel start through a Jupyter Kernel Gateway with Hopx's personality (hopx_kernel.gateway):
a Hopx kernel against the stock one on the same gateway (a kernelspec that names
local-provisioner keeps it), interleaved. Timed as a client of the gateway sees it: from
`POST /api/kernels` to the kernel's first kernel_info_reply over the gateway's websocket."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import websocket

from benchmarks.kernels import HOPX, STOCK, jupyter_path, kernelspecs
from benchmarks.servers import answers, free_port, stop, wait_until
from benchmarks.stats import Metric, Samples

START = Metric("start through a Kernel Gateway → first kernel_info_reply", "s")
METRICS = [START]
# The stock kernelspec, kept off Hopx on a gateway that makes every other kernel a Hopx one.
LOCAL = {"kernel_provisioner": {"provisioner_name": "local-provisioner"}}


@contextmanager
def hopx_gateway() -> Iterator[tuple[str, str]]:
    """A gateway with the Hopx personality, knowing STOCK (local) and HOPX; (url, token)."""
    with kernelspecs() as specs, tempfile.TemporaryDirectory(prefix="hopx-bench-kg-") as tmp:
        stock_spec = Path(specs.kernel_dirs[0]) / STOCK / "kernel.json"
        spec = json.loads(stock_spec.read_text())
        stock_spec.write_text(json.dumps({**spec, "metadata": LOCAL}))
        port, token = free_port(), secrets.token_hex(16)
        with open(Path(tmp) / "gateway.log", "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kernel_gateway",
                    "--KernelGatewayApp.api=hopx_kernel.gateway",
                    "--KernelGatewayApp.ip=127.0.0.1",
                    f"--KernelGatewayApp.port={port}",
                    f"--KernelGatewayApp.auth_token={token}",
                    # The stock kernel, to compare with.
                    "--HopxPersonality.allow_unsandboxed=True",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "JUPYTER_PATH": jupyter_path(specs)},
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: answers(f"{url}/api", token), 60, "Kernel Gateway")
            yield url, token
        finally:
            stop(process)


def start_to_first_reply(url: str, token: str, kernel: str, *, check: bool = False) -> float:
    """Seconds from the start request to the first reply; `check`: also make sure the kernel is
    sandboxed exactly when it should be (a Hopx kernel, not the stock one)."""
    headers = {"Authorization": f"token {token}"}
    began = time.perf_counter()
    response = requests.post(
        f"{url}/api/kernels", json={"name": kernel}, headers=headers, timeout=120
    )
    response.raise_for_status()
    kernel_id = response.json()["id"]
    try:
        if check:
            sandboxes = requests.get(f"{url}/hopx/api/sandboxes", headers=headers, timeout=60)
            sandboxed = kernel_id in {s["kernel_id"] for s in sandboxes.json()}
            if sandboxed != (kernel == HOPX):
                msg = f"the {kernel} kernel is {'' if sandboxed else 'not '}sandboxed"
                raise RuntimeError(msg)
        ws = websocket.create_connection(
            f"{url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {token}"],
            timeout=120,
        )
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps(_kernel_info_request(msg_id)))
            while True:
                reply = json.loads(ws.recv())
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return time.perf_counter() - began
        finally:
            ws.close()
    finally:
        requests.delete(f"{url}/api/kernels/{kernel_id}", headers=headers, timeout=120)


def _kernel_info_request(msg_id: str) -> dict[str, object]:
    header = {
        "msg_id": msg_id,
        "msg_type": "kernel_info_request",
        "username": "bench",
        "session": uuid.uuid4().hex,
        "date": "",
        "version": "5.3",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {},
        "channel": "shell",
        "buffers": [],
    }


def measure(runs: int, samples: Samples) -> None:
    with hopx_gateway() as (url, token):
        for kernel in (STOCK, HOPX):  # warm-up (file caches, imports), and a check
            start_to_first_reply(url, token, kernel, check=True)
        for _ in range(runs):
            for kernel in (STOCK, HOPX):
                samples.add(START, kernel, start_to_first_reply(url, token, kernel))
