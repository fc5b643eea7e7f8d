"""The frozen description of one sandbox.

The Jupyter side builds a `SandboxSpec`; the supervisor receives it as JSON on its stdin and
turns it into cgroup writes and a bubblewrap argv. Nothing here touches the system.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from runtime.connection_log import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from runtime.sandbox_address import ADDRESS_CLAIMS_DIR, DEFAULT_SANDBOX_NETWORK
from runtime.units import LimitError
from runtime.zmtp import DEFAULT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES

WorkspaceMode = Literal["ro", "rw", "none"]
WORKSPACE_MODES: tuple[WorkspaceMode, ...] = ("ro", "rw", "none")

# The kernel's channels inside the sandbox: TCP on the sandbox's own loopback. The network
# namespace is private to the sandbox, so fixed ports cannot clash with another kernel; they sit
# below the ephemeral range (32768-60999 in a new namespace) so that no outgoing connection, the
# relay's own early connects included, can be given one of them as its local port.
SANDBOX_IP = "127.0.0.1"
CHANNEL_PORTS = {"shell": 20101, "iopub": 20102, "stdin": 20103, "control": 20104, "hb": 20105}
CONNECTION_FILE = "/run/hopx/kernel.json"
SANDBOX_USER = "sandbox"
SANDBOX_UID = 1000
SANDBOX_HOME = f"/home/{SANDBOX_USER}"

# Upper bound on the spec document read from the supervisor's stdin.
MAX_SPEC_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource caps. Zero means "no limit" for that resource."""

    memory: int = 2 * 1024**3
    cpus: float = 1.0
    pids: int = 512
    disk: int = 1024**3
    # Files and directories in each scratch filesystem.
    files: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("memory", "pids", "disk", "files"):
            if getattr(self, name) < 0:
                msg = f"{name} limit must not be negative"
                raise LimitError(msg)
        if self.cpus < 0:
            msg = "cpu limit must not be negative"
            raise LimitError(msg)


@dataclass(frozen=True)
class Channel:
    """One kernel channel: the host unix socket a client connects to, relayed to a sandbox port."""

    name: str
    host_path: str
    sandbox_port: int


@dataclass(frozen=True)
class SandboxSpec:
    """Everything the supervisor needs to start, run and clean up one sandbox."""

    sandbox_id: str
    kernel_id: str
    # The kernel's command line, as it runs inside the sandbox.
    argv: tuple[str, ...]
    # The complete environment of the kernel; nothing else from the host leaks in.
    env: dict[str, str]
    # Contents of the kernel's connection file, as the kernel sees it (TCP on its loopback).
    # It holds the kernel's keys, so the spec travels only through the supervisor's stdin.
    connection_json: str
    channels: tuple[Channel, ...]
    # Host directory owned by this kernel: relay sockets and the sandbox's state record.
    state_dir: str
    limits: Limits = field(default_factory=Limits)
    # Whether a limit the host cannot enforce is a warning (True) or a failed start (False).
    allow_unenforced_limits: bool = False
    workspace: str | None = None
    workspace_mode: WorkspaceMode = "ro"
    # Host paths visible read-only at the same place inside (the Python runtime, extra data).
    read_only_paths: tuple[str, ...] = ()
    # Paths replaced by an empty read-only directory inside (Jupyter's runtime dir, say).
    hidden_paths: tuple[str, ...] = ()
    # Files replaced by an empty one inside (the owner's connection file, say).
    hidden_files: tuple[str, ...] = ()
    # (target, link): symlinks inside, for host paths reached through a symlink.
    symlinks: tuple[tuple[str, str], ...] = ()
    cwd: str = SANDBOX_HOME
    hostname: str = "hopx"
    # When the supervisor is root: the range ("FIRST-LAST") it takes the sandbox's own host uid
    # (and gid) from. None when it is not root: the sandbox then runs as the supervisor's user.
    host_uid_range: str | None = None
    # Host files removed if the owner (server, papermill) dies without cleaning up.
    owner_files: tuple[str, ...] = ()
    # Hard cap on the sandbox's age in seconds, enforced by the supervisor; 0 disables it.
    max_lifetime: float = 0.0
    # The largest ZeroMQ message frame the kernel may send its client (see runtime.zmtp).
    max_frame_size: int = DEFAULT_MAX_FRAME_BYTES
    # Stop reason -> message the running cell ends with when the sandbox is stopped for that
    # reason (see runtime.stop_notice); empty for kernels that cannot show it.
    stop_notices: dict[str, str] = field(default_factory=dict)
    bwrap: str = "bwrap"
    # Parent of the sandbox's cgroup, relative to each hierarchy's root ("" = the root itself).
    cgroup_parent: str = ""
    # True: the sandbox's cgroup goes inside the cgroup the supervisor was started in (a systemd
    # scope delegated to it) instead of under cgroup_parent.
    cgroup_within_own: bool = False
    # The block each sandbox's own address comes from, and where the addresses held are claimed
    # (shared by every supervisor that must not hand out the same one).
    sandbox_network: str = DEFAULT_SANDBOX_NETWORK
    address_claims_dir: str = ADDRESS_CLAIMS_DIR
    # Outbound policy: rules as the admin wrote them (runtime.network_policy). With no allow
    # rule there is no outbound traffic at all and no egress process.
    network_allow: tuple[str, ...] = ()
    network_deny: tuple[str, ...] = ()
    # Where every outbound attempt is logged ('' for nowhere), and when the log rotates.
    connection_log: str = ""
    connection_log_max_bytes: int = DEFAULT_MAX_BYTES
    connection_log_backups: int = DEFAULT_BACKUPS
    # Who the sandbox works for, as its connection records name them.
    kernelspec_name: str = ""
    notebook: str = ""
    user: str = ""

    def __post_init__(self) -> None:
        if self.workspace_mode not in WORKSPACE_MODES:
            msg = (
                f"workspace {self.workspace_mode!r} is not a workspace mode; "
                "use one of 'ro', 'rw' or 'none'"
            )
            raise LimitError(msg)
        if not self.argv:
            msg = "the kernel command line is empty"
            raise LimitError(msg)
        if self.max_frame_size < MIN_MAX_FRAME_BYTES:
            msg = f"max_frame_size {self.max_frame_size} is below 1M; use e.g. '256M'"
            raise LimitError(msg)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> SandboxSpec:
        """Parse a spec; raises ValueError on anything malformed."""
        if len(text) > MAX_SPEC_BYTES:
            msg = "sandbox spec is too large"
            raise ValueError(msg)
        raw = json.loads(text)
        if not isinstance(raw, dict):
            msg = "sandbox spec must be a JSON object"
            raise TypeError(msg)
        return cls._from_dict(raw)

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> SandboxSpec:
        values = dict(raw)
        values["limits"] = Limits(**values.get("limits", {}))
        values["channels"] = tuple(Channel(**c) for c in values.get("channels", ()))
        for name in (
            "argv",
            "read_only_paths",
            "hidden_paths",
            "hidden_files",
            "owner_files",
            "network_allow",
            "network_deny",
        ):
            values[name] = tuple(values.get(name, ()))
        values["symlinks"] = tuple((str(t), str(link)) for t, link in values.get("symlinks", ()))
        values["stop_notices"] = {
            str(reason): str(text) for reason, text in dict(values.get("stop_notices", {})).items()
        }
        return cls(**values)
