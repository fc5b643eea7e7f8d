"""`jupyter hopx doctor` as root on this host: every check passes and a test kernel starts; a
missing bubblewrap fails with the fix and skips the test kernel; the JSON form says the same.
Its review of the Jupyter server configuration (lockdown, terminals, unsandboxed kernelspecs)
warns without changing the exit status. (The unprivileged runs are in test_unprivileged.py.)"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import hopx_processes, leftovers

CHECK_NAMES = [
    "bubblewrap",
    "user namespaces",
    "seccomp",
    "cgroups",
    "sandbox uids",
    "test kernel",
    "outbound network",
]
PRESET = Path(__file__).parent.parent / "examples" / "lockdown" / "jupyter_server_config.py"


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def server_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """This environment with an empty user config dir and no extra config path, plus
    `variables`: the server config the doctor finds is this project's environment's (which
    enables jupyter_server_terminals) and what the test adds."""
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"}
    (tmp_path / "user-config").mkdir(exist_ok=True)
    return {**env, "JUPYTER_CONFIG_DIR": str(tmp_path / "user-config"), **variables}


def server_review(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {c["name"]: c for c in report["server"]["checks"]}


def test_doctor_passes_as_root_and_starts_a_kernel(runtime_dir: Path) -> None:
    """As root here every check is OK, the cgroup check names the host's cgroup layout, the
    test kernel answered (with its time), and the doctor leaves no sandbox behind."""
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:7]] == ["OK"] * 7, result.stdout
    assert (
        "sandbox uids     each sandbox has a host uid of its own from 1879048192-" in result.stdout
    )
    assert "cgroups" in result.stdout
    assert "memory, CPU and process limits enforced; CPU use counted by the cgroup" in result.stdout
    assert "test kernel      started and answered in" in result.stdout
    assert "outbound network nftables and tproxy intercept a sandbox's connections" in result.stdout
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
        "needed_by": "",
    }


def test_doctor_without_nftables_says_which_kernels_cannot_start(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """With libnftables unreadable (an empty file mounted over it, in a mount namespace of the
    doctor's own), the outbound network check fails with the fix and says only kernels with
    network_allow are concerned: every other check passes and the exit status stays 0."""
    library = ctypes.util.find_library("nftables")
    assert library, "the test needs libnftables, as the sandboxes with a policy do"
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    [path] = [
        line.rsplit(" => ", 1)[1]
        for line in ldconfig.stdout.splitlines()
        if line.strip().startswith(f"{library} ")
    ][:1]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    script = (
        f"mount --make-rprivate / && mount --bind {empty} {path} && "
        f"exec {sys.executable} -m hopx_kernel.cli doctor"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL  outbound network a sandbox's interception cannot be set up: ")
    assert "nftables" in failed
    fix = lines[lines.index(failed) + 1].strip()
    assert fix.startswith("fix: install nftables (libnftables) and make sure the kernel has")
    assert fix.endswith("kernels without network_allow do not need it")
    assert "test kernel      started and answered in" in result.stdout
    assert lines[-1] == "Hopx kernels can start here, except kernels with network_allow."
    assert not hopx_processes()


FAKE_BWRAP = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "bubblewrap 0.8.0"; exit 0; fi
if [ "$1" = "--help" ]; then exec bwrap --help; fi
echo "bwrap: simulated setup failure" >&2
exit 1
"""


def test_doctor_names_what_an_old_bubblewrap_lacks(runtime_dir: Path, tmp_path: Path) -> None:
    """bubblewrap 0.5 to 0.7 has no --disable-userns, which every sandbox start passes: the
    doctor fails the first check naming the option and the version to upgrade to."""
    tmp_path.chmod(0o755)
    old = tmp_path / "bwrap"
    old.write_text(
        '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "bubblewrap 0.5.0"; exit 0; fi\n'
        "bwrap --help | grep -v -- --disable-userns\n"
    )
    old.chmod(0o755)
    result = doctor("--json", "--bwrap", str(old))
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["bubblewrap"]["ok"] is False
    assert checks["bubblewrap"]["fix"].startswith("Upgrade bubblewrap to 0.8 or newer")
    assert "--disable-userns" in checks["bubblewrap"]["fix"]


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


def test_doctor_warns_about_a_server_without_lockdown(
    runtime_dir: Path, tmp_path: Path, make_kernelspec: Callable[..., str]
) -> None:
    """Without lockdown the doctor warns that lockdown is off (with the command that turns it
    on), that terminals open, and which kernelspecs start without the sandbox; the host checks
    pass and the exit status is 0."""
    make_kernelspec("hopx-test")
    env = server_env(tmp_path)
    result = doctor("--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["can_start"] is True
    review = server_review(result)
    assert list(review) == ["lockdown", "terminals", "kernelspecs"]
    assert review["lockdown"]["ok"] is False
    assert "`jupyter hopx install --lockdown`" in review["lockdown"]["fix"]
    assert "examples/lockdown/jupyter_server_config.py" in review["lockdown"]["fix"]
    assert review["terminals"] == {
        "name": "terminals",
        "ok": False,
        "found": "on: a terminal runs commands on the host, outside any sandbox",
        "fix": "lockdown turns them off; or set c.ServerApp.terminals_enabled = False",
        "needed_by": "",
    }
    kernelspecs = review["kernelspecs"]
    assert kernelspecs["ok"] is False
    assert kernelspecs["found"].startswith("start without the sandbox: python3 (local-provisioner)")
    assert "hopx-test" in kernelspecs["found"].partition("under Hopx: ")[2]

    text = doctor(env=env)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[7].startswith("Jupyter server configuration (from ")
    assert [line.split()[0] for line in lines[8:] if line.startswith(("OK", "WARN"))] == [
        "WARN"
    ] * 3
    assert lines[-1] == "Hopx kernels can start here."


def test_doctor_sees_lockdown_installed_into_a_prefix(
    runtime_dir: Path, tmp_path: Path, make_kernelspec: Callable[..., str]
) -> None:
    """After `jupyter hopx install --lockdown --prefix P`, for a server reading P's config the
    doctor reports lockdown on, terminals off and python3 refused: no warning."""
    make_kernelspec("hopx-test")
    prefix = tmp_path / "env"
    installed = subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "install", "--lockdown", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    result = doctor("--json", env=server_env(tmp_path, JUPYTER_CONFIG_PATH=f"{prefix}/etc/jupyter"))
    assert result.returncode == 0, result.stdout + result.stderr
    review = server_review(result)
    assert all(finding["ok"] for finding in review.values()), review
    assert review["terminals"]["found"] == "off: lockdown turns them off"
    assert review["kernelspecs"]["found"].endswith("; lockdown refuses python3 (local-provisioner)")
    assert json.loads(result.stdout)["server"]["config"].startswith(f"from {prefix}/etc/jupyter")


def test_doctor_reads_the_config_file_given(
    runtime_dir: Path, tmp_path: Path, make_kernelspec: Callable[..., str]
) -> None:
    """--config names the server's config file: the lockdown preset turns every warning off; a
    file that switches terminals off and makes Hopx the default provisioner leaves only the
    lockdown warning; a broken file is a warning of its own."""
    make_kernelspec("hopx-test")
    env = server_env(tmp_path)
    preset = server_review(doctor("--json", "--config", str(PRESET), env=env))
    assert all(finding["ok"] for finding in preset.values()), preset

    config = tmp_path / "jupyter_server_config.py"
    config.write_text(
        "c.ServerApp.terminals_enabled = False\n"
        "c.KernelProvisionerFactory.default_provisioner_name = 'hopx-provisioner'\n"
    )
    review = server_review(doctor("--json", "--config", str(config), env=env))
    assert review["lockdown"]["ok"] is False
    assert review["terminals"] == {
        "name": "terminals",
        "ok": True,
        "found": "off: ServerApp.terminals_enabled is False",
        "fix": "",
        "needed_by": "",
    }
    assert review["kernelspecs"]["ok"] is True
    assert review["kernelspecs"]["found"].startswith("all start under Hopx: ")
    assert "python3" in review["kernelspecs"]["found"]

    config.write_text("c.ServerApp.terminals_enabled = (\n")
    broken = doctor("--json", "--config", str(config), env=env)
    assert broken.returncode == 0
    (problem,) = json.loads(broken.stdout)["server"]["checks"]
    assert problem["name"] == "server config"
    assert problem["ok"] is False
    assert problem["found"].startswith("cannot be read: SyntaxError")


def test_doctor_warnings_leave_a_failing_exit_status_as_it_is(
    runtime_dir: Path, tmp_path: Path
) -> None:
    """With a host check failing, the exit status stays 1 and the review is still there."""
    result = doctor("--json", "--bwrap", "/nonexistent/bwrap", env=server_env(tmp_path))
    assert result.returncode == 1
    assert json.loads(result.stdout)["can_start"] is False
    assert server_review(result)["lockdown"]["ok"] is False
