"""The unprivileged deployment: the kernel manager (a user's own server) runs as uid 65534.

Root plays the admin: it delegates a cgroup subtree to that uid, as systemd or an admin would,
and makes the project's Python environment reachable (a checkout below a 0700 home is not). The
server side then runs entirely unprivileged: user namespaces for the network and the sandbox,
limits from the delegated subtree.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from internet_harness import WEB_SERVER, serve_at

import runtime
from conftest import assert_no_leaks, cgroup_limits
from hopx_kernel.kernelspec import kernelspec
from runtime import libc, quotas
from runtime.cgroups import CgroupHost

UID = GID = 65534
OWNER = Path(__file__).with_name("unprivileged_owner.py")
PROJECT = Path(runtime.__file__).resolve().parent.parent


@pytest.fixture
def delegated_cgroup() -> Iterator[str]:
    """A cgroup directory in every hierarchy with a controller we limit, owned by UID."""
    if os.geteuid() != 0:
        pytest.fail("this test plays the admin and must run as root (CI does)")
    name = f"hx-delegated-{uuid.uuid4().hex[:8]}"
    host = CgroupHost.detect()
    made = []
    for controller in ("memory", "cpu", "pids"):
        hierarchy = host.hierarchy_for(controller)
        assert hierarchy is not None, f"no {controller} controller on this host"
        directory = Path(hierarchy.path) / name
        if directory in made:
            continue
        directory.mkdir()
        made.append(directory)
        for path in [directory, *directory.iterdir()]:
            os.chown(path, UID, GID)
    yield name
    for directory in made:
        for child in directory.iterdir():
            if child.is_dir():
                child.rmdir()
        directory.rmdir()


def unreachable_ancestors(path: Path) -> list[Path]:
    """Ancestors of `path` that others cannot traverse (a 0700 home directory, say)."""
    return [p for p in path.parents if p != Path("/") and not p.stat().st_mode & stat.S_IXOTH]


def run_unprivileged(
    argv: list[str], env: dict[str, str], cgroup: Path | None = None
) -> subprocess.Popen[str]:
    """Start `argv` as UID, in `cgroup` if given (as systemd starts a unit's process). Paths the
    project needs that UID cannot reach are made reachable in a private mount namespace of that
    process only (the host is untouched)."""
    needed = [Path(sys.prefix), PROJECT]
    covers = sorted(
        {a for p in needed for a in unreachable_ancestors(p)}, key=lambda p: len(p.parts)
    )
    covers = [c for c in covers if not any(c != o and c.is_relative_to(o) for o in covers)]

    def become_unprivileged() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text("0")
        if covers:
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            trees = {p: libc.clone_tree(str(p)) for p in needed}
            for cover in covers:
                libc.mount("tmpfs", str(cover), "tmpfs", 0, "mode=0755")
            for path, tree in trees.items():
                path.mkdir(parents=True, exist_ok=True)
                libc.attach_tree(tree, str(path))
        os.setgroups([])
        os.setresgid(GID, GID, GID)
        os.setresuid(UID, UID, UID)

    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        preexec_fn=become_unprivileged,  # noqa: PLW1509 - the test process is single-threaded here
    )


@dataclass
class Owner:
    """An unprivileged process owning one Hopx kernel (see unprivileged_owner.py)."""

    process: subprocess.Popen[str]
    base: Path

    def report(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the unprivileged owner died; its stderr is above"
        return dict(json.loads(line))

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()


@pytest.fixture
def start_owner() -> Iterator[Callable[..., Owner]]:
    owners: list[Owner] = []
    listener = socket.create_server(("127.0.0.1", 0))
    # A root-only file: the unprivileged server cannot read it, let alone its sandbox.
    secret = Path("/root") / f"hx-secret-{uuid.uuid4().hex[:8]}"
    secret.write_text("host secret")

    def start(mode: str = "probe", urls: dict[str, str] | None = None, **settings: Any) -> Owner:
        base = Path(tempfile.mkdtemp(prefix="hx-u-", dir="/tmp"))
        kernels = base / "kernels" / "hopx-unpriv"
        kernels.mkdir(parents=True)
        spec = kernelspec({"pids_limit": 100, **settings}, python=sys.executable)
        (kernels / "kernel.json").write_text(json.dumps(spec))
        for sub in ("runtime", "workspace", "home"):
            (base / sub).mkdir()
        for path in [base, *base.rglob("*")]:
            os.chown(path, UID, GID)
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(base / "home"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "JUPYTER_PATH": str(base),
            "HOPX_TEST_URLS": json.dumps(urls or {}),
        }
        argv = [sys.executable, str(OWNER), str(base / "kernels"), str(base / "workspace")]
        argv += [str(listener.getsockname()[1]), str(secret), mode]
        owner = Owner(run_unprivileged(argv, env), base)
        owners.append(owner)
        return owner

    yield start
    listener.close()
    secret.unlink()
    for owner in owners:
        owner.process.kill()
        owner.process.wait()
        for stream in (owner.process.stdin, owner.process.stdout):
            if stream:
                stream.close()
        shutil.rmtree(owner.base, ignore_errors=True)


def assert_isolated(probe: dict[str, Any]) -> None:
    assert probe["uid"] == 1000
    assert len(probe["pids"]) <= 3
    assert probe["host_secret"] in ("FileNotFoundError", "PermissionError")
    assert probe["host_tcp"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert probe["proc_sys"] in ("OSError", "PermissionError")
    assert probe["workspace_write"] == "OSError"  # read-only workspace: EROFS
    assert probe["tmp_write"] == "allowed"
    # Quotas counted per user, shared with the server's own uid, are capped for the sandbox.
    assert probe["inotify_instances"] == quotas.USER_NAMESPACE_LIMITS["max_inotify_instances"]
    assert probe["sigpending"] == [quotas.PROCESS_LIMITS[resource.RLIMIT_SIGPENDING]] * 2


def test_unprivileged_server_runs_sandboxed_limited_kernels(
    start_owner: Callable[..., Owner], delegated_cgroup: str
) -> None:
    owner = start_owner("oom", memory_limit="256M", cgroup_parent=delegated_cgroup)
    report = owner.report()
    assert_isolated(report["probe"])
    assert report["warnings"] == []
    # Host side: the limits sit in the delegated subtree, the sandbox runs as UID.
    assert all(Path(c).parent.name == delegated_cgroup for c in report["cgroups"])
    assert cgroup_limits(report["cgroups"]).memory == 256 << 20
    assert Path(f"/proc/{report['sandbox_pid']}").stat().st_uid == UID

    owner.go_on()
    assert owner.report() == {"oom_dead": True, "reason": "oom"}
    assert owner.report() == {"shutdown": True}
    assert owner.process.wait(30) == 0
    assert_no_leaks(owner.base / "runtime")


def test_unprivileged_server_without_delegation_refuses_to_start(
    start_owner: Callable[..., Owner],
) -> None:
    """No cgroup the user may write to: the start fails saying why and what to do."""
    owner = start_owner()
    error = owner.report()["start_error"]
    assert "cannot enforce the" in error
    assert "cgroup_parent" in error
    assert "allow_unenforced_limits" in error
    assert owner.process.wait(30) == 0
    assert_no_leaks(owner.base / "runtime")


def test_unprivileged_server_may_run_without_limits_when_allowed(
    start_owner: Callable[..., Owner],
) -> None:
    """allow_unenforced_limits: the kernel starts with a warning, isolated all the same."""
    owner = start_owner(allow_unenforced_limits=True)
    report = owner.report()
    assert_isolated(report["probe"])
    assert report["cgroups"] == []
    assert {w.split(":")[0] for w in report["warnings"]} == {"cpu", "memory", "pids"}
    owner.go_on()
    assert owner.report() == {"shutdown": True}
    assert owner.process.wait(30) == 0
    assert_no_leaks(owner.base / "runtime")


def run_doctor_unprivileged(*args: str) -> tuple[int, dict[str, Any]]:
    """`jupyter hopx doctor --json` run as UID; its exit status and report."""
    base = Path(tempfile.mkdtemp(prefix="hx-d-", dir="/tmp"))
    os.chown(base, UID, GID)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(base),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
    }
    try:
        process = run_unprivileged(
            [sys.executable, "-m", "hopx_kernel.cli", "doctor", "--json", *args], env
        )
        stdout, _ = process.communicate(timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return process.returncode, dict(json.loads(stdout))


def test_doctor_as_an_unprivileged_user(delegated_cgroup: str) -> None:
    """As uid 65534, the doctor finds user namespaces allowed but no cgroup it may limit, fails
    with a fix that names cgroup_parent and allow_unenforced_limits, and does not try a kernel.
    Pointed at a delegated cgroup, every check passes and a test kernel starts; with
    allow_unenforced_limits it starts too, the cgroup check saying what is not enforced."""
    status, report = run_doctor_unprivileged()
    checks = {c["name"]: c for c in report["checks"]}
    assert status == 1
    assert report["can_start"] is False
    assert checks["user namespaces"] == {
        "name": "user namespaces",
        "ok": True,
        "found": f"allowed for uid {UID}",
        "fix": "",
        "needed_by": "",
    }
    assert checks["cgroups"]["ok"] is False
    assert "cannot enforce the" in checks["cgroups"]["found"]
    assert "cgroup_parent" in checks["cgroups"]["fix"]
    assert "allow_unenforced_limits" in checks["cgroups"]["fix"]
    assert checks["test kernel"]["found"] == "not tried: a check above failed"

    status, report = run_doctor_unprivileged("--cgroup-parent", delegated_cgroup)
    assert status == 0, report
    assert all(c["ok"] for c in report["checks"]), report
    assert delegated_cgroup in report["checks"][3]["found"]

    status, report = run_doctor_unprivileged("--allow-unenforced-limits")
    assert status == 0, report
    cgroups = report["checks"][3]
    assert "allowed by allow_unenforced_limits" in cgroups["found"]
    assert report["checks"][4] == {
        "name": "sandbox uids",
        "ok": True,
        "found": f"sandboxes run as this user (uid {UID})",
        "fix": "",
        "needed_by": "",
    }
    assert report["checks"][5]["found"].startswith("started and answered in")
    # A sandbox's interception works in a user namespace of its own too.
    assert report["checks"][6] == {
        "name": "outbound network",
        "ok": True,
        "found": "nftables and tproxy intercept a sandbox's connections",
        "fix": "",
        "needed_by": "",
    }


def test_unprivileged_server_gives_outbound_access_by_policy(
    start_owner: Callable[..., Owner], delegated_cgroup: str
) -> None:
    """As uid 65534 with a delegated cgroup: the namespace is set up from the server's own user
    namespace, the egress process runs as that uid in the host's namespace, the allowed address
    answers, another is refused with a 403 saying why, and the log is the server user's."""
    address = "151.101.0.30"
    with serve_at(address, WEB_SERVER, address):
        owner = start_owner(
            "network",
            urls={"allowed": f"http://{address}/x", "other": "http://151.101.0.31/"},
            cgroup_parent=delegated_cgroup,
            network_allow=[f"{address}:80"],
        )
        report = owner.report()
        owner.go_on()
    fetched = report["probe"]
    assert fetched["allowed"] == [200, f"hello from {address}/x"]
    assert fetched["other"][0] == 403
    assert "no rule allows 151.101.0.31 port 80" in fetched["other"][1]
    assert owner.report() == {"shutdown": True}
    assert owner.process.wait(30) == 0
    log = owner.base / "runtime" / "hopx-connections.jsonl"
    assert log.stat().st_uid == UID
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # (In the order the connections ended, which need not be the order they began.)
    assert sorted(r["decision"] for r in records) == ["allowed", "denied"]
    assert {r["sandbox_address"] for r in records} == {report["address"]}
    assert_no_leaks(owner.base / "runtime")
