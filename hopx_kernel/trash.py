"""Moving a file to the desktop trash (the FreeDesktop.org trash specification, as send2trash does
on Linux) without following symbolic links, for files below a `Beneath` directory.

send2trash reaches the file and the trash by path, with realpath and open(): a link on either way
takes it elsewhere. A kernel that made the .Trash-<uid> of a read-write notebook folder (one at
the top of its file system) a link to /etc had a root server write the trash's records there and
try to move the file after them. Here the file is moved by renameat() from its directory's
descriptor into the trash's `files` directory, which is opened one name at a time without
following links (nofollow.walk), and the record is made with O_EXCL|O_NOFOLLOW.

Which trash, as in send2trash: the home trash, $XDG_DATA_HOME/Trash (~/.local/share/Trash), when
the file is on the file system of the home directory; else $topdir/.Trash-$uid at the top of the
file's file system (the shared $topdir/.Trash/$uid is not used). The home directory and
XDG_DATA_HOME themselves, the root directory and the directories above it are the admin's and are
taken as they are; everything below them is reached without following links.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from datetime import datetime
from urllib.parse import quote

from hopx_kernel.nofollow import Beneath, join, split, walk

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RECORD = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def move_to_trash(beneath: Beneath, path: str, *, now: datetime | None = None) -> str:
    """Move `path` (below `beneath`'s root, a link as itself) to the trash; returns where it went.
    Raises LinkRefused for a link on the way to it or into the trash, and OSError when the trash
    cannot take it (e.g. EXDEV across mounts of one file system)."""
    names = split(path)
    with beneath.parent(path) as (parent, name):
        device = os.stat(name, dir_fd=parent, follow_symlinks=False).st_dev
        absolute = os.path.join(beneath.root, *names)
        home = os.path.abspath(os.path.expanduser("~"))
        if device == os.stat(home).st_dev:
            trash, shown = _home_trash(home)
            # The home trash records absolute paths (its top directory, XDG_DATA_HOME, never
            # holds a notebook folder worth the name).
            recorded = absolute
        else:
            trash, shown, recorded = _top_trash(beneath, path, absolute)
        try:
            files = walk(trash, ["files"], shown, create=0o700)
            info = walk(trash, ["info"], shown, create=0o700)
        finally:
            os.close(trash)
        try:
            chosen = _reserve(files, info, name, recorded, now or datetime.now())
            try:
                os.rename(name, chosen, src_dir_fd=parent, dst_dir_fd=files)
            except OSError:
                os.unlink(f"{chosen}.trashinfo", dir_fd=info)
                raise
        finally:
            os.close(files)
            os.close(info)
    return join(shown, "files", chosen)


def _home_trash(home: str) -> tuple[int, str]:
    """$XDG_DATA_HOME/Trash: an O_PATH descriptor, and its path."""
    data_home = os.path.abspath(
        os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    )
    if data_home.startswith(home + os.sep):
        anchor, shown = home, home
        below = data_home[len(home) + 1 :].split(os.sep)
    else:
        os.makedirs(data_home, 0o700, exist_ok=True)
        anchor, shown, below = data_home, data_home, []
    fd = os.open(anchor, _DIR)
    try:
        return walk(fd, [*below, "Trash"], shown, create=0o700), join(data_home, "Trash")
    finally:
        os.close(fd)


def _top_trash(beneath: Beneath, path: str, absolute: str) -> tuple[int, str, str]:
    """$topdir/.Trash-$uid for `path`: an O_PATH descriptor, its path (an API path when below
    the root), and the path the record gives, relative to $topdir."""
    trash_name = f".Trash-{os.getuid()}"
    top = beneath.mount_top(path)
    if top is not None:
        top_path, fd = top
        shown = top_path
        recorded = "/".join(split(path)[len(split(top_path)) :])
    else:
        top_dir = _mount_point(beneath.root)
        fd = os.open(top_dir, _DIR)
        # The root itself at the top: name the trash as a path below the root.
        shown = "" if os.path.samefile(top_dir, beneath.root) else top_dir
        recorded = os.path.relpath(absolute, top_dir)
    try:
        return walk(fd, [trash_name], shown, create=0o700), join(shown, trash_name), recorded
    finally:
        os.close(fd)


def _mount_point(directory: str) -> str:
    """The top of the file system holding `directory` (the admin's path, resolved)."""
    path = os.path.realpath(directory)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _reserve(files: int, info: int, name: str, recorded: str, now: datetime) -> str:
    """A name free in the trash, its record written (made with O_EXCL, as the specification
    asks, so two deletions cannot take the same name)."""
    base, ext = os.path.splitext(name)
    for counter in itertools.count():
        chosen = f"{base} {counter}{ext}" if counter else name
        with contextlib.suppress(FileNotFoundError):
            os.stat(chosen, dir_fd=files, follow_symlinks=False)
            continue
        try:
            fd = os.open(f"{chosen}.trashinfo", _RECORD, 0o600, dir_fd=info)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as record:
            record.write(
                "[Trash Info]\n"
                f"Path={quote(recorded)}\n"
                f"DeletionDate={now.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            )
        return chosen
    raise AssertionError  # itertools.count() does not end
