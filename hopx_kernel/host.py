"""Host checks run before the first sandbox of a process starts, and the start-up sweep."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable

from jupyter_core.paths import jupyter_runtime_dir

from runtime.bwrap import OPTIONS_USED
from runtime.registry import sweep


def state_root() -> str:
    """Where this user's sandboxes keep their sockets and records."""
    return os.path.join(jupyter_runtime_dir(), "hopx")


@functools.cache
def check_host(bwrap: str) -> None:
    """Fail with what to install or enable when this host cannot run a sandbox at all."""
    path = shutil.which(bwrap)
    if not path:
        msg = (
            "Install bubblewrap, e.g. `apt install bubblewrap` or `dnf install bubblewrap`, or "
            f"set bwrap_path to where it is: {bwrap} is not installed."
        )
        raise RuntimeError(msg)
    missing = missing_bwrap_options(path)
    if missing:
        raise RuntimeError(outdated_bwrap_message(path, missing))
    problem = user_namespace_problem()
    if problem:
        raise RuntimeError(problem)


def missing_bwrap_options(bwrap: str) -> list[str]:
    """The options Hopx passes that this bubblewrap does not list in its --help."""
    result = subprocess.run([bwrap, "--help"], capture_output=True, text=True, check=False)
    known = set(re.findall(r"--[a-z][a-z-]*", result.stdout + result.stderr))
    return [option for option in OPTIONS_USED if option not in known]


def outdated_bwrap_message(bwrap: str, missing: list[str]) -> str:
    return (
        f"Upgrade bubblewrap to 0.8 or newer: {bwrap} lacks {', '.join(missing)}, "
        "which Hopx needs to start a sandbox."
    )


def user_namespace_problem(proc: str = "/proc", euid: int | None = None) -> str | None:
    """Why this host refuses user namespaces, with the fix; None when they are allowed."""
    unprivileged = (os.geteuid() if euid is None else euid) != 0
    checks: list[tuple[str, Callable[[str], bool], str]] = [
        (
            "sys/user/max_user_namespaces",
            lambda v: v == "0",
            "Enable user namespaces with `sysctl -w user.max_user_namespaces=15000`: this host "
            "disables them (user.max_user_namespaces = 0).",
        ),
        (
            "sys/kernel/unprivileged_userns_clone",
            lambda v: v == "0" and unprivileged,
            "Enable unprivileged user namespaces with "
            "`sysctl -w kernel.unprivileged_userns_clone=1`: this host disables them.",
        ),
        (
            "sys/kernel/apparmor_restrict_unprivileged_userns",
            lambda v: v == "1" and unprivileged,
            "Allow bwrap with an AppArmor profile (see the README's troubleshooting) or run "
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`: AppArmor restricts "
            "unprivileged user namespaces here (Ubuntu 23.10+).",
        ),
    ]
    for path, is_bad, message in checks:
        try:
            with open(os.path.join(proc, path)) as f:
                value = f.read().strip()
        except OSError:
            continue
        if is_bad(value):
            return message
    return None


_swept = False


def sweep_stale_sandboxes(
    log: logging.Logger | logging.LoggerAdapter[logging.Logger], cgroup_parent: str = ""
) -> None:
    """Once per process: remove what sandboxes of a crashed host or server left behind."""
    global _swept  # noqa: PLW0603 - a once-per-process flag
    if _swept:
        return
    _swept = True
    try:
        removed = sweep(state_root(), cgroup_parent)
    except OSError:
        log.exception("Hopx: the sweep of stale sandboxes failed")
        return
    for path in removed:
        log.info("Hopx: removed %s left by a sandbox that is gone", path)
