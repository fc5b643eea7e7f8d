"""`jupyter hopx install` and `jupyter hopx list`, run the way users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Kernel

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
        },
    }
    assert Path(spec["argv"][0]).parent == Path(sys.executable).parent
    assert (tmp_path / "share/jupyter/kernels/hopx-big/logo-64x64.png").exists()


def test_install_user(tmp_path: Path) -> None:
    result = hopx("install", "--user", env={"JUPYTER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels/hopx-python/kernel.json").exists()


def test_install_refuses_bad_limits_and_writes_nothing(tmp_path: Path) -> None:
    result = hopx("install", "--prefix", str(tmp_path), "--disk", "lots")
    assert result.returncode == 2
    assert "disk_limit 'lots' is not a size; use e.g. '2G'" in result.stderr
    assert not (tmp_path / "share").exists()


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
    table = hopx("list").stdout
    assert kernel.km.kernel_id in table
    assert "/300M" in table
