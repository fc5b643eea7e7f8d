"""What a Jupyter server started here would run with, as far as untrusted notebooks go: whether
lockdown is on, whether terminals open, which kernelspecs start sandboxed and which do not.

Read from the config files the way jupyter_server reads them at start-up (its
`jupyter_server_config` files in the Jupyter config path, or the one named with --config, and the
extensions enabled in every `jupyter_server_config.d`), without starting a server.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_server.serverapp import ServerApp

from hopx_kernel import lockdown
from hopx_kernel.kernelspec import hopx_kernelspecs, provisioner_of

TERMINALS_EXTENSION = "jupyter_server_terminals"


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
    return ServerConfig(
        config_dirs=list(app.config_file_paths),
        config_file=app.config_file,
        lockdown=in_lockdown,
        terminals_off=_terminals_off(app, in_lockdown),
        hopx=hopx,
        unsandboxed=unsandboxed,
    )


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
