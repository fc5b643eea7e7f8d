"""Host checks: what a user is told when the host cannot run a sandbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hopx_kernel.host import check_host, missing_bwrap_options, user_namespace_problem


def fake_proc(tmp_path: Path, **values: str) -> str:
    for name, value in values.items():
        path = tmp_path / "sys" / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return str(tmp_path)


def test_this_host_allows_user_namespaces() -> None:
    assert user_namespace_problem() is None


def test_disabled_user_namespaces_say_how_to_enable(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, user__max_user_namespaces="0")
    assert "sysctl -w user.max_user_namespaces" in str(user_namespace_problem(proc, euid=0))


def test_debian_unprivileged_switch(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, kernel__unprivileged_userns_clone="0")
    assert user_namespace_problem(proc, euid=0) is None  # root is not affected
    assert "kernel.unprivileged_userns_clone=1" in str(user_namespace_problem(proc, euid=1000))


def test_ubuntu_apparmor_restriction(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, kernel__apparmor_restrict_unprivileged_userns="1")
    problem = str(user_namespace_problem(proc, euid=1000))
    assert "AppArmor" in problem
    assert "apparmor_restrict_unprivileged_userns=0" in problem


def test_missing_bubblewrap_says_what_to_install() -> None:
    with pytest.raises(RuntimeError, match=r"apt install bubblewrap"):
        check_host("/nonexistent/bwrap")


def test_bubblewrap_without_an_option_hopx_uses_says_to_upgrade(tmp_path: Path) -> None:
    """Debian 11's bubblewrap 0.4 and RHEL 9's 0.5 have no --disable-userns: the check names
    the option and the version to get instead of letting every start fail in bubblewrap."""
    old = tmp_path / "bwrap"
    help_text = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, check=True)
    (tmp_path / "help.txt").write_text(help_text.stdout.replace("--disable-userns", ""))
    old.write_text(f"#!/bin/sh\ncat {tmp_path / 'help.txt'}\n")
    old.chmod(0o755)
    assert missing_bwrap_options(str(old)) == ["--disable-userns"]
    with pytest.raises(
        RuntimeError, match=r"^Upgrade bubblewrap to 0.8 or newer: .* lacks --disable-userns"
    ):
        check_host(str(old))
    assert missing_bwrap_options("bwrap") == []
