"""Hopx's policy on a real Jupyter Kernel Gateway (`c.KernelGatewayApp.api =
"hopx_kernel.gateway"`), and JupyterLab's server in front of it (`--gateway-url`): every kernel
the gateway starts is sandboxed, whatever kernelspec it names; idle kernels are culled; the Hopx
REST API is there behind the gateway's token, and reaches the user through the Jupyter server
in front with the user's own authentication."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect

from browser_harness import UI_TIMEOUT, open_notebook, run_first_cell, shoot, write_notebook
from conftest import terminate, wait_until
from server_harness import Server, free_port, running_server


@dataclass
class Gateway:
    url: str
    token: str
    log_path: Path

    def api(self, method: str, path: str, *, token: bool = True, **kwargs: Any) -> Any:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        timeout = kwargs.pop("timeout", 60)
        url = f"{self.url}{path}"
        return requests.request(method, url, headers=headers, timeout=timeout, **kwargs)

    def kernels(self) -> list[str]:
        return [k["id"] for k in self.api("GET", "/api/kernels").json()]


@pytest.fixture
def gateway(
    tmp_path: Path, make_kernelspec: Callable[..., str], kernels_dir: Path
) -> Iterator[Gateway]:
    """A Kernel Gateway with the Hopx personality, the Hopx kernelspecs `hopx-test` and
    `hopx-idle` (idle_timeout 4s), `plain`, a kernelspec that names no provisioner, and `local`,
    one that names local-provisioner."""
    make_kernelspec("hopx-test")
    make_kernelspec("hopx-idle", idle_timeout="4s", warn_before="2s", cull_interval="1s")
    (kernels_dir / "plain").mkdir()
    plain = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "plain",
        "language": "python",
    }
    (kernels_dir / "plain" / "kernel.json").write_text(json.dumps(plain))
    (kernels_dir / "local").mkdir()
    local = {**plain, "metadata": {"kernel_provisioner": {"provisioner_name": "local-provisioner"}}}
    (kernels_dir / "local" / "kernel.json").write_text(json.dumps(local))
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kernel_gateway",
                "--KernelGatewayApp.api=hopx_kernel.gateway",
                "--KernelGatewayApp.ip=127.0.0.1",
                f"--KernelGatewayApp.port={port}",
                f"--KernelGatewayApp.auth_token={token}",
                "--KernelGatewayApp.default_kernel_name=hopx-test",
                "--JupyterWebsocketPersonality.list_kernels=True",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ,
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", token, log_path)

    def answers() -> bool:
        with contextlib.suppress(requests.RequestException):
            return bool(gateway.api("GET", "/api", timeout=2).status_code == 200)
        return False

    try:
        assert wait_until(lambda: process.poll() is not None or answers(), 60)
        assert process.poll() is None, log_path.read_text()[-3000:]
        yield gateway
    finally:
        terminate(process)


def test_the_gateway_sandboxes_every_kernel_and_serves_the_hopx_api(gateway: Gateway) -> None:
    response = gateway.api("POST", "/api/kernels", json={"name": "plain"})
    assert response.status_code == 201, (response.text, gateway.log_path.read_text()[-3000:])
    kernel_id = response.json()["id"]
    assert gateway.api("GET", "/hopx/api/sandboxes", token=False).status_code == 401
    sandboxes = gateway.api("GET", "/hopx/api/sandboxes").json()
    assert [s["kernel_id"] for s in sandboxes] == [kernel_id]  # "plain" named no provisioner
    extended = gateway.api("POST", f"/hopx/api/sandboxes/{kernel_id}/extend", json={"seconds": 60})
    assert extended.status_code == 200, extended.text
    assert extended.json()["extended_until"]
    assert gateway.api("DELETE", f"/hopx/api/sandboxes/{kernel_id}").status_code == 204
    assert wait_until(lambda: kernel_id not in gateway.kernels(), 30)
    # A kernelspec that names another provisioner is refused, saying what to do.
    refused = gateway.api("POST", "/api/kernels", json={"name": "local"})
    assert refused.status_code == 403, refused.text
    assert "names the provisioner 'local-provisioner'" in refused.json()["message"]
    assert gateway.kernels() == []


def test_the_gateway_culls_an_idle_kernel(gateway: Gateway) -> None:
    response = gateway.api("POST", "/api/kernels", json={"name": "hopx-idle"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    model = gateway.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    assert model["policy"]["idle_timeout"] == 4
    assert wait_until(lambda: kernel_id not in gateway.kernels(), 60), "not culled"
    assert f"Hopx: stopping kernel {kernel_id} (idle)" in gateway.log_path.read_text()


def test_jupyterlab_in_front_of_the_gateway_shows_and_kills_its_sandboxes(
    gateway: Gateway, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    token = secrets.token_hex(16)
    args = [f"--gateway-url={gateway.url}", f"--GatewayClient.auth_token={gateway.token}"]
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    with running_server(root, token, env, tmp_path / "server.log", args) as server:
        response = server.api("POST", "/api/kernels", json={"name": "hopx-test"})
        assert response.status_code == 201, (response.text, server.log()[-3000:])
        kernel_id = response.json()["id"]
        assert kernel_id in gateway.kernels()  # the kernel runs on the gateway
        assert server.api("GET", "/hopx/api/sandboxes", token=False).status_code == 403
        sandboxes = server.api("GET", "/hopx/api/sandboxes").json()
        assert [s["kernel_id"] for s in sandboxes] == [kernel_id]
        missing = server.api("GET", "/hopx/api/sandboxes/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        assert server.api("DELETE", f"/hopx/api/sandboxes/{kernel_id}").status_code == 204
        assert wait_until(lambda: kernel_id not in gateway.kernels(), 30)


@pytest.fixture
def server_args(gateway: Gateway) -> list[str]:
    """The Jupyter server (and its JupyterLab) in these tests runs its kernels on the gateway."""
    return [f"--gateway-url={gateway.url}", f"--GatewayClient.auth_token={gateway.token}"]


def test_jupyterlab_on_a_gateway_shows_its_sandbox_and_kills_it(
    lab: Server, browser: Browser, gateway: Gateway
) -> None:
    """JupyterLab in Chromium, its kernels on the gateway: a notebook on a Hopx kernel runs a
    cell, the status bar shows the sandbox's memory limit, the Sandboxes panel lists it, and
    Kill there stops it on the gateway."""
    path = write_notebook(lab, "on-gateway.ipynb", "hopx-test")
    page = open_notebook(browser, lab, path, "gateway")
    assert run_first_cell(page).strip() == "42"
    (kernel_id,) = gateway.kernels()
    expect(page.locator(".hopx-SandboxStatus")).to_contain_text("/ 512 MiB", timeout=UI_TIMEOUT)
    page.locator('.jp-SideBar [data-id="hopx-sandboxes"]').click()
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{kernel_id}"]')
    expect(card).to_be_visible(timeout=UI_TIMEOUT)
    shoot(page, "gateway-sandboxes-panel")
    card.locator(".hopx-SandboxCard-kill").click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    assert wait_until(lambda: gateway.kernels() == [], 30)
    expect(card).to_have_count(0, timeout=UI_TIMEOUT)
    page.close()
