"""Sandboxes in transient systemd scopes (`systemd_scope`), how systemd hosts delegate cgroups.

With systemd running, a real kernel starts in its own scope with its limits inside it. Without
systemd (as on a CI machine whose pid 1 is something else), that test says so and does not run;
what runs instead: the start fails with a clear error and leaves nothing, doctor says why, and the
whole path after systemd-run (the supervisor finding the cgroup it was started in, moving into a
leaf on cgroup v2, the sandbox's limits inside) runs with systemd-run replaced by a stand-in
that moves the supervisor into a prepared cgroup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Kernel, assert_no_leaks, cgroup_limits
from runtime.cgroups import SUPERVISOR_LEAF, CgroupHost
from runtime.systemd_scope import scope_launcher, scope_problem

STAND_IN = Path(__file__).with_name("enter_cgroup.py")
MiB = 1024**2


def systemd_is_init() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def test_scope_command_line() -> None:
    """Delegate=yes is what hands the scope's cgroup to the user; --collect keeps failed scopes
    from piling up; --user only for an unprivileged server."""
    user = scope_launcher("abc123", user=True)
    assert user[1:] == [
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=hopx-abc123",
        "--property=Delegate=yes",
        "--",
    ]
    assert user[0].endswith("systemd-run")
    assert "--user" not in scope_launcher("abc123", user=False)


@pytest.mark.skipif(systemd_is_init(), reason="systemd runs here: the scope test below runs")
def test_without_systemd_a_scoped_kernel_fails_clearly(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    """systemd-run is tried for real and fails: the start says which tool failed and where to
    look, leaves nothing behind, and doctor names the problem with a fix."""
    assert scope_problem() is not None
    with pytest.raises(RuntimeError) as failed:
        start_kernel(systemd_scope=True)
    message = str(failed.value)
    assert "exit status" in message, message
    assert "systemd-run" in message, message
    assert "jupyter hopx doctor" in message, message
    assert_no_leaks(runtime_dir)

    doctor = subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "doctor", "--systemd-scope", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert doctor.returncode == 1, doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert not checks["cgroups"]["ok"]
    assert "systemd-run" in checks["cgroups"]["found"]
    assert "systemd_scope = False" in checks["cgroups"]["fix"]
    assert checks["test kernel"]["found"] == "not tried: a check above failed"


@pytest.mark.skipif(
    not systemd_is_init() or scope_problem() is not None,
    reason="did not run: systemd is not running here, so no scope can be made "
    "(the stand-in test below covers the path after systemd-run)",
)
def test_kernel_in_a_real_systemd_scope(start_kernel: Callable[..., Kernel]) -> None:
    kernel = start_kernel(systemd_scope=True, memory_limit="256M", pids_limit=64)
    scope = f"hopx-{kernel.km.provisioner.supervisor.spec.sandbox_id}.scope"
    assert all(f"/{scope}/" in c for c in kernel.cgroups), kernel.cgroups
    limits = cgroup_limits(kernel.cgroups)
    assert (limits.memory, limits.pids) == (256 * MiB, 64)
    assert kernel.value("print(1+1)") == 2


@pytest.fixture
def scope_cgroups() -> Iterator[list[Path]]:
    """A cgroup in every hierarchy with a controller, and in the v2 one, playing a delegated
    scope; removed afterwards with what is left in it (the supervisor's leaf, which systemd
    would remove with the scope)."""
    if os.geteuid() != 0:
        pytest.fail("this test plays systemd and must run as root (CI does)")
    host = CgroupHost.detect()
    name = f"hx-scope-{uuid.uuid4().hex[:8]}"
    made = []
    for hierarchy in host.hierarchies:
        if hierarchy.controllers or hierarchy.version == 2:
            directory = Path(hierarchy.path) / name
            directory.mkdir()
            made.append(directory)
    yield made
    for directory in made:
        for child in sorted(directory.glob("**/"), key=lambda p: -len(p.parts)):
            if child != directory:
                child.rmdir()
        directory.rmdir()


def test_sandbox_limits_go_inside_the_cgroup_the_supervisor_starts_in(
    scope_cgroups: list[Path],  # first: removed after the kernel is stopped
    start_kernel: Callable[..., Kernel],
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With systemd-run replaced by a stand-in that moves the supervisor into `scope_cgroups`,
    a systemd_scope kernel's cgroups are made inside them with its limits, the supervisor moves
    into a leaf of the v2 one (so it could hand controllers down), the sandbox's processes are in
    the sandbox's cgroups, and a stop removes them."""
    monkeypatch.setattr(
        "hopx_kernel.provisioner.scope_launcher",
        lambda sandbox_id: [sys.executable, str(STAND_IN), *map(str, scope_cgroups), "--"],
    )
    kernel = start_kernel(systemd_scope=True, memory_limit="256M", pids_limit=64)
    assert kernel.value("print(1+1)") == 2
    parents = {Path(c).parent for c in kernel.cgroups}
    assert parents, kernel.cgroups
    assert parents <= set(scope_cgroups), kernel.cgroups
    limits = cgroup_limits(kernel.cgroups)
    assert (limits.memory, limits.pids) == (256 * MiB, 64)
    for directory in kernel.cgroups:
        assert (Path(directory) / "cgroup.procs").read_text().split(), directory

    unified = [s for s in scope_cgroups if s.parent == Path(unified_mount())]
    own = Path(f"/proc/{kernel.supervisor_pid}/cgroup").read_text()
    for scope in unified:
        # (The sandbox's processes are here too when this host puts no limit on cgroup v2.)
        leaf = scope / SUPERVISOR_LEAF
        assert str(kernel.supervisor_pid) in (leaf / "cgroup.procs").read_text().split()
        assert not (scope / "cgroup.procs").read_text().split()
        assert f"0::/{scope.name}/{SUPERVISOR_LEAF}\n" in own

    directories = kernel.cgroups
    kernel.km.shutdown_kernel(now=True)
    assert not any(os.path.exists(d) for d in directories)
    assert_no_leaks(runtime_dir)


def unified_mount() -> str:
    return next((h.path for h in CgroupHost.detect().hierarchies if h.version == 2), "")
