"""What a sandbox must not see even where a mount exposes it: Jupyter's own directories and the
credentials kept in home folders.

A notebook at the top of a home folder (JupyterHub serves each user's home) makes that home the
workspace; an interpreter below `/usr/local` brings `/usr/local/etc/jupyter` along with `/usr`.
Both are mounted as a whole, so the places below are covered again inside them: a directory by
an empty read-only one, a file by an empty one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from jupyter_core.paths import jupyter_config_path, jupyter_path, jupyter_runtime_dir

# Where programs keep credentials, relative to a home folder: keys, cloud and cluster logins,
# registry and package-index tokens, password stores.
DEFAULT_HIDDEN_CREDENTIALS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".config/gh",
    ".config/rclone",
    ".password-store",
    ".local/share/keyrings",
    ".terraform.d",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".yarnrc.yml",
    ".pgpass",
    ".my.cnf",
    ".boto",
    ".s3cfg",
    ".databrickscfg",
    ".vault-token",
)


def jupyter_directories() -> list[str]:
    """Every Jupyter runtime, config and data directory of this server: tokens, cookie and
    notebook-signing secrets, connection files and server settings live there."""
    return [jupyter_runtime_dir(), *jupyter_config_path(), *jupyter_path()]


def expand_home(path: str) -> str:
    """`~` and `~/...` are the server user's home (each user's own under JupyterHub)."""
    return os.path.expanduser(path) if path == "~" or path.startswith("~/") else path


def folders_holding_credentials(workspace: str | None, mounted: Iterable[str]) -> list[str]:
    """Folders that may be someone's home: the server user's, each mounted path, the workspace
    and its subfolders (a folder of homes, such as /home)."""
    folders = [os.path.expanduser("~"), *mounted]
    if workspace:
        folders.append(workspace)
        try:
            with os.scandir(workspace) as entries:
                folders += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass  # unreadable: the sandbox cannot list it either
    return folders


def credential_places(folders: Iterable[str], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The credential directories and files that exist below `folders`, as real paths."""
    directories: list[str] = []
    files: list[str] = []
    names = list(names)
    for folder in folders:
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.lexists(path):
                continue
            real = os.path.realpath(path)
            (directories if os.path.isdir(real) else files).append(real)
    return directories, files
