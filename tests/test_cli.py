"""`jupyter hopx install`, `list` and `kill`, run the way users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Kernel, assert_no_leaks, wait_until
from hopx_kernel.cli import _command_name
from hopx_kernel.provisioner import HopxProvisioner

JUPYTER = str(Path(sys.executable).with_name("jupyter"))


def hopx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JUPYTER, "hopx", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_install_into_a_prefix_with_limits(tmp_path: Path) -> None:
    result = hopx(
        "install",
        "--prefix",
        str(tmp_path),
        "--name",
        "hopx-big",
        "--display-name",
        "Big sandbox",
        "--memory",
        "4G",
        "--cpus",
        "2",
        "--workspace",
        "rw",
        "--max-lifetime",
        "8h",
        "--files",
        "50000",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/hopx-big/kernel.json").read_text())
    assert spec["display_name"] == "Big sandbox"
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "hopx-provisioner",
        "config": {
            "memory_limit": "4G",
            "cpu_limit": 2.0,
            "workspace": "rw",
            "max_lifetime": "8h",
            "files_limit": 50000,
        },
    }
    assert Path(spec["argv"][0]).parent == Path(sys.executable).parent
    assert (tmp_path / "share/jupyter/kernels/hopx-big/logo-64x64.png").exists()
    # Readable by every user whose server lists kernelspecs in a shared prefix.
    assert (tmp_path / "share/jupyter/kernels/hopx-big").stat().st_mode & 0o777 == 0o755


def test_install_user(tmp_path: Path) -> None:
    result = hopx("install", "--user", env={"JUPYTER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels/hopx-python/kernel.json").exists()


def test_install_refuses_bad_limits_and_writes_nothing(tmp_path: Path) -> None:
    result = hopx("install", "--prefix", str(tmp_path), "--disk", "lots")
    assert result.returncode == 2
    assert "disk_limit 'lots' is not a size; use e.g. '2G'" in result.stderr
    assert not (tmp_path / "share").exists()


def test_install_with_an_outbound_policy(tmp_path: Path) -> None:
    args = ["--allow", "preset:pypi", "--allow", "*.example.org:443", "--deny", "evil.example.org"]
    result = hopx("install", "--prefix", str(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/hopx-python/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "network_allow": ["preset:pypi", "*.example.org:443"],
        "network_deny": ["evil.example.org"],
    }


def test_install_refuses_a_bad_rule_naming_the_setting_and_an_example(tmp_path: Path) -> None:
    result = hopx("install", "--prefix", str(tmp_path), "--allow", "https://pypi.org/simple")
    assert result.returncode == 2
    assert (
        "network_allow entry 'https://pypi.org/simple' is a URL; write its host and port, "
        "e.g. 'pypi.org:443'" in result.stderr
    )
    assert not (tmp_path / "share").exists()


def test_install_with_secrets_writes_references_never_values(tmp_path: Path) -> None:
    args = ["--secret", "OPENAI_API_KEY=store:openai", "--secret", "DB=file:/run/secrets/db"]
    result = hopx("install", "--prefix", str(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/hopx-python/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "secrets": {"OPENAI_API_KEY": "store:openai", "DB": "file:/run/secrets/db"}
    }
    for bad, says in (
        ("OPENAI_API_KEY", "--secret takes VAR=REF, e.g. OPENAI_API_KEY=store:openai"),
        ("KEY=vault:x", "HopxProvisioner.secrets: KEY must name a provider"),
    ):
        refused = hopx("install", "--prefix", str(tmp_path / "bad"), "--secret", bad)
        assert refused.returncode == 2
        assert says in refused.stderr, refused.stderr
    assert not (tmp_path / "bad").exists()


LOCKDOWN_CONFIG = {"ServerApp": {"jpserver_extensions": {"hopx_kernel.lockdown": True}}}


def test_install_lockdown_beside_the_kernelspec_until_no_lockdown(tmp_path: Path) -> None:
    """--lockdown enables the lockdown extension in the prefix's jupyter_server_config.d (a file
    every user's server can read); an install without the flag leaves it; --no-lockdown removes
    it, and says so also when there was none."""
    config = tmp_path / "etc/jupyter/jupyter_server_config.d/hopx_lockdown.json"
    locked = hopx("install", "--prefix", str(tmp_path), "--lockdown")
    assert locked.returncode == 0, locked.stderr
    assert (tmp_path / "share/jupyter/kernels/hopx-python/kernel.json").exists()
    assert json.loads(config.read_text()) == LOCKDOWN_CONFIG
    assert config.stat().st_mode & 0o777 == 0o644
    assert locked.stdout.splitlines()[-1] == f"Lockdown on: {config}"

    again = hopx("install", "--prefix", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "Lockdown" not in again.stdout
    assert json.loads(config.read_text()) == LOCKDOWN_CONFIG

    unlocked = hopx("install", "--prefix", str(tmp_path), "--no-lockdown")
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout.splitlines()[-1] == f"Lockdown off: removed {config}"
    assert not config.exists()
    twice = hopx("install", "--prefix", str(tmp_path), "--no-lockdown")
    assert twice.stdout.splitlines()[-1] == f"Lockdown off: no {config}"


def test_install_lockdown_user(tmp_path: Path) -> None:
    """--user --lockdown: the kernelspec in the user's data directory, lockdown in the user's
    config directory."""
    env = {"JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    result = hopx("install", "--user", "--lockdown", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/kernels/hopx-python/kernel.json").exists()
    config = tmp_path / "cfg/jupyter_server_config.d/hopx_lockdown.json"
    assert json.loads(config.read_text()) == LOCKDOWN_CONFIG


def test_install_with_bad_limits_writes_no_lockdown_either(tmp_path: Path) -> None:
    result = hopx("install", "--prefix", str(tmp_path), "--disk", "lots", "--lockdown")
    assert result.returncode == 2
    assert "disk_limit 'lots' is not a size" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_shows_running_sandboxes(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    assert "No Hopx sandboxes are running." in hopx("list").stdout
    kernel = start_kernel(memory_limit="300M")
    kernel.run("x = bytearray(50 << 20)")
    rows = json.loads(hopx("list", "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["kernel_id"] == kernel.km.kernel_id
    assert row["pid"] == kernel.supervisor_pid
    assert row["limits"]["memory"] == 300 << 20
    assert row["memory_bytes"] > 50 << 20
    assert row["age_seconds"] >= 0
    address = kernel.km.provisioner.supervisor.started["address"]
    assert row["address"] == address
    table = hopx("list").stdout
    assert kernel.km.kernel_id in table
    assert f" {address} " in table
    assert "/300M" in table


def test_kill_all_with_nothing_running(runtime_dir: Path) -> None:
    """`jupyter hopx kill --all` with no sandbox running says so and succeeds."""
    result = hopx("kill", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "No Hopx sandboxes are running.\n"


def test_kill_unknown_kernel_fails_and_points_to_list(runtime_dir: Path) -> None:
    """`jupyter hopx kill` with an id that matches nothing exits 1 and names the id and
    `jupyter hopx list`."""
    result = hopx("kill", "no-such-kernel")
    assert result.returncode == 1
    assert "'no-such-kernel' matches no running sandbox" in result.stderr
    assert "`jupyter hopx list`" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [[], ["some-id", "--all"]], ids=["nothing", "both"])
def test_kill_needs_ids_or_all(args: list[str], runtime_dir: Path) -> None:
    """`jupyter hopx kill` with neither kernel ids nor --all (or with both) is a usage error:
    exit 2 with the usage line."""
    result = hopx("kill", *args)
    assert result.returncode == 2
    assert "usage: jupyter hopx kill" in result.stderr
    assert "KERNEL_ID" in result.stderr


def test_kill_checks_every_id_first_then_kill_all_stops_everything(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    """With two kernels running: an empty id, a prefix of both ids or an unknown id next to a
    valid one fails with exit 1 and stops nothing; `kill --all` then stops both, reporting
    each, for reason "manual", and neither kernel can be restarted afterwards."""
    ids = [f"abcd{uuid.uuid4().hex[:4]}-0000-4000-8000-00000000000{n}" for n in (1, 2)]
    kernels = [start_kernel(kernel_id=kernel_id) for kernel_id in ids]

    empty = hopx("kill", "")
    assert empty.returncode == 1
    assert "empty kernel id" in empty.stderr
    ambiguous = hopx("kill", "abcd")
    assert ambiguous.returncode == 1
    assert "matches several sandboxes" in ambiguous.stderr
    partly_unknown = hopx("kill", ids[0], "no-such-kernel")
    assert partly_unknown.returncode == 1
    assert "'no-such-kernel' matches no running sandbox" in partly_unknown.stderr
    assert all(k.km.is_alive() for k in kernels)

    result = hopx("kill", "--all")
    assert result.returncode == 0, result.stderr
    assert sorted(line.split()[2] for line in result.stdout.splitlines()) == sorted(ids)
    assert all(line.startswith("Killed kernel ") for line in result.stdout.splitlines())
    for kernel in kernels:
        assert not kernel.km.is_alive()
        provisioner = kernel.km.provisioner
        assert isinstance(provisioner, HopxProvisioner)
        assert provisioner.last_exit_reason == "manual"
        with pytest.raises(RuntimeError, match=r"\(manual\) and is not restarted"):
            kernel.km.restart_kernel(now=True)
    assert json.loads(hopx("list", "--json").stdout) == []
    for kernel in kernels:
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_owner_of_a_python_dash_m_program_is_the_module() -> None:
    """The OWNER column names what runs: a program started as `python -m <module>` (as
    papermill often is) should be shown as the module, not as the interpreter."""
    process = subprocess.Popen(
        [sys.executable, "-m", "timeit", "-n", "1", "-r", "1", "import time; time.sleep(30)"],
        stdout=subprocess.DEVNULL,
    )
    try:
        # Until exec has set up the new program's arguments, /proc shows none.
        assert wait_until(Path(f"/proc/{process.pid}/cmdline").read_bytes, 10)
        assert _command_name(process.pid) == "timeit"
    finally:
        process.kill()
        process.wait()
