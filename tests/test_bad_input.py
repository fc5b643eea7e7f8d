"""Bad settings and broken environments fail early, say what to fix, and leave nothing behind.

Kernelspecs here are written raw (unvalidated), as a hand-edited kernel.json would be. Each bad
start must raise an error that names the setting and shows a valid value, start no supervisor,
and leave no process, cgroup, state directory or connection file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from conftest import assert_no_leaks, leftovers, wait_until, write_raw_kernelspec
from hopx_kernel.kernelspec import kernelspec
from hopx_kernel.provisioner import HopxProvisioner
from runtime.handle import SupervisorHandle

VALID = {"memory_limit": "512M", "disk_limit": "64M"}


@pytest.fixture
def supervisor_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every SupervisorHandle.start call made during the test (the spec it was given)."""
    calls: list[Any] = []
    original = SupervisorHandle.start.__func__  # type: ignore[attr-defined]

    def start(cls: type[SupervisorHandle], spec: Any, **kwargs: Any) -> SupervisorHandle:
        calls.append(spec)
        return original(cls, spec, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(SupervisorHandle, "start", classmethod(start))
    return calls


def manager(kernels_dir: Path, name: str) -> KernelManager:
    return KernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    )


def assert_nothing_left(km: KernelManager, runtime_dir: Path) -> None:
    """No process, cgroup or state directory of any sandbox, and no connection file."""
    assert_no_leaks(runtime_dir)
    assert not km.connection_file or not os.path.exists(km.connection_file)
    assert not list(runtime_dir.glob("kernel-*.json"))
    assert not (runtime_dir / "hopx").exists() or not any((runtime_dir / "hopx").iterdir())


def start_expecting_failure(km: KernelManager, cwd: Path) -> Exception:
    """Start `km`; return the exception it raised, shutting down a kernel that did start."""
    try:
        km.start_kernel(cwd=str(cwd))
    except Exception as e:
        return e
    km.shutdown_kernel(now=True)
    pytest.fail("the kernel started despite the bad setting")


BAD_SETTINGS = [
    # (setting, value, text the error must contain besides the setting's name)
    ("memory_limit", "2 gigs", "'2G'"),
    ("memory_limit", "0.5", "'2G'"),  # half a byte must not silently mean "no limit"
    ("disk_limit", "-1G", "'2G'"),
    ("cpu_limit", "lots", "0.5"),
    ("cpu_limit", float("nan"), "0.5"),
    ("pids_limit", -5, "512"),
    ("pids_limit", "many", "512"),
    ("max_lifetime", "forever", "'1h'"),
    ("workspace", "maybe", "'ro'"),
    ("memroy_limit", "2G", "memory_limit"),
    ("read_only_paths", ["relative/path"], "'/srv/data'"),
    ("hidden_paths", ["relative"], "'~/private'"),
    ("hidden_paths", ["~someone/private"], "'/srv/private'"),
    ("hidden_credentials", ["/root/.ssh"], "'.ssh'"),
    ("hidden_credentials", ["../.ssh"], "'.config/gcloud'"),
    # The timeout policy is applied by the server extension, but a kernelspec with a typo in it
    # must not start anywhere.
    ("idle_timeout", "forever", "'1h'"),
    ("idle_timeout", -1, "'1h'"),
    ("warn_before", "soon", "'15m'"),
    ("warn_before", "5 minutes", "'15m'"),
    ("cull_interval", "0", "'30s'"),  # checking all the time is no interval
    ("cull_interval", 0, "'30s'"),
    ("cull_interval", "0s", "'30s'"),
    ("cull_interval", "-5s", "'90s'"),
    ("cull_interval", -5, "'90s'"),
    ("cull_busy", "yes", "boolean"),
    # A root server's sandboxes take their host uids from this range.
    ("sandbox_uid_range", "1000", "'1879048192-1879113727'"),
    ("sandbox_uid_range", "0-99999", "'1879048192-1879113727'"),  # root
    ("sandbox_uid_range", "70000-60000", "'1879048192-1879113727'"),
    ("sandbox_uid_range", "65000-66000", "'1879048192-1879113727'"),  # 65535 is "no uid"
    ("sandbox_uid_range", "1-999", "'1879048192-1879113727'"),  # daemon, bin, ... live here
]


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=[f"{s}={v!r}" for s, v, _ in BAD_SETTINGS])
def test_bad_setting_fails_before_anything_starts(
    case: tuple[str, Any, str],
    kernels_dir: Path,
    runtime_dir: Path,
    workspace: Path,
    supervisor_starts: list[Any],
) -> None:
    """A bad value in the kernelspec's provisioner config fails the start with a message that
    names the setting and shows a valid value; no supervisor is started, nothing is left."""
    setting, value, example = case
    name = write_raw_kernelspec(kernels_dir, "hopx-bad", {**VALID, setting: value})
    km = manager(kernels_dir, name)
    error = start_expecting_failure(km, workspace)
    assert_nothing_left(km, runtime_dir)
    assert setting in str(error)
    assert example in str(error)
    assert supervisor_starts == []  # validated up front, not by a failing supervisor


OUT_OF_RANGE = [
    ("pids_limit", 10**20),
    ("cpu_limit", 1e9),
    ("cpu_limit", float("inf")),
]


@pytest.mark.parametrize(
    ("setting", "value"), OUT_OF_RANGE, ids=[f"{s}={v!r}" for s, v in OUT_OF_RANGE]
)
def test_value_the_host_rejects_fails_cleanly_and_names_the_setting(
    setting: str, value: Any, kernels_dir: Path, runtime_dir: Path, workspace: Path
) -> None:
    """A number the kernel's cgroup files refuse (too large) fails the start, leaves nothing,
    and the error names the setting the admin wrote rather than a cgroup file."""
    name = write_raw_kernelspec(kernels_dir, "hopx-big", {**VALID, setting: value})
    km = manager(kernels_dir, name)
    error = start_expecting_failure(km, workspace)
    assert_nothing_left(km, runtime_dir)
    assert setting in str(error), str(error)


def test_missing_bubblewrap_says_to_install_it(
    kernels_dir: Path, runtime_dir: Path, workspace: Path, supervisor_starts: list[Any]
) -> None:
    """bwrap_path pointing nowhere fails the start with an install hint and starts nothing."""
    name = write_raw_kernelspec(
        kernels_dir, "hopx-nobwrap", {**VALID, "bwrap_path": "/nonexistent/bwrap"}
    )
    km = manager(kernels_dir, name)
    error = start_expecting_failure(km, workspace)
    assert "/nonexistent/bwrap" in str(error)
    assert "Install bubblewrap" in str(error)
    assert supervisor_starts == []
    assert_nothing_left(km, runtime_dir)


def test_no_bubblewrap_at_bwrap_path_fails_before_the_supervisor(
    kernels_dir: Path, runtime_dir: Path, workspace: Path, supervisor_starts: list[Any]
) -> None:
    """The configured bwrap_path is what is checked: a program that is no bubblewrap
    (/bin/false) fails the start with the upgrade named, before any supervisor starts."""
    name = write_raw_kernelspec(kernels_dir, "hopx-false", {**VALID, "bwrap_path": "/bin/false"})
    km = manager(kernels_dir, name)
    error = start_expecting_failure(km, workspace)
    assert "Upgrade bubblewrap to 0.8 or newer: /bin/false lacks" in str(error)
    assert supervisor_starts == []
    assert_nothing_left(km, runtime_dir)


def test_bubblewrap_that_fails_to_set_up_fails_cleanly(
    kernels_dir: Path,
    runtime_dir: Path,
    workspace: Path,
    supervisor_starts: list[Any],
    tmp_path: Path,
) -> None:
    """The configured bwrap_path is what runs: one that passes the options check but fails
    every sandbox fails the start with bubblewrap named, and the supervisor cleans up."""
    real = shutil.which("bwrap")
    assert real
    broken = tmp_path / "bwrap"
    broken.write_text(
        f'#!/bin/sh\nif [ "$1" = --help ]; then exec {real} --help; fi\n'
        'echo "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n'
    )
    broken.chmod(0o755)
    name = write_raw_kernelspec(kernels_dir, "hopx-broken", {**VALID, "bwrap_path": str(broken)})
    km = manager(kernels_dir, name)
    error = start_expecting_failure(km, workspace)
    assert len(supervisor_starts) == 1
    assert "bubblewrap could not set up the sandbox" in str(error)
    assert "setting up uid map: Permission denied" in str(error)
    assert_nothing_left(km, runtime_dir)


def test_kernel_command_missing_in_the_sandbox_dies_cleanly(
    kernels_dir: Path, runtime_dir: Path, workspace: Path
) -> None:
    """A kernelspec whose argv[0] does not exist fails the start or dies at once; either way
    shutdown leaves nothing behind."""
    spec = kernelspec(VALID, python=sys.executable)
    spec["argv"] = ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels_dir / "hopx-noexe").mkdir()
    (kernels_dir / "hopx-noexe" / "kernel.json").write_text(json.dumps(spec))
    km = manager(kernels_dir, "hopx-noexe")
    error: Exception | None = None
    try:
        km.start_kernel(cwd=str(workspace))
    except Exception as e:
        error = e
    else:
        assert wait_until(lambda: not km.is_alive(), 15)
        km.shutdown_kernel(now=True)
    assert error is None or "/nonexistent/python" in str(error)
    assert_nothing_left(km, runtime_dir)


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_unusable_notebook_folder_fails_the_start_with_its_path(
    case: str, kernels_dir: Path, runtime_dir: Path, workspace: Path
) -> None:
    """A notebook folder that does not exist, or that the sandbox uid cannot enter (a 0700
    folder of the root server, like /root), either works or fails the start with an error
    naming the folder; it must not start a kernel that then dies before replying."""
    if os.geteuid() != 0 and case == "unreadable":
        pytest.skip("only a root server runs the sandbox as another uid")
    workspace.chmod(0o700)  # only its (root) owner may enter it, as with /root
    folder = workspace / "gone" if case == "missing" else workspace
    name = write_raw_kernelspec(kernels_dir, "hopx-cwd", VALID)
    km = manager(kernels_dir, name)
    error: Exception | None = None
    try:
        km.start_kernel(cwd=str(folder))
    except Exception as e:
        error = e
    else:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)  # a kernel that started must work
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    assert error is None or str(folder) in str(error), error
    assert_nothing_left(km, runtime_dir)


CLI_BAD = [
    (["--memory", "2 gigs"], ["memory_limit", "'2G'"]),
    (["--disk=-1G"], ["disk_limit", "'2G'"]),
    (["--max-lifetime", "forever"], ["max_lifetime", "'1h'"]),
    (["--pids", "-5"], ["pids_limit", "512"]),
    (["--cpus", "lots"], ["--cpus", "lots"]),
    (["--cpus", "nan"], ["cpu_limit", "0.5"]),
]


def install(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "install", "--prefix", str(prefix), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def prefix() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hx-prefix-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(("args", "expected"), CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_cli_install_rejects_bad_limits(args: list[str], expected: list[str], prefix: Path) -> None:
    """`jupyter hopx install` with a bad limit exits 2, explains on stderr and writes no
    kernelspec."""
    result = install(prefix, *args)
    assert result.returncode == 2, result
    for text in expected:
        assert text in result.stderr
    assert not list(prefix.rglob("kernel.json"))


def test_cli_install_writes_good_limits(prefix: Path) -> None:
    """Control for the rejections: valid limits install a kernelspec carrying them."""
    result = install(prefix, "--memory", "2G", "--cpus", "0.5", "--max-lifetime", "8h")
    assert result.returncode == 0, result.stderr
    (path,) = prefix.rglob("kernel.json")
    config = json.loads(path.read_text())["metadata"]["kernel_provisioner"]["config"]
    assert config == {"memory_limit": "2G", "cpu_limit": 0.5, "max_lifetime": "8h"}


def test_leftovers_helper_sees_a_running_sandbox(
    kernels_dir: Path, runtime_dir: Path, workspace: Path, supervisor_starts: list[Any]
) -> None:
    """Control for the "nothing left" checks: with a good kernelspec the same start runs a
    supervisor and leaves visible state until shutdown."""
    name = write_raw_kernelspec(kernels_dir, "hopx-good", VALID)
    km = manager(kernels_dir, name)
    km.start_kernel(cwd=str(workspace))
    try:
        assert len(supervisor_starts) == 1
        assert leftovers(runtime_dir)
        assert os.path.exists(km.connection_file)
    finally:
        km.shutdown_kernel(now=True)
    assert_nothing_left(km, runtime_dir)


def test_good_timeout_policy_settings_are_accepted() -> None:
    """Control for the rejections: the same settings with valid values are accepted and parsed
    to seconds."""
    provisioner = HopxProvisioner(
        kernel_id="k",
        kernel_spec=None,
        idle_timeout="30m",
        warn_before=0,
        cull_interval="0.5s",
        cull_busy=True,
        max_lifetime="8h",
    )
    assert provisioner.policy.idle_timeout == 1800.0
    assert provisioner.policy.warn_before == 0.0
    assert provisioner.policy.max_lifetime == 8 * 3600.0
    assert provisioner.policy.cull_busy is True
    assert provisioner.cull_interval == 0.5


def test_systemd_scope_with_a_cgroup_parent_fails_before_anything_starts(
    kernels_dir: Path, runtime_dir: Path, workspace: Path, supervisor_starts: list[Any]
) -> None:
    """Two settings that each say where the sandbox's cgroup goes: the start names both and
    how to fix it, starts no supervisor and leaves nothing."""
    config = {**VALID, "systemd_scope": True, "cgroup_parent": "hopx.slice"}
    km = manager(kernels_dir, write_raw_kernelspec(kernels_dir, "hopx-both", config))
    error = str(start_expecting_failure(km, workspace))
    assert_nothing_left(km, runtime_dir)
    assert "systemd_scope" in error
    assert "cgroup_parent = ''" in error
    assert supervisor_starts == []
