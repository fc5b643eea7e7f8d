"""cgroup v2, for real, on whatever cgroup2 hierarchy this host has.

Pure v2 hosts (most production hosts) run all of this, and test_limits.py's limit tests read
the v2 files there. A hybrid host such as the CI machine keeps memory, cpu and pids on v1, so
the limit test here says it did not run; what v2 does without those controllers still runs on
its cgroup2 mount: killing a forking tree through cgroup.kill, and the delegation rules that
decide where an unprivileged server may put a sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cgroups import LIMITS, assert_joins_and_is_removed
from test_unprivileged import GID, UID, run_unprivileged

from conftest import wait_until
from runtime.cgroups import SUPERVISOR_LEAF, CgroupHost, SandboxCgroup


def unified() -> Path:
    found = [h.path for h in CgroupHost.detect().hierarchies if h.version == 2]
    if not found:
        pytest.skip("did not run: this host has no cgroup2 hierarchy mounted")
    if os.geteuid() != 0:
        pytest.fail("these tests create cgroups and must run as root (CI does)")
    return Path(found[0])


@pytest.fixture
def v2_cgroup() -> Iterator[Path]:
    """A fresh cgroup in the host's cgroup2 hierarchy, removed with whatever is left below it."""
    directory = unified() / f"hopx-test-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    yield directory
    SandboxCgroup("cleanup", [str(p) for p in sorted(directory.glob("**/"))]).remove()


def test_v2_real_cgroup_limits_join_and_remove() -> None:
    """The v1 test's twin: limits written to memory.max, cpu.max and pids.max, a process joins,
    remove() kills it and removes the directory."""
    host = CgroupHost.detect()
    on_v1 = [
        c
        for c in ("memory", "cpu", "pids")
        if (h := host.hierarchy_for(c)) is None or h.version != 2
    ]
    if on_v1:
        pytest.skip(
            f"did not run: {', '.join(on_v1)} not on cgroup v2 here (layout {host.mode}); "
            "the limits were tested on v1"
        )
    name = f"hopx-test-{uuid.uuid4().hex[:8]}"
    cgroup = SandboxCgroup.create(host, name, LIMITS)
    try:
        (directory,) = map(Path, cgroup.directories)
        assert (directory / "memory.max").read_text().strip() == str(256 << 20)
        assert (directory / "cpu.max").read_text().split() == ["50000", "100000"]
        assert (directory / "pids.max").read_text().strip() == "64"
        if (directory / "memory.swap.max").exists():
            assert (directory / "memory.swap.max").read_text().strip() == "0"
    except BaseException:
        cgroup.remove()
        raise
    assert_joins_and_is_removed(cgroup)


FORKER = """
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        pass
    time.sleep(0.001)
"""


def test_cgroup_kill_ends_a_tree_that_keeps_forking(v2_cgroup: Path) -> None:
    """remove() on a v2 cgroup whose process forks without pause: cgroup.kill ends every
    process at once, forks in flight included, and the directory goes."""
    if not (v2_cgroup / "cgroup.kill").exists():
        pytest.skip("did not run: this Linux kernel has no cgroup.kill (5.14 or later has)")
    procs = v2_cgroup / "cgroup.procs"
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER],
        preexec_fn=lambda: procs.write_text("0"),  # noqa: PLW1509
    )
    assert wait_until(lambda: len(procs.read_text().split()) > 50), "the tree did not grow"
    cgroup = SandboxCgroup(v2_cgroup.name, [str(v2_cgroup)])
    cgroup.remove()
    assert forker.wait(5) == -9
    assert not v2_cgroup.exists()


def delegate(directory: Path) -> None:
    """What systemd does for Delegate=yes: the directory and the files that let its owner manage
    what is below it belong to UID."""
    for path in (
        directory,
        *(directory / n for n in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")),
    ):
        os.chown(path, UID, GID)


def run_as_uid(code: str, cgroup: Path | None) -> dict[str, str]:
    """Run Python `code` as UID (placed in `cgroup` first, if given); its printed JSON."""
    home = Path(tempfile.mkdtemp(prefix="hx-v2-", dir="/tmp"))
    try:
        process = run_unprivileged(
            [sys.executable, "-I", "-c", code],
            {"PATH": "/usr/bin:/bin", "HOME": str(home)},
            cgroup,
        )
        stdout, _ = process.communicate(timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert process.returncode == 0, stdout
    return dict(json.loads(stdout))


PROBE = """
import json, os, sys
sys.path.insert(0, {project!r})
from runtime.cgroups import CgroupError, CgroupHost, parents_within_own_cgroup
target = {target!r}
result = {{}}
try:
    with open(os.path.join(target, "cgroup.procs"), "w") as f:
        f.write("0")
    result["join"] = "ok"
except OSError as e:
    result["join"] = e.strerror
try:
    result["parents"] = parents_within_own_cgroup(CgroupHost.detect())
except CgroupError as e:
    result["parents"] = str(e)
with open("/proc/self/cgroup") as f:
    result["in"] = [l.split(":", 2)[2].strip() for l in f if l.startswith("0::")][0]
print(json.dumps(result))
"""


def test_delegation_decides_where_an_unprivileged_server_may_put_a_sandbox(
    v2_cgroup: Path,
) -> None:
    """As an unprivileged uid with `v2_cgroup` delegated to it (as systemd does for a scope
    with Delegate=yes):

    - started outside it, the process may not move itself into a cgroup inside, though it owns
      that cgroup: the kernel checks the common ancestor, root's. This is the failure the
      supervisor's "cannot join" message explains, and why a server must run inside the
      subtree (or use systemd_scope);
    - started inside it, it may, and parents_within_own_cgroup moves it into the supervisor
      leaf and names the delegated cgroup as the sandbox's parent;
    - started outside, parents_within_own_cgroup fails saying the cgroup is not delegated."""
    delegate(v2_cgroup)
    project = str(Path(__file__).resolve().parent.parent)
    target = v2_cgroup / "sandbox"
    target.mkdir()
    delegate(target)
    mount = str(unified())
    relative = "/" + v2_cgroup.name

    outside = run_as_uid(PROBE.format(project=project, target=str(target)), None)
    assert outside["join"] == "Permission denied"
    assert "is not delegated" in outside["parents"], outside
    assert outside["in"] == "/"

    inside = run_as_uid(PROBE.format(project=project, target=str(target)), v2_cgroup)
    assert inside["join"] == "ok"
    # It joined `sandbox`, so the probe then moved from there into sandbox/supervisor.
    assert inside["parents"][mount] == f"{relative}/sandbox", inside
    assert inside["in"] == f"{relative}/sandbox/{SUPERVISOR_LEAF}"
