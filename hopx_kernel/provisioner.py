"""`HopxProvisioner`: the jupyter_client kernel provisioner that starts kernels in a sandbox.

jupyter_client creates one provisioner per kernel (kernelspec `metadata.kernel_provisioner`:
`{"provisioner_name": "hopx-provisioner", "config": {...}}`); the `config` dict sets the traits
below for that kernelspec, on top of `c.HopxProvisioner.*` from the server's config.

Each launch starts a fresh sandbox through a supervisor process (see `runtime.supervisor`). The
client side of the connection uses `ipc://` sockets in a 0700 directory and CurveZMQ keys; the
kernel inside listens on its own loopback and the supervisor relays bytes in between.

The timeout policy's settings live here too, so they can be set per kernelspec. The supervisor
enforces `max_lifetime` wherever the kernel runs; the rest is applied by the server extension
(`hopx_kernel.culler`). A kernel stopped by the policy or by hand is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Dict, List, TraitError, Unicode, default, validate

from hopx_kernel import events, network_events
from hopx_kernel.environment import (
    DEFAULT_ENV_ALLOWLIST,
    python_paths,
    resolve_mounts,
    sandbox_env,
)
from hopx_kernel.hidden import (
    DEFAULT_HIDDEN_CREDENTIALS,
    credential_places,
    expand_home,
    folders_holding_credentials,
    jupyter_directories,
)
from hopx_kernel.host import check_host, state_root, sweep_stale_sandboxes
from hopx_kernel.log_redaction import LOG_REDACTION
from hopx_kernel.policy import POLICY_STOP_REASONS, CullPolicy
from hopx_kernel.restarter import PolicyAwareRestarter
from hopx_kernel.secret_refs import (
    SecretError,
    Sources,
    aws_secrets_manager,
    parse_secrets,
    resolve,
    too_short_to_mask,
)
from hopx_kernel.secret_store import SecretStore
from hopx_kernel.traits import ByteSize, Count, Cpus, Duration, SandboxNetwork, UidRangeText
from runtime.bwrap import is_within
from runtime.cgroups import SandboxCgroup, read_cpu_seconds, read_memory_usage
from runtime.connection_log import DEFAULT_MAX_BYTES
from runtime.handle import SandboxStartError, SupervisorHandle
from runtime.host_uids import DEFAULT_RANGE as DEFAULT_UID_RANGE
from runtime.host_uids import accounts_in_range, parse_uid_range
from runtime.kernel_launcher import MIN_MASKED_LENGTH
from runtime.listening_ports import listening_ports
from runtime.network_policy import parse_rules
from runtime.registry import is_supervisor
from runtime.sandbox_address import ADDRESS_CLAIMS_DIR, DEFAULT_SANDBOX_NETWORK
from runtime.sandbox_network import LISTENER_PORT
from runtime.spec import (
    CHANNEL_PORTS,
    CONNECTION_FILE,
    SANDBOX_HOME,
    SANDBOX_IP,
    WORKSPACE_MODES,
    Channel,
    Limits,
    SandboxSpec,
    WorkspaceMode,
)
from runtime.systemd_scope import scope_launcher
from runtime.units import LimitError, format_duration, format_size
from runtime.zmtp import MIN_MAX_FRAME_BYTES

# Constructor arguments jupyter_client itself passes; anything else must be a setting.
_FRAMEWORK_KWARGS = {"kernel_id", "kernel_spec", "parent", "config", "log"}
# Longest path a unix socket can bind to (sun_path is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107
# Looking at a kernel's activity more often than this would only burn the server's CPU.
MIN_CULL_INTERVAL = 0.1


class HopxProvisioner(KernelProvisionerBase):
    """Starts each kernel in a fresh bubblewrap sandbox with cgroup limits and no network."""

    memory_limit = ByteSize(
        "2G",
        config=True,
        help="""Memory the kernel may use, all its processes and its /tmp and $HOME together,
        e.g. '512M' or '2G'. An allocation beyond it kills the kernel (OOM). 0 means no limit.""",
    )
    cpu_limit = Cpus(
        1.0,
        config=True,
        help="""CPU time the kernel may use, in cores (0.5 = half a core). 0 means no limit.""",
    )
    pids_limit = Count(
        512,
        config=True,
        help="""Most processes and threads the kernel may have at once. Stops fork bombs.
        0 means no limit.""",
    )
    disk_limit = ByteSize(
        "1G",
        config=True,
        help="""Size of each of the kernel's scratch filesystems (/tmp, $HOME and /dev/shm),
        e.g. '1G'. They live in memory and count towards memory_limit. 0 means only
        memory_limit caps them.""",
    )
    files_limit = Count(
        1_000_000,
        config=True,
        help="""Most files and directories in each of the kernel's scratch filesystems; past it
        a new file fails with "No space left on device". 0 means only memory_limit caps them.""",
    )
    workspace = Unicode(
        "ro",
        config=True,
        help="""How the kernel sees the notebook's folder (its working directory): 'ro'
        read-only (default), 'rw' read-write, or 'none' not at all (the kernel starts in its
        empty home directory).""",
    )
    read_only_paths = List(
        Unicode(),
        config=True,
        help="""Extra host paths the kernel sees read-only at the same place, e.g. a shared
        data set: ['/srv/datasets']. The kernel's own Python installation is added
        automatically.""",
    )
    hidden_paths = List(
        Unicode(),
        config=True,
        help="""Host files and folders hidden (shown empty) wherever a mount would expose
        them: absolute, or below the server user's home as '~/...', e.g. ['/srv/private',
        '~/work/.env']. Jupyter's runtime, config and data directories are always hidden.""",
    )
    hidden_credentials = List(
        Unicode(),
        default_value=list(DEFAULT_HIDDEN_CREDENTIALS),
        config=True,
        help="""Credential files and folders, relative to a home folder ('.ssh', '.aws',
        '.netrc', ...), hidden wherever a mount exposes them: in the workspace, its
        subfolders, the server user's home and read_only_paths. The default lists where
        common tools keep keys and tokens; [] shows them all.""",
    )
    env_allowlist = List(
        Unicode(),
        default_value=list(DEFAULT_ENV_ALLOWLIST),
        config=True,
        help="""Names (fnmatch patterns) of the server's environment variables passed to the
        kernel. Everything else, tokens included, stays out; the kernelspec's `env` is always
        applied.""",
    )
    allow_unenforced_limits = Bool(
        False,
        config=True,
        help="""Start kernels even where the host cannot enforce a limit (a missing cgroup
        controller, no delegated cgroup), with a warning. By default such a start fails.""",
    )
    sandbox_uid_range = UidRangeText(
        DEFAULT_UID_RANGE,
        config=True,
        help="""When the server runs as root: the host uids ("FIRST-LAST") sandboxes run as, one
        of its own for each running sandbox (its gid has the same number). No account of the
        host may lie in it. Ignored otherwise: the sandbox then runs as the server's own
        user.""",
    )
    sandbox_network = SandboxNetwork(
        DEFAULT_SANDBOX_NETWORK,
        config=True,
        help="""The IPv4 block each sandbox's own address comes from, one address per running
        sandbox of the host, e.g. '100.64.0.0/16' (the default, inside the carrier-grade NAT
        space no real network routes to hosts). It must lie inside 100.64.0.0/10, 10.0.0.0/8,
        172.16.0.0/12 or 192.168.0.0/16; pick one the host's own networks do not use.""",
    )
    network_allow = List(
        Unicode(),
        config=True,
        help="""Where the kernel may connect out to: host names ('pypi.org'), wildcards
        ('*.pythonhosted.org'), with a port ('pypi.org:443') or a range ('host:8000-8100'),
        address blocks with an optional port ('10.1.2.0/24:5432', which is also the only way to
        a private address), '*' for any public destination, and presets ('preset:pypi',
        'preset:conda'). The default, [], allows nothing: the kernel has no outbound traffic at
        all.""",
    )
    network_deny = List(
        Unicode(),
        config=True,
        help="""Destinations refused even when network_allow allows them, written the same
        way, e.g. ['*.example.org', '10.0.0.0/8'].""",
    )
    secrets = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Named secrets for the kernel's environment: each variable and where its value
        comes from, e.g. {"OPENAI_API_KEY": "store:openai", "DB_PASSWORD":
        "file:/run/secrets/db"}. Providers: env:NAME (the server's environment), file:/path,
        store:NAME (the encrypted store, `jupyter hopx secrets`), exec:COMMAND (what it prints;
        no shell), aws:SECRET_ID[#KEY] (AWS Secrets Manager, the `aws` extra). Values are
        fetched at each start and given to the kernel's environment only.""",
    )
    secret_store = Unicode(
        config=True,
        help="""The encrypted store store:NAME secrets come from; by default hopx/secrets.json in
        Jupyter's data directory. Its key is secrets.key beside it, or base64 in the server's
        HOPX_SECRETS_KEY.""",
    )
    secret_command_timeout = Duration(
        10.0,
        config=True,
        help="""How long an exec: secret's command may take (seconds, or e.g. '30s').""",
    )
    connection_log = Unicode(
        config=True,
        help="""The JSON-lines file every outbound attempt of every sandbox is logged to,
        allowed or denied, e.g. '/var/log/hopx/connections.jsonl'; '' logs nowhere. Defaults to
        hopx-connections.jsonl in Jupyter's runtime directory.""",
    )
    connection_log_max_size = ByteSize(
        "64M",
        config=True,
        help="""The size past which the connection log is rotated (to .1, .2, ...), e.g. '64M'.""",
    )
    connection_log_backups = Count(
        5,
        config=True,
        help="""How many rotated connection logs are kept; 0 keeps none.""",
    )
    max_lifetime = Duration(
        "24h",
        config=True,
        help="""Hard cap on a kernel's age from its first start, busy or not, e.g. '8h'; a restart
        does not reset it. Enforced by the sandbox's supervisor, so it holds without a Jupyter
        server (papermill, nbclient). 0 disables it.""",
    )
    idle_timeout = Duration(
        "1h",
        config=True,
        help="""Cull a kernel after this long without a client request, output or finished
        execution, e.g. '30m'. Applied by the Hopx server extension. 0 disables it.""",
    )
    cull_busy = Bool(
        False,
        config=True,
        help="""Whether a kernel that is busy (running a cell, even a silent one) may be culled for
        idleness. The max lifetime applies to busy kernels regardless.""",
    )
    warn_before = Duration(
        "5m",
        config=True,
        help="""How long before a cull its warning event is emitted (for the UI and admins),
        e.g. '5m'. 0 means no warning ahead.""",
    )
    cull_interval = Duration(
        "30s",
        config=True,
        help="""How often the server extension looks at this kernel's activity, e.g. '30s'. A
        known deadline is acted on when it falls due, not at the next check.""",
    )
    cgroup_parent = Unicode(
        "",
        config=True,
        help="""Cgroup under which each sandbox's cgroup is made, relative to the root of every
        cgroup hierarchy, e.g. 'hopx.slice' or a directory delegated to an unprivileged server.
        '' (default) means the root, which needs root.""",
    )
    systemd_scope = Bool(
        False,
        config=True,
        help="""Start each sandbox's supervisor in a transient systemd scope (`systemd-run
        --scope -p Delegate=yes`, through the user's own systemd when not root) and put the
        sandbox's limits in a cgroup inside it. For unprivileged servers on systemd hosts where
        that is how cgroups are delegated; cgroup_parent must then be ''.""",
    )
    max_frame_size = ByteSize(
        "256M",
        config=True,
        help="""Largest ZeroMQ frame the kernel may send its client (the Jupyter server,
        papermill), e.g. '256M'. One output's data (a figure, a table's HTML) travels in one
        frame. A larger frame, or anything else the ZeroMQ protocol does not allow, stops the
        kernel (reason "protocol") before the client allocates memory for it. At least '1M';
        there is no "no limit".""",
    )
    start_timeout = Duration(
        "30s",
        config=True,
        help="""How long to wait for the sandbox to be set up before the start fails.""",
    )
    bwrap_path = Unicode(
        config=True,
        help="""The bubblewrap executable. Defaults to `bwrap` on PATH.""",
    )

    @default("bwrap_path")
    def _bwrap_path_default(self) -> str:
        return shutil.which("bwrap") or "bwrap"

    @validate("workspace")
    def _validate_workspace(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if value not in WORKSPACE_MODES:
            msg = f"workspace {value!r} is not a workspace mode; use one of 'ro', 'rw' or 'none'"
            raise TraitError(msg)
        return str(value)

    @default("connection_log")
    def _connection_log_default(self) -> str:
        return os.path.join(jupyter_runtime_dir(), "hopx-connections.jsonl")

    @validate("network_allow", "network_deny")
    def _validate_network_rules(self, proposal: dict[str, Any]) -> list[str]:
        try:
            parse_rules(proposal["trait"].name, proposal["value"])
        except LimitError as e:
            raise TraitError(str(e)) from e
        return [str(rule).strip() for rule in proposal["value"]]

    @validate("secrets")
    def _validate_secrets(self, proposal: dict[str, Any]) -> dict[str, str]:
        try:
            parse_secrets(proposal["value"], f"{type(self).__name__}.secrets")
        except SecretError as e:
            raise TraitError(str(e)) from e
        return dict(proposal["value"])

    @validate("cull_interval")
    def _validate_cull_interval(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] < MIN_CULL_INTERVAL:
            msg = f"cull_interval must be at least {MIN_CULL_INTERVAL} s; use e.g. '30s'"
            raise TraitError(msg)
        return float(proposal["value"])

    @validate("max_frame_size")
    def _validate_max_frame_size(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < MIN_MAX_FRAME_BYTES:
            msg = (
                f"max_frame_size {format_size(value)} is below 1M; every kernel's frames have a "
                "bound, use e.g. '256M'"
            )
            raise TraitError(msg)
        return value

    @validate("read_only_paths", "hidden_paths")
    def _validate_paths(self, proposal: dict[str, Any]) -> list[str]:
        name = proposal["trait"].name
        home_relative = name == "hidden_paths"
        for path in proposal["value"]:
            if home_relative and (path == "~" or path.startswith("~/")):
                continue
            if not os.path.isabs(path):
                example = "'/srv/private' or '~/private'" if home_relative else "'/srv/data'"
                msg = f"{name} entry {path!r} is not absolute; use e.g. {example}"
                raise TraitError(msg)
        return [os.path.normpath(p) for p in proposal["value"]]

    @validate("hidden_credentials")
    def _validate_credentials(self, proposal: dict[str, Any]) -> list[str]:
        for name in proposal["value"]:
            parts = name.split("/")
            if not name or os.path.isabs(name) or ".." in parts or "" in parts:
                msg = (
                    f"hidden_credentials entry {name!r} is not a path below a home folder; "
                    "use e.g. '.ssh' or '.config/gcloud'"
                )
                raise TraitError(msg)
        return list(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        settings = set(self.class_trait_names(config=True))
        unknown = sorted(set(kwargs) - _FRAMEWORK_KWARGS - settings)
        if unknown:
            msg = (
                f"unknown setting {unknown[0]!r} in the kernelspec's kernel_provisioner.config; "
                f"valid settings are: {', '.join(sorted(settings))}"
            )
            raise TraitError(msg)
        super().__init__(**kwargs)
        if self.systemd_scope and self.cgroup_parent:
            msg = (
                f"systemd_scope puts each sandbox's cgroup in a scope of its own, so cgroup_parent "
                f"({self.cgroup_parent!r}) cannot apply; set one of them, e.g. cgroup_parent = ''"
            )
            raise TraitError(msg)
        self.supervisor: SupervisorHandle | None = None
        self.cwd: str | None = None
        self._pid: int | None = None
        self._spec_env: dict[str, str] = {}
        self._session_name = ""
        # Why the last sandbox ended ("exited", "oom", "max_lifetime", "manual", ...).
        self.last_exit_reason = ""
        # Why whoever is stopping the kernel (the culler) is stopping it; wins over what the
        # supervisor saw (a culled kernel merely "exited" after its shutdown request).
        self.stop_reason = ""
        # When the kernel first started: its max lifetime counts from here across restarts.
        self.first_started: float | None = None
        self._reported: SupervisorHandle | None = None
        # A sandbox that has ended but whose "stopped" event is still to be emitted (by cleanup,
        # which knows whether a restart follows).
        self._unannounced: SupervisorHandle | None = None
        # The variables of the secrets the kernel got at its last start (never their values).
        self.secret_names: list[str] = []

    # -- provisioner contract -------------------------------------------------------------------

    @property
    def _km(self) -> Any:
        """The KernelManager this provisioner works for (jupyter_client always sets it)."""
        if self.parent is None:
            msg = "HopxProvisioner needs its KernelManager as parent"
            raise RuntimeError(msg)
        return self.parent

    @property
    def has_process(self) -> bool:
        return self.supervisor is not None

    @property
    def policy(self) -> CullPolicy:
        return CullPolicy(
            idle_timeout=self.idle_timeout,
            max_lifetime=self.max_lifetime,
            cull_busy=self.cull_busy,
            warn_before=self.warn_before,
        )

    @property
    def stopped_by_policy(self) -> bool:
        """Whether the last sandbox was stopped by the timeout policy or by hand."""
        return self.last_exit_reason in POLICY_STOP_REASONS

    @property
    def state_dir(self) -> str:
        """This kernel's host directory: its relay sockets and sandbox record. Kept across
        restarts because clients reconnect to the same socket paths."""
        return os.path.join(state_root(), self.kernel_id)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Called by KernelManager.pre_start_kernel before every start and restart.

        Checks the host, writes the client-side connection file (ipc + CurveZMQ) and builds the
        kernel command; the sandbox itself is made in launch_kernel.
        """
        km = self._km
        self._refuse_restart_after_policy_stop()
        check_host(self.bwrap_path)
        sweep_stale_sandboxes(self.log, self.cgroup_parent)
        _use_policy_aware_restarter(km)
        channel_prefix = os.path.join(self.state_dir, "ch")
        if len(channel_prefix) + 2 > _MAX_SOCKET_PATH:
            msg = (
                "Set JUPYTER_RUNTIME_DIR to a shorter path: the runtime directory "
                f"{jupyter_runtime_dir()!r} is too deep for unix sockets."
            )
            raise RuntimeError(msg)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        if not km.connection_file:
            # A bare KernelManager (papermill, nbclient) would write it to a temporary file in
            # /tmp; keep it in the private runtime directory with the rest.
            km.connection_file = os.path.join(
                jupyter_runtime_dir(), f"kernel-{self.kernel_id}.json"
            )
        km.transport = "ipc"
        km.ip = channel_prefix
        for number, name in enumerate(CHANNEL_PORTS, start=1):
            setattr(km, f"{name}_port", number)
        if km.curve_publickey is None:
            km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()
        host_env = kwargs.get("env") or os.environ
        self._session_name = host_env.get("JPY_SESSION_NAME", "")
        km.write_connection_file(jupyter_session=self._session_name)
        self.connection_info = km.get_connection_info()

        extra_arguments = kwargs.pop("extra_arguments", [])
        cmd = km.format_kernel_cmd(extra_arguments=extra_arguments)
        host_connection_file = os.path.realpath(km.connection_file)
        cmd = [CONNECTION_FILE if arg == host_connection_file else arg for arg in cmd]
        kwargs = await super().pre_launch(cmd=cmd, **kwargs)
        # The base class merged the kernelspec's env (with ${VAR} substitutions) into env.
        self._spec_env = {k: kwargs["env"][k] for k in (self.kernel_spec.env or {})}
        return kwargs

    def _refuse_restart_after_policy_stop(self) -> None:
        """A culled or killed kernel stays stopped, and no restart outlives the max lifetime."""
        reason = ""
        if self.stopped_by_policy:
            reason = self.last_exit_reason
        elif self._lifetime_left() == 0:
            reason = "max_lifetime"
        if reason:
            self._km.stop_restarter()
            msg = (
                f"Start a new kernel: Hopx kernel {self.kernel_id} was stopped ({reason}) and "
                "is not restarted."
            )
            raise RuntimeError(msg)

    def _lifetime_left(self) -> float | None:
        """Seconds of max lifetime left (never negative); None when there is no cap."""
        if not self.max_lifetime:
            return None
        if self.first_started is None:
            return float(self.max_lifetime)
        return max(0.0, self.first_started + self.max_lifetime - time.time())

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Called by KernelManager after pre_launch: start the sandbox, return connection info."""
        try:
            spec = self._sandbox_spec(cmd, kwargs)
            # Fetched at each start and restart; held only until the supervisor has them.
            values = await asyncio.to_thread(self._secret_values) if self.secrets else {}
            self._received_secrets(values)
            self.supervisor = await asyncio.to_thread(
                SupervisorHandle.start,
                spec,
                timeout=self.start_timeout,
                launcher=scope_launcher(spec.sandbox_id) if self.systemd_scope else (),
                secrets=values,
            )
            del values
        except (SandboxStartError, RuntimeError, OSError, SecretError) as e:
            LOG_REDACTION.remove(self.kernel_id)
            # jupyter_client does not clean up after a failed launch: leave nothing behind.
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._km.cleanup_connection_file()
            # What to do comes first: JupyterLab's dialog shows the message as one paragraph.
            msg = f"{e} (Hopx could not start a sandbox for kernel {self.kernel_id}.)"
            raise RuntimeError(msg) from e
        self._pid = self.supervisor.pid
        if self.first_started is None:
            self.first_started = self.supervisor.started_at
        self.last_exit_reason = self.stop_reason = ""
        for warning in self.supervisor.started.get("warnings", []):
            self.log.warning("Hopx kernel %s runs without a limit: %s", self.kernel_id, warning)
        self.log.info(
            "Hopx kernel %s started in sandbox %s (supervisor pid %s)",
            self.kernel_id,
            spec.sandbox_id,
            self._pid,
        )
        self.emit_event("started", f"Kernel {self.kernel_id} started in sandbox {spec.sandbox_id}.")
        self._report_network_events(self.supervisor)
        return self.connection_info

    def _report_network_events(self, supervisor: SupervisorHandle) -> None:
        """The sandbox's outbound connections as `network` events, batched (see
        hopx_kernel.network_events), emitted on the server's loop; only for a kernel with a
        policy, in a server with an event bus."""
        if not self.network_allow or getattr(self.parent, "event_logger", None) is None:
            return
        loop = asyncio.get_running_loop()

        def schedule(delay: float, callback: Callable[[], None]) -> None:
            with contextlib.suppress(RuntimeError):  # the server's loop has closed
                loop.call_soon_threadsafe(loop.call_later, delay, callback)

        def emit(records: list[dict[str, Any]], omitted: int) -> None:
            # In the order the connections began (each record comes when its connection ends).
            records = sorted(records, key=lambda r: float(r.get("started") or 0))
            self.emit_event(
                "network",
                network_events.summary(self.kernel_id, records, omitted),
                sandbox_id=supervisor.spec.sandbox_id,
                connections=[network_events.event_record(r) for r in records],
                omitted=omitted,
                totals=supervisor.network.totals(),
            )

        supervisor.network.subscribe(network_events.NetworkEventBatcher(emit, schedule).add)

    def _sandbox_spec(self, cmd: list[str], kwargs: dict[str, Any]) -> SandboxSpec:
        km = self._km
        cwd = os.path.realpath(kwargs.get("cwd") or os.getcwd())
        self.cwd = cwd
        workspace: str | None = cwd
        if self.workspace == "none" or cwd == "/":
            workspace = None  # the whole host is never a workspace
        if workspace and self.workspace == "rw":
            self._check_writable_folder_owner(workspace)
        if os.geteuid() == 0:
            self._check_uid_range_is_free()
        python = cmd[0] if cmd else sys.executable
        read_only, symlinks = resolve_mounts([*python_paths(python), *self.read_only_paths])
        # Every Jupyter directory, not only the user's: an admin's token may sit in
        # {sys.prefix}/etc/jupyter, which the kernel's own Python installation would expose.
        hidden = [*jupyter_directories(), *(expand_home(p) for p in self.hidden_paths)]
        credential_dirs, credential_files = credential_places(
            folders_holding_credentials(workspace, read_only), self.hidden_credentials
        )
        python_bin = os.path.dirname(shutil.which(python) or python)
        kernel_connection = {
            "transport": "tcp",
            "ip": SANDBOX_IP,
            **{f"{name}_port": port for name, port in CHANNEL_PORTS.items()},
            "key": km.session.key.decode(),
            "signature_scheme": km.session.signature_scheme,
            "kernel_name": km.kernel_name,
            "curve_publickey": km.curve_publickey.decode(),
            "curve_secretkey": km.curve_secretkey.decode(),
        }
        root = os.geteuid() == 0
        return SandboxSpec(
            sandbox_id=f"{self.kernel_id[:8]}-{secrets.token_hex(3)}",
            kernel_id=self.kernel_id,
            argv=tuple(cmd),
            env=self._kernel_env(python_bin, workspace),
            connection_json=json.dumps(kernel_connection),
            channels=tuple(
                Channel(name, f"{km.ip}-{number}", port)
                for number, (name, port) in enumerate(CHANNEL_PORTS.items(), start=1)
            ),
            state_dir=self.state_dir,
            limits=Limits(
                memory=self.memory_limit,
                cpus=self.cpu_limit,
                pids=self.pids_limit,
                disk=self.disk_limit,
                files=self.files_limit,
            ),
            allow_unenforced_limits=self.allow_unenforced_limits,
            workspace=workspace,
            workspace_mode=cast(WorkspaceMode, self.workspace if workspace else "none"),
            read_only_paths=tuple(read_only),
            hidden_paths=(
                *(os.path.realpath(p) for p in hidden if os.path.isdir(p)),
                *credential_dirs,
            ),
            hidden_files=(
                os.path.realpath(km.connection_file),
                *(os.path.realpath(p) for p in hidden if os.path.isfile(p)),
                *credential_files,
            ),
            symlinks=tuple(symlinks),
            cwd=workspace or SANDBOX_HOME,
            host_uid_range=self.sandbox_uid_range if root else None,
            owner_files=(os.path.realpath(km.connection_file),),
            max_lifetime=self._lifetime_left() or 0.0,
            max_frame_size=self.max_frame_size,
            stop_notices=self._stop_notices(cmd),
            cgroup_parent=self.cgroup_parent,
            cgroup_within_own=self.systemd_scope,
            sandbox_network=self.sandbox_network,
            network_allow=tuple(self.network_allow),
            network_deny=tuple(self.network_deny),
            connection_log=self.connection_log,
            connection_log_max_bytes=self.connection_log_max_size or DEFAULT_MAX_BYTES,
            connection_log_backups=self.connection_log_backups,
            kernelspec_name=km.kernel_name,
            notebook=self._session_name,
            user=os.environ.get("JUPYTERHUB_USER") or getpass.getuser(),
            # Shared by every server of the host when root; a user of their own otherwise.
            address_claims_dir=ADDRESS_CLAIMS_DIR if root else f"{state_root()}-addresses",
            bwrap=shutil.which(self.bwrap_path) or self.bwrap_path,
        )

    def _received_secrets(self, values: dict[str, str]) -> None:
        """Note which secrets the kernel gets (names only), warn of values too short to be
        masked, and keep them out of this process's log."""
        self.secret_names = sorted(values)
        if not values:
            LOG_REDACTION.remove(self.kernel_id)
            return
        LOG_REDACTION.add(self.kernel_id, values)
        if short := too_short_to_mask(values):
            self.log.warning(
                "Hopx kernel %s: the secrets %s are shorter than %d characters: the kernel has "
                "them, but they are not masked in its output or the log",
                self.kernel_id,
                ", ".join(short),
                MIN_MASKED_LENGTH,
            )

    def _secret_values(self) -> dict[str, str]:
        refs = parse_secrets(self.secrets, f"{type(self).__name__}.secrets")
        store = SecretStore(Path(self.secret_store) if self.secret_store else None)
        uses_aws = any(ref.provider == "aws" for ref in refs)
        sources = Sources(
            environ=os.environ,
            store=store,
            exec_timeout=self.secret_command_timeout,
            aws=aws_secrets_manager() if uses_aws else None,
        )
        return resolve(refs, sources)

    def _stop_notices(self, cmd: list[str]) -> dict[str, str]:
        """What a running cell says when the sandbox is stopped under it (IPython kernels only:
        the notice is an IPython startup file)."""
        if not any("ipykernel" in arg for arg in cmd):
            return {}
        lifetime = f" of {format_duration(self.max_lifetime)}" if self.max_lifetime else ""
        idle = f" of {format_duration(self.idle_timeout)}" if self.idle_timeout else ""
        return {
            "max_lifetime": (
                f"Hopx stopped this kernel: it reached its maximum lifetime{lifetime} "
                "(max_lifetime). Start a new kernel to continue."
            ),
            "idle": f"Hopx stopped this kernel: it was idle beyond its idle timeout{idle}.",
            "manual": "Hopx stopped this kernel: it was killed by hand.",
        }

    def _kernel_env(self, python_bin: str, workspace: str | None) -> dict[str, str]:
        env = sandbox_env(os.environ, self._spec_env, self.env_allowlist, python_bin, workspace)
        # The notebook's path (ipykernel's __session__) is the one server variable a kernel
        # needs; it names a file the kernel can see anyway, so only such a path goes in.
        session = os.path.realpath(self._session_name) if self._session_name else ""
        if workspace and session and is_within(session, workspace):
            env["JPY_SESSION_NAME"] = session
        return env

    def _check_uid_range_is_free(self) -> None:
        """A sandbox uid that is also an account's would act as that account on the host."""
        taken = accounts_in_range(parse_uid_range("sandbox_uid_range", self.sandbox_uid_range))
        if taken:
            msg = (
                f"Set sandbox_uid_range to a range no account uses, e.g. '{DEFAULT_UID_RANGE}': "
                f"{self.sandbox_uid_range} holds host accounts: {', '.join(taken[:3])}."
            )
            raise RuntimeError(msg)

    @staticmethod
    def _check_writable_folder_owner(folder: str) -> None:
        """A read-write folder is mounted as its owner's: in root's, every file the kernel made
        (a setuid binary included) would be root's on the host."""
        if os.stat(folder).st_uid == 0:
            msg = (
                f"Set workspace = 'ro', or give {folder} to an ordinary user (chown): it is owned "
                "by root, and with workspace = 'rw' what the kernel writes there would be root's."
            )
            raise RuntimeError(msg)

    async def poll(self) -> int | None:
        """Called by KernelManager.is_alive and the restarter: None while the sandbox runs."""
        if self.supervisor is None:
            # Known only from load_provisioner_info: alive while its supervisor runs.
            return None if self._pid and is_supervisor(self._pid) else 0
        status = self.supervisor.poll()
        if status is not None:
            self._report_exit(status)
        return status

    async def wait(self) -> int | None:
        """Called during shutdown: wait until the sandbox and its supervisor have ended."""
        if self.supervisor is None:
            return 0
        while self.supervisor.poll() is None:
            await asyncio.sleep(0.05)
        status = self.supervisor.wait()
        self._report_exit(status)
        await asyncio.to_thread(self.supervisor.cleanup)
        self._unannounced, self.supervisor = self.supervisor, None
        return status

    async def send_signal(self, signum: int) -> None:
        """Called by KernelManager.signal_kernel / interrupt_kernel: signal the kernel inside."""
        if self.supervisor is None:
            return
        if signum == signal.SIGKILL:
            self.supervisor.kill("killed")
        else:
            self.supervisor.signal_kernel(signum)

    async def kill(self, restart: bool = False) -> None:
        """Called when a kernel does not shut down in time: end the sandbox at once."""
        if self.supervisor is not None:
            self.supervisor.kill("restart" if restart else "killed")

    async def terminate(self, restart: bool = False) -> None:
        """Ask the kernel to stop (SIGTERM), escalating to SIGKILL after a grace period."""
        if self.supervisor is not None:
            self.supervisor.terminate("restart" if restart else "terminated")

    async def cleanup(self, restart: bool = False) -> None:
        """Called after the kernel ended: make sure nothing of the sandbox is left.

        On a restart the kernel's state directory stays (clients reconnect to the same socket
        paths); otherwise it goes too.
        """
        supervisor = self.supervisor
        if supervisor is not None:
            if supervisor.poll() is None:
                await asyncio.to_thread(supervisor.kill_now)
            self._report_exit(supervisor.wait())
            await asyncio.to_thread(supervisor.cleanup)
            self._unannounced, self.supervisor = supervisor, None
        if self._unannounced is not None:
            self._emit_stopped(self._unannounced)
            self._unannounced = None
        if not restart:
            LOG_REDACTION.remove(self.kernel_id)
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- timeout policy -------------------------------------------------------------------------

    def notify_kernel(self, reason: str) -> None:
        """Tell the running cell why the kernel is about to be stopped (see runtime.stop_notice).
        Called by the culler before it shuts a busy kernel down."""
        if self.supervisor is not None:
            self.supervisor.send("notice", reason=reason)

    def listening_ports(self) -> list[int]:
        """The ports the notebook's servers listen on in the sandbox (see /hopx/proxy)."""
        supervisor = self.supervisor
        if supervisor is None or supervisor.poll() is not None:
            return []
        reserved = [channel.sandbox_port for channel in supervisor.spec.channels]
        return listening_ports(supervisor.pid, [*reserved, LISTENER_PORT])

    def usage(self) -> dict[str, float | None]:
        """What the sandbox uses now: memory in bytes, its number of tasks, and the CPU time its
        processes used so far in seconds."""
        started = self.supervisor.started if self.supervisor else {}
        directories = list(started.get("cgroups", []))
        memory = started.get("memory_cgroup")
        return {
            "memory_bytes": read_memory_usage(memory) if memory else None,
            "pids": len(SandboxCgroup("usage", directories).pids()) if directories else None,
            "cpu_seconds": read_cpu_seconds(directories),
        }

    def emit_event(self, action: str, msg: str, **fields: Any) -> None:
        """An event on the server's event bus; a bare KernelManager (papermill) has none."""
        event_logger = getattr(self.parent, "event_logger", None)
        if event_logger is None:
            return
        try:
            events.emit(
                event_logger,
                action,
                self.kernel_id,
                msg,
                kernel_name=getattr(self.parent, "kernel_name", None),
                **fields,
            )
        except Exception:
            self.log.exception("Hopx: could not emit the %s event of %s", action, self.kernel_id)

    def _emit_stopped(self, supervisor: SupervisorHandle) -> None:
        reason = self.last_exit_reason
        if reason in ("idle", "max_lifetime"):
            action, msg = "culled", f"Kernel {self.kernel_id} was culled ({reason})."
        elif reason == "manual":
            action, msg = "killed", f"Kernel {self.kernel_id} was killed by hand."
        elif reason == "protocol":
            action = "stopped"
            msg = (
                f"Kernel {self.kernel_id} was stopped: it broke the ZeroMQ protocol "
                f"({supervisor.exit_detail})."
            )
        else:
            action, msg = "stopped", f"Kernel {self.kernel_id}'s sandbox stopped ({reason})."
        self.emit_event(action, msg, reason=reason, sandbox_id=supervisor.spec.sandbox_id)

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Captures what a later load_provisioner_info needs to find this sandbox again."""
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update({"pid": self._pid, "cwd": self.cwd, "state_dir": self.state_dir})
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._pid = provisioner_info.get("pid")
        self.cwd = provisioner_info.get("cwd")

    def resolve_path(self, path_str: str) -> str | None:
        """A path the kernel reports (a traceback's file), as the host sees it."""
        path = os.path.expanduser(path_str)
        if not os.path.isabs(path) and self.cwd:
            path = os.path.join(self.cwd, path)
        return path if os.path.exists(path) else None

    def _report_exit(self, status: int) -> None:
        """Log why the sandbox ended, once, in words an admin can act on."""
        supervisor = self.supervisor
        if supervisor is None or supervisor is self._reported:
            return
        self._reported = supervisor
        reason = self.last_exit_reason = self.stop_reason or supervisor.exit_reason
        if reason == "oom":
            self.log.warning(
                "Hopx kernel %s was killed: out of memory (memory_limit %s bytes)",
                self.kernel_id,
                self.memory_limit,
            )
        elif reason == "max_lifetime":
            self.log.warning(
                "Hopx kernel %s was stopped: it reached max_lifetime (%s s)",
                self.kernel_id,
                self.max_lifetime,
            )
        elif reason == "protocol":
            self.log.error(
                "Hopx kernel %s was stopped: it broke the ZeroMQ protocol towards its client: %s",
                self.kernel_id,
                supervisor.exit_detail,
            )
        elif reason in ("idle", "manual"):
            self.log.info("Hopx kernel %s was stopped (%s)", self.kernel_id, reason)
        elif reason in ("supervisor_died", "exited") and status:
            self.log.warning(
                "Hopx kernel %s ended with status %s (%s)", self.kernel_id, status, reason
            )


def _use_policy_aware_restarter(km: Any) -> None:
    """Have the kernel's auto-restarter leave a kernel stopped by the policy stopped.

    Only the stock restarter of jupyter_client's asyncio kernel managers (a Jupyter server's) is
    replaced; a custom one is left alone, and pre_launch refuses the restart instead.
    """
    if getattr(km, "restarter_class", None) is PolicyAwareRestarter.__base__:
        km.restarter_class = PolicyAwareRestarter
