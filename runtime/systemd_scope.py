"""Transient systemd scopes: how a systemd host delegates cgroups to an ordinary user.

With `systemd_scope` the owner starts each supervisor through `systemd-run --scope`, which asks
systemd (the user's own instance when not root) for a new scope with Delegate=yes and execs the
supervisor in it, same pid. The scope's cgroup then belongs to the user, and the supervisor puts
the sandbox's cgroup inside it (see `runtime.cgroups.parents_within_own_cgroup`). systemd removes
the scope once its last process has ended, however the supervisor ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# How long systemd may take to answer a probe before the host counts as without it.
PROBE_TIMEOUT = 15.0


def scope_launcher(sandbox_id: str, *, user: bool | None = None) -> list[str]:
    """The command line prefix that runs a supervisor in a new delegated scope.

    `user`: through the user's systemd instance; defaults to "unless this process is root"."""
    if user is None:
        user = os.geteuid() != 0
    return [
        shutil.which("systemd-run") or "systemd-run",
        *(["--user"] if user else []),
        "--scope",
        "--quiet",
        # Removed once ended even if it failed, so failed sandboxes do not pile up as units.
        "--collect",
        f"--unit=hopx-{sandbox_id}",
        "--property=Delegate=yes",
        "--",
    ]


def scope_problem(*, user: bool | None = None) -> str | None:
    """Why a sandbox could not start in a systemd scope here, or None if a probe scope ran."""
    launcher = scope_launcher(f"probe-{os.getpid()}", user=user)
    if shutil.which(launcher[0]) is None:
        return "systemd-run is not installed (this host is not run by systemd)"
    try:
        probe = subprocess.run(
            [*launcher, "true"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"systemd-run did not run: {e}"
    if probe.returncode != 0:
        said = probe.stderr.strip() or f"exit status {probe.returncode}"
        return f"systemd-run could not start a scope: {said}"
    return None
