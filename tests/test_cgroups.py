"""runtime.cgroups: layout detection, limits written, joining and removal.

The v1 tests use this host's real hierarchies (root needed, as in CI). The v2 code paths run
against a scratch directory laid out like a cgroup2 mount, since this host's controllers are
bound to v1; what they check is what we write where.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runtime.cgroups import (
    CgroupError,
    CgroupHost,
    Hierarchy,
    SandboxCgroup,
    _parse_mount,
    read_cpu_seconds,
    read_memory_usage,
)
from runtime.spec import Limits

LIMITS = Limits(memory=256 << 20, cpus=0.5, pids=64, disk=0)


def test_parse_mountinfo_lines() -> None:
    v1 = "35 28 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    hierarchy = _parse_mount(v1)
    assert hierarchy == Hierarchy("/sys/fs/cgroup/memory", 1, frozenset({"memory"}))
    assert _parse_mount("22 1 8:1 / / rw - ext4 /dev/vda rw\n") is None


def test_mode_names() -> None:
    v1 = Hierarchy("/a", 1, frozenset({"memory"}))
    v2 = Hierarchy("/b", 2, frozenset({"memory", "pids"}))
    assert CgroupHost((v1,)).mode == "v1"
    assert CgroupHost((v2,)).mode == "v2"
    assert CgroupHost((v1, Hierarchy("/c", 2, frozenset()))).mode == "hybrid"
    assert CgroupHost(()).mode == "none"
    # A hybrid host enforces with the v1 controller when both exist.
    assert CgroupHost((v2, v1)).hierarchy_for("memory") == v1


def fake_v2(root: Path, controllers: str = "memory cpu pids") -> CgroupHost:
    (root / "cgroup.controllers").write_text(controllers)
    (root / "cgroup.subtree_control").write_text("")
    return CgroupHost((Hierarchy(str(root), 2, frozenset(controllers.split())),))


def test_v2_writes_limits_and_delegates_controllers(tmp_path: Path) -> None:
    host = fake_v2(tmp_path)
    cgroup = SandboxCgroup.create(host, "hopx-test", LIMITS)
    directory = tmp_path / "hopx-test"
    assert cgroup.directories == [str(directory)]
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (directory / "memory.max").read_text() == str(256 << 20)
    assert (directory / "cpu.max").read_text() == "50000 100000"
    assert (directory / "pids.max").read_text() == "64"
    assert cgroup.procs_files() == [str(directory / "cgroup.procs")]
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_kills() == 1


def test_missing_controller_fails_unless_allowed(tmp_path: Path) -> None:
    host = fake_v2(tmp_path, "memory cpu")
    fix_first = r"allow_unenforced_limits = True to start without a pids limit.*cannot enforce"
    with pytest.raises(CgroupError, match=fix_first):
        SandboxCgroup.create(host, "hopx-test", LIMITS)
    assert not (tmp_path / "hopx-test").exists()  # a failed create leaves no directory
    cgroup = SandboxCgroup.create(host, "hopx-test", LIMITS, allow_unenforced=True)
    assert cgroup.unenforced
    assert "pids" in cgroup.unenforced[0]


def test_v1_real_cgroup_limits_join_and_remove() -> None:
    host = CgroupHost.detect()
    if host.hierarchy_for("memory") is None or host.hierarchy_for("memory").version != 1:
        pytest.skip(f"this host's memory controller is not on cgroup v1 (layout {host.mode})")
    name = f"hopx-test-{uuid.uuid4().hex[:8]}"
    cgroup = SandboxCgroup.create(host, name, LIMITS)
    try:
        by = {Path(d).parent.name: Path(d) for d in cgroup.directories}
        assert (by["memory"] / "memory.limit_in_bytes").read_text().strip() == str(256 << 20)
        # Nothing of the sandbox's memory (its RAM-only scratch, its secrets) goes to swap.
        if (by["memory"] / "memory.memsw.limit_in_bytes").exists():
            memsw = (by["memory"] / "memory.memsw.limit_in_bytes").read_text().strip()
            assert memsw == str(256 << 20)
        assert (by["memory"] / "memory.swappiness").read_text().strip() == "0"
        assert (by["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (by["pids"] / "pids.max").read_text().strip() == "64"
    except BaseException:
        cgroup.remove()
        raise
    assert_joins_and_is_removed(cgroup)


def assert_joins_and_is_removed(cgroup: SandboxCgroup) -> None:
    """A process joins every directory of `cgroup` and is counted there; remove() kills it and
    removes every directory."""
    directories = list(cgroup.directories)
    try:
        joined = subprocess.Popen(
            ["sleep", "60"],
            preexec_fn=lambda: [Path(p).write_text("0") for p in cgroup.procs_files()],  # noqa: PLW1509
        )
        assert cgroup.pids() == {joined.pid}
        assert cgroup.memory_usage() is not None
    finally:
        cgroup.remove()
    assert joined.wait(5) == -9
    assert not any(os.path.exists(d) for d in directories)


@pytest.mark.parametrize(
    ("usage_file", "inactive_file"),
    [("memory.current", "inactive_file"), ("memory.usage_in_bytes", "total_inactive_file")],
)
def test_memory_in_use_leaves_out_inactive_page_cache(
    tmp_path: Path, usage_file: str, inactive_file: str
) -> None:
    (tmp_path / usage_file).write_text(f"{300 << 20}\n")
    assert read_memory_usage(str(tmp_path)) == 300 << 20  # no memory.stat: all of it
    (tmp_path / "memory.stat").write_text(f"anon {40 << 20}\n{inactive_file} {250 << 20}\n")
    assert read_memory_usage(str(tmp_path)) == 50 << 20
    (tmp_path / "memory.stat").write_text(f"{inactive_file} {400 << 20}\n")
    assert read_memory_usage(str(tmp_path)) == 0  # read at two moments: never below nothing


def test_cpu_time_without_cpuacct_comes_from_the_sandboxs_processes(tmp_path: Path) -> None:
    """On a v1 host where cpuacct was not delegated the cgroups count no CPU time: the figure is
    then the CPU time of the processes in them, read from /proc."""
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.5\n"
            "while time.process_time() < end: pass\nprint('done', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert busy.stdout is not None
        assert busy.stdout.readline() == "done\n"
        directory = tmp_path / "pids-only"
        directory.mkdir()
        (directory / "cgroup.procs").write_text(f"{busy.pid}\n")
        seconds = read_cpu_seconds([str(directory)])
        assert seconds is not None
        assert 0.4 <= seconds < 5
        (directory / "cgroup.procs").write_text("")
        assert read_cpu_seconds([str(directory)]) is None  # nothing runs: no figure
    finally:
        busy.kill()
        busy.communicate()
