"""The start-up sweep: what a crashed host left is removed, what still runs is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_until
from runtime.cgroups import CgroupHost, SandboxCgroup
from runtime.registry import ABANDONED_AFTER, is_supervisor, sweep
from runtime.spec import Limits
from runtime.supervisor import PROCESS_NAME, cgroup_name

LIMITS = Limits(memory=64 << 20, cpus=0, pids=16, disk=0)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_orphaned_cgroups_go_and_live_ones_stay(tmp_path: Path) -> None:
    host = CgroupHost.detect()
    # A process that names itself as supervisors do stands for a live supervisor.
    live = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"open('/proc/self/comm', 'w').write('{PROCESS_NAME}'); import time; time.sleep(60)",
        ]
    )
    orphan = SandboxCgroup.create(host, cgroup_name("sweeptest", dead_pid()), LIMITS)
    running = SandboxCgroup.create(host, cgroup_name("sweeptest", live.pid), LIMITS)
    try:
        assert wait_until(lambda: is_supervisor(live.pid))
        removed = sweep(str(tmp_path), host=host)
        assert set(orphan.directories) <= set(removed)
        assert not any(os.path.exists(d) for d in orphan.directories)
        assert all(os.path.exists(d) for d in running.directories)
    finally:
        live.kill()
        live.wait()
        orphan.remove()
        running.remove()


def test_abandoned_kernel_directories_go_recent_ones_stay(tmp_path: Path) -> None:
    old, recent = tmp_path / "old-kernel", tmp_path / "restarting-kernel"
    for directory in (old, recent):
        directory.mkdir()
        (directory / "ch-1").touch()
    long_ago = time.time() - ABANDONED_AFTER - 60
    os.utime(old, (long_ago, long_ago))
    removed = sweep(str(tmp_path), host=CgroupHost(()))
    assert removed == [str(old)]
    assert not old.exists()
    assert recent.exists()
