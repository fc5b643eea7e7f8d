"""The example hub (examples/jupyterhub), as the tests run it: on loopback ports the tests pick,
with users who log in with a test password, an API token for the tests, and per-user settings
that let the tests see them apply (hopx-alice: a short idle timeout, 256M)."""

# ruff: noqa: F821 - `c` and `load_subconfig` are given by JupyterHub's config loader.

import os
import sys
from pathlib import Path

load_subconfig(
    str(Path(__file__).parent.parent / "examples" / "jupyterhub" / "jupyterhub_config.py")
)

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["HOPX_HUB_PASSWORD"]
c.Authenticator.allowed_users = {"hopx-alice", "hopx-bob"}
c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ['HOPX_HUB_PORT']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ['HOPX_HUB_API_PORT']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['HOPX_HUB_PROXY_API_PORT']}"
c.JupyterHub.db_url = f"sqlite:///{os.environ['HOPX_HUB_STATE']}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{os.environ['HOPX_HUB_STATE']}/cookie_secret"
c.JupyterHub.pid_file = f"{os.environ['HOPX_HUB_STATE']}/jupyterhub.pid"
c.JupyterHub.services = [{"name": "hopx-tests", "api_token": os.environ["HOPX_HUB_TOKEN"]}]
c.JupyterHub.load_roles = [
    {
        "name": "hopx-tests",
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
        "services": ["hopx-tests"],
    }
]
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.HopxSpawner.hopx_config_root = os.environ["HOPX_HUB_CONFIG_ROOT"]


def test_settings(spawner):
    settings = {"memory_limit": "256M", "idle_timeout": "1h"}
    if spawner.user.name == "hopx-alice":
        settings.update(idle_timeout="6s", warn_before="2s", cull_interval="1s")
    return settings


c.HopxSpawner.hopx_settings = test_settings
