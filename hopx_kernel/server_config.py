"""What a Jupyter server started here would run with, as far as untrusted notebooks go: whether
lockdown is on, whether terminals open, which kernelspecs start sandboxed and which do not, which
of those mount their notebook folder read-write, and whether its contents manager follows links.

Read from the config files the way jupyter_server reads them at start-up (its
`jupyter_server_config` files in the Jupyter config path, or the one named with --config, and the
extensions enabled in every `jupyter_server_config.d`), without starting a server.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_server.serverapp import ServerApp

from hopx_kernel import contents, lockdown
from hopx_kernel.kernelspec import hopx_kernelspecs, provisioner_of

TERMINALS_EXTENSION = "jupyter_server_terminals"
# The extension that installs HopxContentsManager when no contents manager is chosen.
HOPX_EXTENSION = "hopx_kernel"


@dataclass(frozen=True)
class ServerConfig:
    # The directories whose jupyter_server_config files (or, with config_file, whose
    # jupyter_server_config.d extension switches only) were read.
    config_dirs: list[str]
    config_file: str
    lockdown: bool
    # Why terminals cannot be opened; "" when they can.
    terminals_off: str
    # Kernelspecs that start under Hopx, and the others with the provisioner they start under.
    # Both include kernelspecs that KernelSpecManager.allowed_kernelspecs hides: a start by name
    # still works for them.
    hopx: list[str] = field(default_factory=list)
    unsandboxed: dict[str, str] = field(default_factory=dict)
    # The Hopx kernelspecs whose notebook folder is mounted read-write (workspace "rw").
    read_write: list[str] = field(default_factory=list)
    # The contents manager class the server would use, and whether it follows symbolic links.
    contents_manager: str = ""
    follows_links: bool = False


def load(config_file: str | None = None) -> ServerConfig:
    """The configuration a `jupyter server` (with `--config=config_file`, if given) would start
    with here. Raises OSError for a config file that is not there and whatever a broken config
    file raises."""
    # A server logs a broken config file and starts without it; here it is reported.
    app = ServerApp(log_level="CRITICAL", raise_config_file_errors=True)
    if config_file:
        if not os.path.isfile(config_file):
            msg = f"no config file {config_file}"
            raise FileNotFoundError(msg)
        app.config_file = os.path.abspath(config_file)
    app.load_config_file(suppress_errors=False)
    app.find_server_extensions()
    extensions = app.jpserver_extensions
    in_lockdown = bool(extensions.get(lockdown.EXTENSION, False))

    specs = KernelSpecManager(parent=app)
    specs.allowed_kernelspecs = set()
    listing = specs.get_all_specs()
    # A factory of its own, configured from this config: the process-wide one may already exist
    # with another.
    default = KernelProvisionerFactory(parent=app).default_provisioner_name
    hopx = hopx_kernelspecs(listing, default)
    unsandboxed = {
        name: provisioner_of(model["spec"].get("metadata") or {}, default)
        for name, model in sorted(listing.items())
        if name not in hopx
    }
    default_workspace = app.config.get("HopxProvisioner", {}).get("workspace", "ro")
    read_write = [
        name
        for name in hopx
        if _provisioner_config(listing[name]).get("workspace", default_workspace) == "rw"
    ]
    manager = _contents_manager(app, in_lockdown)
    return ServerConfig(
        config_dirs=list(app.config_file_paths),
        config_file=app.config_file,
        lockdown=in_lockdown,
        terminals_off=_terminals_off(app, in_lockdown),
        hopx=hopx,
        unsandboxed=unsandboxed,
        read_write=read_write,
        contents_manager=f"{manager.__module__}.{manager.__qualname__}",
        follows_links=contents.follows_links(manager),
    )


def _provisioner_config(model: dict[str, Any]) -> dict[str, Any]:
    stanza = (model["spec"].get("metadata") or {}).get("kernel_provisioner")
    config = stanza.get("config") if isinstance(stanza, dict) else None
    return config if isinstance(config, dict) else {}


def _contents_manager(app: ServerApp, in_lockdown: bool) -> type:
    """The class the server's contents manager would be: the admin's choice, else the one the
    hopx_kernel extension or lockdown installs, else jupyter_server's default."""
    chosen: type = app.contents_manager_class
    explicit = "contents_manager_class" in app.config.get("ServerApp", {})
    if not explicit and (in_lockdown or app.jpserver_extensions.get(HOPX_EXTENSION, False)):
        return contents.HopxContentsManager
    return chosen


def _terminals_off(app: ServerApp, in_lockdown: bool) -> str:
    if in_lockdown:
        return "lockdown turns them off"
    if not app.terminals_enabled:
        return "ServerApp.terminals_enabled is False"
    if not app.jpserver_extensions.get(TERMINALS_EXTENSION, False):
        return f"the {TERMINALS_EXTENSION} extension is not enabled"
    for module in (TERMINALS_EXTENSION, "terminado"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return ""
