"""What a kernel inherits from the host: an allowlisted environment and its runtime's paths."""

from __future__ import annotations

import sys
from pathlib import Path

from hopx_kernel.environment import minimal_roots, python_paths, sandbox_env


def test_server_secrets_stay_out() -> None:
    host = {
        "JUPYTERHUB_API_TOKEN": "secret",
        "JPY_API_TOKEN": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "PATH": "/root/bin:/usr/bin",
        "HOME": "/root",
        "LANG": "de_DE.UTF-8",
        "LC_TIME": "C",
    }
    env = sandbox_env(host, {"HX_FROM_SPEC": "yes"}, ["LANG", "LC_*"], "/venv/bin")
    assert "secret" not in env.values()
    assert env["HOME"] == "/home/sandbox"
    assert env["PATH"].split(":")[0] == "/venv/bin"
    assert "/root/bin" not in env["PATH"]
    assert env["LANG"] == "de_DE.UTF-8"
    assert env["LC_TIME"] == "C"
    assert env["HX_FROM_SPEC"] == "yes"


def test_kernelspec_env_wins_and_tmpdir_follows_workspace() -> None:
    env = sandbox_env({}, {"LANG": "fr_FR.UTF-8"}, [], None)
    assert env["LANG"] == "fr_FR.UTF-8"
    assert env["TMPDIR"] == "/tmp"
    assert sandbox_env({}, {}, [], None, workspace="/tmp")["TMPDIR"] == "/var/tmp"
    assert sandbox_env({}, {}, [], None, workspace="/tmp/nb")["TMPDIR"] == "/tmp"


def test_python_paths_of_a_venv(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "python3").symlink_to(sys.executable)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(base / "bin" / "python3")
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\n")
    paths = python_paths(str(venv / "bin" / "python"))
    assert str(venv) in paths
    assert str(base) in paths


def test_python_paths_skip_system_dirs() -> None:
    assert python_paths("/usr/bin/python3") == []
    assert python_paths("/no/such/python") == []


def test_minimal_roots() -> None:
    assert minimal_roots(["/a/b", "/a", "/c", "/a/b/c", "/c"]) == ["/a", "/c"]
