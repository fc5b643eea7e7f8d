"""`jupyter hopx doctor` as root on this host: every check passes and a test kernel starts; a
missing bubblewrap fails with the fix and skips the test kernel; the JSON form says the same.
(The unprivileged runs are in test_unprivileged.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import hopx_processes, leftovers

CHECK_NAMES = ["bubblewrap", "user namespaces", "seccomp", "cgroups", "sandbox uids", "test kernel"]


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_doctor_passes_as_root_and_starts_a_kernel(runtime_dir: Path) -> None:
    """As root here every check is OK, the cgroup check names the host's cgroup layout, the
    test kernel answered (with its time), and the doctor leaves no sandbox behind."""
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["OK"] * 6, result.stdout
    assert (
        "sandbox uids     each sandbox has a host uid of its own from 1879048192-" in result.stdout
    )
    assert "cgroups" in result.stdout
    assert "memory, CPU and process limits enforced" in result.stdout
    assert "test kernel      started and answered in" in result.stdout
    assert lines[-1] == "Hopx kernels can start here."
    # The kernel's own start-up chatter does not reach the terminal.
    assert "ipython kernel" not in result.stderr
    assert not hopx_processes()


def test_doctor_json(runtime_dir: Path) -> None:
    """--json gives every check with its name, result and finding, and can_start."""
    result = doctor("--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["can_start"] is True
    assert [c["name"] for c in report["checks"]] == CHECK_NAMES
    assert all(c["ok"] and c["found"] and c["fix"] == "" for c in report["checks"])


def test_doctor_without_bubblewrap_fails_with_the_fix(runtime_dir: Path) -> None:
    """A bubblewrap that is not there fails the first check with how to install it, the test
    kernel is not tried, and the exit status is 1."""
    result = doctor("--json", "--bwrap", "/nonexistent/bwrap")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["can_start"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["bubblewrap"]["ok"] is False
    assert "apt install bubblewrap" in checks["bubblewrap"]["fix"]
    assert checks["test kernel"] == {
        "name": "test kernel",
        "ok": False,
        "found": "not tried: a check above failed",
        "fix": "",
    }


FAKE_BWRAP = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "bubblewrap 0.8.0"; exit 0; fi
echo "bwrap: simulated setup failure" >&2
exit 1
"""


def test_doctor_reports_a_test_kernel_that_fails_to_start(runtime_dir: Path) -> None:
    """A bubblewrap that claims a good version but cannot set a sandbox up passes the first
    checks, then fails the test kernel with bubblewrap's own words in the finding; the exit
    status is 1 and nothing is left behind."""
    folder = Path(tempfile.mkdtemp(prefix="hx-fake-bwrap-", dir="/tmp"))
    try:
        folder.chmod(0o755)  # the sandbox uid runs it when the doctor is root
        bwrap = folder / "bwrap"
        bwrap.write_text(FAKE_BWRAP)
        bwrap.chmod(0o755)
        result = doctor("--json", "--bwrap", str(bwrap))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["bubblewrap"]["ok"] is True
    assert checks["cgroups"]["ok"] is True
    kernel = checks["test kernel"]
    assert kernel["ok"] is False
    assert "a sandboxed kernel did not start" in kernel["found"]
    assert "simulated setup failure" in kernel["found"]
    assert kernel["fix"]
    assert not hopx_processes()
    assert leftovers(runtime_dir) == []


def test_doctor_refuses_a_uid_range_holding_accounts(runtime_dir: Path) -> None:
    """As root, a sandbox_uid_range that holds host accounts (daemon, bin, ...) fails, naming
    them and a free range, and no kernel is tried."""
    result = doctor("--sandbox-uid-range", "1-999")
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "sandbox uids" in x)
    assert line.startswith("FAIL")
    assert "holds host accounts: daemon (1, /etc/passwd)" in line
    assert "e.g. '1879048192-1879113727'" in result.stdout
    assert "not tried: a check above failed" in result.stdout
