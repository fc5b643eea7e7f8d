"""`jupyter hopx doctor` as root on this host: every check passes and a test kernel starts; a
missing bubblewrap fails with the fix and skips the test kernel; the JSON form says the same.
(The unprivileged runs are in test_unprivileged.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import hopx_processes

CHECK_NAMES = ["bubblewrap", "user namespaces", "seccomp", "cgroups", "test kernel"]


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
    assert [line.split()[0] for line in lines[:5]] == ["OK"] * 5, result.stdout
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
