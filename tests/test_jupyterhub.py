"""The example JupyterHub for real: JupyterHub with configurable-http-proxy, two real Unix users
(made for the test, removed after), each user's server spawned as their own account through
`hopx_kernel.jupyterhub.HopxSpawner`. Kernels started through the hub run sandboxed in a cgroup
delegated to their user, with their user's settings, whatever kernelspec they name; one user
reaches nothing of the other's (files, servers, sandboxes, REST); an idle kernel is culled; a
server stopped through the hub leaves no process, cgroup or sandbox behind."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from conftest import terminate, wait_until
from hopx_kernel.user_cgroups import ROOT as USER_CGROUPS
from hopx_kernel.user_cgroups import hierarchies
from runtime.cgroups import CgroupHost
from server_harness import KernelSocket, free_port

USERS = ("hopx-alice", "hopx-bob")
TESTS = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def unix_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Two real accounts with home directories, removed afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the hub spawns servers as other users: run as root (CI does)")
    for user in USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            subprocess.run(["userdel", "-r", "-f", user], check=False, capture_output=True)
        subprocess.run(["useradd", "-m", "-U", "-s", "/bin/sh", user], check=True)
        home = Path(pwd.getpwnam(user).pw_dir)
        home.chmod(0o700)
        private = home / "private.txt"
        private.write_text(f"only {user} reads this\n")
        os.chown(private, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        private.chmod(0o600)
    yield {user: pwd.getpwnam(user) for user in USERS}
    for user in USERS:
        subprocess.run(["userdel", "-r", "-f", user], check=False, capture_output=True)


@dataclass
class Hub:
    url: str
    token: str
    log_path: Path
    process: subprocess.Popen[bytes]
    http: requests.Session

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"token {token or self.token}"}
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def spawn(self, user: str) -> None:
        response = self.api("POST", f"/hub/api/users/{user}/server")
        assert response.status_code in (201, 202), (response.text, self.log()[-3000:])
        assert wait_until(lambda: self.server(user).get("ready"), 120), self.log()[-3000:]

    def server(self, user: str) -> dict[str, Any]:
        model = self.api("GET", f"/hub/api/users/{user}").json()
        return dict(model.get("servers", {}).get("", {}))

    def user_token(self, user: str) -> str:
        response = self.api("POST", f"/hub/api/users/{user}/tokens", json={"expires_in": 3600})
        assert response.status_code in (200, 201), response.text
        return str(response.json()["token"])

    def connect(self, user: str, kernel_id: str, token: str) -> KernelSocket:
        ws_url = self.url.replace("http://", "ws://", 1)
        ws = websocket.create_connection(
            f"{ws_url}/user/{user}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {token}"],
            timeout=60,
        )
        return KernelSocket(ws)


@pytest.fixture
def hub(tmp_path: Path, unix_users: dict[str, pwd.struct_passwd]) -> Iterator[Hub]:
    state = tmp_path / "hub"
    state.mkdir()
    config_root = Path("/run") / f"hopx-hub-test-{secrets.token_hex(4)}"
    port, token = free_port(), secrets.token_hex(16)
    proxy = shutil.which("configurable-http-proxy", path=f"{VENV_BIN}:{os.environ['PATH']}")
    assert proxy, "configurable-http-proxy is missing: scripts/bootstrap installs it (npm)"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")},
        "PATH": f"{VENV_BIN}:{Path(proxy).parent}:{os.environ['PATH']}",
        "HOPX_HUB_PORT": str(port),
        "HOPX_HUB_API_PORT": str(free_port()),
        "HOPX_HUB_PROXY_API_PORT": str(free_port()),
        "HOPX_HUB_STATE": str(state),
        "HOPX_HUB_TOKEN": token,
        "HOPX_HUB_PASSWORD": secrets.token_hex(8),
        # Read by the users' servers: not under pytest's own 0700 folder.
        "HOPX_HUB_CONFIG_ROOT": str(config_root),
    }
    log_path = tmp_path / "hub.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(TESTS / "jupyterhub_test_config.py")],
            cwd=state,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    hub = Hub(f"http://127.0.0.1:{port}", token, log_path, process, requests.Session())
    try:
        assert wait_until(lambda: process.poll() is not None or _answers(hub), 60)
        assert process.poll() is None, hub.log()[-3000:]
        yield hub
    finally:
        terminate(process, 60)  # SIGTERM stops every user's server and the proxy
        hub.http.close()
        shutil.rmtree(config_root, ignore_errors=True)


def _answers(hub: Hub) -> bool:
    try:
        return bool(hub.api("GET", "/hub/api/", timeout=2).status_code == 200)
    except requests.RequestException:
        return False


def processes_of(uid: int) -> list[str]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            if int(fields["Uid"].split()[1]) == uid:
                state = fields["State"].split()[0]
                found.append(f"{status.parent.name} {fields['Name'].strip()} {state}")
    return found


def user_cgroup_directories(user: str) -> list[Path]:
    return [
        Path(h.path) / USER_CGROUPS / user
        for h in hierarchies(CgroupHost.detect())
        if (Path(h.path) / USER_CGROUPS / user).exists()
    ]


def test_hub_users_get_sandboxed_kernels_of_their_own(
    hub: Hub, unix_users: dict[str, pwd.struct_passwd]
) -> None:
    alice, bob = unix_users["hopx-alice"], unix_users["hopx-bob"]
    for user in USERS:
        hub.spawn(user)
    tokens = {user: hub.user_token(user) for user in USERS}

    # A notebook naming the stock kernelspec still gets a sandbox.
    response = hub.api(
        "POST", "/user/hopx-bob/api/kernels", tokens["hopx-bob"], json={"name": "python3"}
    )
    assert response.status_code == 201, (response.text, hub.log()[-3000:])
    bob_kernel = response.json()["id"]
    sandboxes = hub.api("GET", "/user/hopx-bob/hopx/api/sandboxes", tokens["hopx-bob"]).json()
    assert [s["kernel_id"] for s in sandboxes] == [bob_kernel]
    assert sandboxes[0]["limits"]["memory"] == 256 << 20
    bob_socket = hub.connect("hopx-bob", bob_kernel, tokens["hopx-bob"])
    probe = bob_socket.value(
        "import json, os\n"
        "def reads(path):\n"
        "    try:\n"
        "        return bool(open(path).read())\n"
        "    except OSError:\n"
        "        return False\n"
        "print(json.dumps({'home': os.path.expanduser('~'),"
        f" 'own': reads('{bob.pw_dir}/private.txt'),"
        f" 'other': reads('{alice.pw_dir}/private.txt'),"
        " 'hub_db': os.path.exists('/etc/shadow') and reads('/etc/shadow')}))"
    )
    bob_socket.close()
    assert probe["other"] is False
    assert probe["hub_db"] is False
    # Its sandbox's cgroup is in the one delegated to its user, and holds its limit.
    directories = user_cgroup_directories("hopx-bob")
    assert directories, "no cgroup delegated to hopx-bob"
    limits = [
        p.read_text().strip() for d in directories for p in d.glob("*/memory.limit_in_bytes")
    ] + [p.read_text().strip() for d in directories for p in d.glob("*/memory.max")]
    assert str(256 << 20) in limits, limits

    # One user reaches nothing of the other's server.
    for path in (
        "/user/hopx-alice/api/kernels",
        "/user/hopx-alice/hopx/api/sandboxes",
        f"/user/hopx-alice/hopx/api/sandboxes/{bob_kernel}/links",
        "/user/hopx-alice/api/contents/private.txt",
    ):
        response = hub.api("GET", path, tokens["hopx-bob"], allow_redirects=False)
        assert response.status_code in (302, 403), (path, response.status_code)
    response = hub.api(
        "POST", "/user/hopx-alice/api/kernels", tokens["hopx-bob"], json={"name": "python3"}
    )
    assert response.status_code in (302, 403)

    # hopx-alice's own settings: a short idle timeout culls her idle kernel.
    response = hub.api(
        "POST", "/user/hopx-alice/api/kernels", tokens["hopx-alice"], json={"name": "python3"}
    )
    assert response.status_code == 201, response.text
    assert wait_until(
        lambda: hub.api("GET", "/user/hopx-alice/api/kernels", tokens["hopx-alice"]).json() == [],
        60,
    ), "hopx-alice's idle kernel was not culled"

    # Servers stopped through the hub leave nothing behind.
    for user in USERS:
        response = hub.api("DELETE", f"/hub/api/users/{user}/server")
        assert response.status_code in (202, 204), response.text
        assert wait_until(lambda user=user: hub.server(user) == {}, 60)
    for user, account in unix_users.items():
        assert wait_until(lambda uid=account.pw_uid: processes_of(uid) == [], 30), processes_of(
            account.pw_uid
        )
        assert user_cgroup_directories(user) == []
    assert not [h for h in hierarchies(CgroupHost.detect()) if Path(h.path, USER_CGROUPS).exists()]


def test_the_doctor_checks_what_a_hub_users_kernels_get(
    unix_users: dict[str, pwd.struct_passwd],
) -> None:
    """`jupyter hopx doctor --hub-user NAME`, as root: the user's cgroup delegated as a spawn
    would, the doctor run as the user inside it, a test kernel started; nothing left after."""
    done = subprocess.run(
        [str(VENV_BIN / "jupyter"), "hopx", "doctor", "--hub-user", "hopx-alice", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["cgroups"]["ok"], checks["cgroups"]
    assert "under 'hopx-users/hopx-alice'" in checks["cgroups"]["found"]
    assert "CPU use counted by the cgroup" in checks["cgroups"]["found"]
    assert checks["test kernel"]["ok"], checks["test kernel"]
    assert user_cgroup_directories("hopx-alice") == []
    uid = unix_users["hopx-alice"].pw_uid
    assert wait_until(lambda: processes_of(uid) == [], 30), processes_of(uid)
    refused = subprocess.run(
        [str(VENV_BIN / "jupyter"), "hopx", "doctor", "--hub-user", "hopx-nobody-here"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "there is no Unix user 'hopx-nobody-here'" in refused.stderr
