"""A cgroup delegated to one unprivileged user, for the sandboxes of their Jupyter server.

Root (a JupyterHub, an admin's script) makes `hopx-users/<user>` in every hierarchy that carries
a controller Hopx limits or reads (memory, cpu, cpuacct, pids; the one v2 hierarchy on a v2 host)
and hands the user what delegation needs: the directory and the files that add and move
processes. The limit files of the directory itself stay root's, so a cap root writes there holds
for all of the user's sandboxes together. The user's server then runs with
`cgroup_parent = "hopx-users/<user>"`.

On cgroup v2 a process may move only within a subtree whose common ancestor's `cgroup.procs` its
user can write: the user's server must therefore start inside the delegated subtree (its leaf
`server`), which root arranges before the server drops its privileges (`join`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups import CgroupHost, Hierarchy

ROOT = "hopx-users"
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
# What the user may write in a delegated directory: make children, move processes into them.
V1_DELEGATED_FILES = ("cgroup.procs", "tasks")
V2_DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
# The leaf a v2 user's server runs in: processes may not sit in a directory with children.
SERVER_LEAF = "server"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\Z")


class DelegationError(RuntimeError):
    pass


@dataclass(frozen=True)
class UserCgroup:
    """The directories of one user's delegated cgroup, one per hierarchy."""

    user: str
    directories: tuple[str, ...]
    # Where the user's server runs: each directory, or on v2 its leaf.
    server_directories: tuple[str, ...]

    @property
    def cgroup_parent(self) -> str:
        """What the user's server sets HopxProvisioner.cgroup_parent to."""
        return f"{ROOT}/{self.user}"

    def join(self) -> None:
        """Move the calling process into the user's cgroup (run as root, before it drops its
        privileges: on v2 only root may move a process into a delegated subtree)."""
        for directory in self.server_directories:
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write("0")


def hierarchies(host: CgroupHost) -> list[Hierarchy]:
    """The hierarchies a user's cgroup needs a directory in (each once)."""
    found: list[Hierarchy] = []
    for controller in CONTROLLERS:
        hierarchy = host.hierarchy_for(controller)
        if hierarchy is not None and hierarchy not in found:
            found.append(hierarchy)
    return found


def delegate(user: str, uid: int, gid: int, host: CgroupHost | None = None) -> UserCgroup:
    """Make (or reuse) `user`'s cgroup in every hierarchy and delegate it to uid/gid."""
    if not _NAME.match(user):
        msg = f"{user!r} cannot name a cgroup directory"
        raise DelegationError(msg)
    host = host or CgroupHost.detect()
    found = hierarchies(host)
    if not found:
        msg = "this host mounts none of the memory, cpu and pids cgroup controllers"
        raise DelegationError(msg)
    directories, server_directories = [], []
    for hierarchy in found:
        root = Path(hierarchy.path) / ROOT
        directory = root / user
        try:
            if hierarchy.version == 2:
                _enable(Path(hierarchy.path), hierarchy.controllers)
                root.mkdir(exist_ok=True)
                _enable(root, hierarchy.controllers)
                directory.mkdir(exist_ok=True)
                _chown(directory, V2_DELEGATED_FILES, uid, gid)
                # The server's own leaf; the sandboxes' cgroups are made beside it.
                leaf = directory / SERVER_LEAF
                leaf.mkdir(exist_ok=True)
                _chown(leaf, V2_DELEGATED_FILES, uid, gid)
                server_directories.append(str(leaf))
            else:
                root.mkdir(exist_ok=True)
                directory.mkdir(exist_ok=True)
                _chown(directory, V1_DELEGATED_FILES, uid, gid)
                server_directories.append(str(directory))
        except OSError as e:
            msg = f"cannot delegate {directory} to uid {uid}: {e.strerror}"
            raise DelegationError(msg) from e
        directories.append(str(directory))
    return UserCgroup(user, tuple(directories), tuple(server_directories))


def remove(user: str, host: CgroupHost | None = None, timeout: float = 5.0) -> None:
    """Remove `user`'s cgroup: what still runs in it is killed, its children removed first."""
    host = host or CgroupHost.detect()
    for hierarchy in hierarchies(host):
        directory = Path(hierarchy.path) / ROOT / user
        if directory.is_dir():
            _remove_tree(directory, timeout)
        # The last user's goes with it; others' keep it (it is not empty).
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


def _remove_tree(directory: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for child in sorted(
        (p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
    ):
        _empty_and_remove(child, deadline)
    _empty_and_remove(directory, deadline)


def _empty_and_remove(directory: Path, deadline: float) -> None:
    while True:
        with contextlib.suppress(OSError):
            (directory / "cgroup.kill").write_text("1")
        pids = _pids(directory)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            directory.rmdir()
        except FileNotFoundError:
            return
        except OSError as e:
            if time.monotonic() > deadline:
                msg = f"cannot remove {directory}: {e.strerror} (pids {sorted(pids)})"
                raise DelegationError(msg) from e
            time.sleep(0.01)
        else:
            return


def _pids(directory: Path) -> set[int]:
    try:
        return {int(p) for p in (directory / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _chown(directory: Path, files: tuple[str, ...], uid: int, gid: int) -> None:
    os.chown(directory, uid, gid)
    for name in files:
        with contextlib.suppress(FileNotFoundError):
            os.chown(directory / name, uid, gid)


def _enable(directory: Path, controllers: frozenset[str]) -> None:
    """Give `directory`'s children the controllers Hopx uses (v2)."""
    wanted = controllers & {"memory", "cpu", "pids"}
    enabled = set((directory / "cgroup.subtree_control").read_text().split())
    missing = wanted - enabled
    if missing:
        (directory / "cgroup.subtree_control").write_text(
            " ".join(f"+{c}" for c in sorted(missing))
        )
