"""The sandboxes of this host as their records and cgroups show them: list the live, sweep the dead.

Each running supervisor writes `<state root>/<kernel id>/sandbox.json`, and names its cgroup
`hopx-<sandbox id>.<supervisor pid>`. A supervisor that was SIGKILLed together with its owner leaves
both behind; the sweep recognises them by the supervisor pid no longer being a supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runtime import claims
from runtime.cgroups import CgroupHost, SandboxCgroup, read_memory_usage, stale_cgroups
from runtime.host_uids import sweep_claims
from runtime.sandbox_address import ADDRESS_CLAIMS_DIR
from runtime.supervisor import CGROUP_PREFIX, PROCESS_NAME, STATE_RECORD

# A kernel directory without a record is normal between a restart's stop and start; only one this
# old is abandoned.
ABANDONED_AFTER = 600.0


@dataclass(frozen=True)
class SandboxRecord:
    state_dir: str
    data: dict[str, Any]

    @property
    def supervisor_pid(self) -> int:
        return int(self.data.get("supervisor_pid", 0))

    @property
    def alive(self) -> bool:
        return is_supervisor(self.supervisor_pid)

    def memory_usage(self) -> int | None:
        directory = self.data.get("memory_cgroup")
        return read_memory_usage(directory) if directory else None


def is_supervisor(pid: int) -> bool:
    """Whether `pid` is a running Hopx supervisor (not merely a reused pid)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == PROCESS_NAME
    except OSError:
        return False


def records(state_root: str) -> Iterator[SandboxRecord]:
    """Every sandbox record under `state_root`, live or not."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(state_root):
            path = os.path.join(entry.path, STATE_RECORD)
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    data = json.load(f)
                if isinstance(data, dict):
                    yield SandboxRecord(entry.path, data)


def live_sandboxes(state_root: str) -> list[SandboxRecord]:
    return [record for record in records(state_root) if record.alive]


def sweep(state_root: str, cgroup_parent: str = "", host: CgroupHost | None = None) -> list[str]:
    """Remove what dead supervisors left: records, sockets, kernel directories and cgroups.

    Returns what was removed, for the log.
    """
    removed: list[str] = []
    for record in records(state_root):
        if record.alive:
            continue
        cgroups = [str(d) for d in record.data.get("cgroups", [])]
        with contextlib.suppress(OSError):
            SandboxCgroup("stale", cgroups).remove()
        shutil.rmtree(record.state_dir, ignore_errors=True)
        removed.append(record.state_dir)
    with contextlib.suppress(OSError):
        for entry in os.scandir(state_root):
            has_record = os.path.exists(os.path.join(entry.path, STATE_RECORD))
            age = time.time() - entry.stat().st_mtime
            if entry.is_dir() and not has_record and age > ABANDONED_AFTER:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    removed += sweep_claims()
    # Address claims: the host's shared ones, and an unprivileged user's own.
    removed += claims.sweep(ADDRESS_CLAIMS_DIR) + claims.sweep(f"{state_root}-addresses")
    for directory in stale_cgroups(host or CgroupHost.detect(), CGROUP_PREFIX, cgroup_parent):
        _, _, pid = directory.rpartition(".")
        if pid.isdigit() and not is_supervisor(int(pid)):
            with contextlib.suppress(OSError):
                SandboxCgroup("stale", [directory]).remove()
                removed.append(directory)
    return removed
