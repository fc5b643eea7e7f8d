"""What the kernel's process gets from the host: its environment and the paths of its runtime.

Both are built from allowlists. The server's environment carries tokens (JUPYTERHUB_API_TOKEN,
JPY_*) and anything else the admin exported; none of it is copied unless named here or in the
kernelspec's own `env`.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable, Mapping

from runtime.bwrap import SYSTEM_DIRS, is_within
from runtime.spec import SANDBOX_HOME, SANDBOX_USER

# Host variables a kernel may inherit: locale and time zone only. Patterns use fnmatch.
DEFAULT_ENV_ALLOWLIST = ("LANG", "LANGUAGE", "LC_*", "TZ")


def sandbox_env(
    host_env: Mapping[str, str],
    kernelspec_env: Mapping[str, str],
    allowlist: Iterable[str],
    python_bin: str | None,
    workspace: str | None = None,
) -> dict[str, str]:
    """The kernel's complete environment."""
    path = ["/usr/local/bin", "/usr/bin", "/bin"]
    if python_bin and python_bin not in path:
        path.insert(0, python_bin)
    env = {
        "PATH": ":".join(path),
        "HOME": SANDBOX_HOME,
        "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER,
        "SHELL": "/bin/bash",
        # A workspace mounted over /tmp (a notebook run from /tmp) makes /tmp read-only.
        "TMPDIR": "/var/tmp" if workspace and is_within("/tmp", workspace) else "/tmp",
        "LANG": "C.UTF-8",
    }
    patterns = tuple(allowlist)
    for name, value in host_env.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            env[name] = value
    env.update(kernelspec_env)
    return env


def python_paths(executable: str) -> list[str]:
    """Host directories a Python interpreter needs: its prefix, and a venv's base interpreter.

    Directories already under the system directories the sandbox always sees are left out.
    """
    found = shutil.which(executable)
    if not found:
        return []
    exe = os.path.abspath(found)
    candidates = [os.path.dirname(os.path.dirname(exe))]
    venv_home = _venv_home(candidates[0])
    if venv_home:
        candidates.append(os.path.dirname(venv_home))
    candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(exe))))
    return minimal_roots(
        c for c in candidates if not any(is_within(os.path.realpath(c), d) for d in SYSTEM_DIRS)
    )


def resolve_mounts(paths: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Existing host paths as the real paths to mount, plus (target, link) symlinks for those
    reached through a symlink, so the kernel sees both names as the host does."""
    real_paths: list[str] = []
    links: list[tuple[str, str]] = []
    for path in paths:
        if not os.path.exists(path):
            continue
        real = os.path.realpath(path)
        real_paths.append(real)
        if os.path.normpath(path) != real:
            links.append((real, os.path.normpath(path)))
    return minimal_roots(real_paths), links


def _venv_home(prefix: str) -> str | None:
    """The `home` (base interpreter's bin directory) of a venv's pyvenv.cfg, if `prefix` is one."""
    try:
        with open(os.path.join(prefix, "pyvenv.cfg")) as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() == "home":
                    return value.strip()
    except OSError:
        return None
    return None


def minimal_roots(paths: Iterable[str]) -> list[str]:
    """`paths` without duplicates and without any path inside another one, in first-seen order."""
    roots: list[str] = []
    for path in paths:
        if any(is_within(path, root) for root in roots):
            continue
        roots = [root for root in roots if not is_within(root, path)]
        roots.append(path)
    return roots
