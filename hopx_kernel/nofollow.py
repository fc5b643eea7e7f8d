"""Files below a directory, reached without following symbolic links.

jupyter_server's file contents manager reaches its files with open(), shutil and os.rename, which
follow a symbolic link at any component of a path. A sandboxed kernel that can write a notebook
folder can plant such links, and a check before the use (realpath, islink) loses the race
against a kernel that swaps a directory for a link in between, in a loop.

`Beneath` holds a directory open and reaches every path from that descriptor one name at a time:
each directory is opened with O_NOFOLLOW|O_DIRECTORY relative to the one before, and the last name
is used through the system calls that do not follow it either (open with O_NOFOLLOW, fstatat
with AT_SYMLINK_NOFOLLOW, unlinkat, renameat, mkdirat). A link anywhere on the way fails the
operation with LinkRefused. Nothing is checked apart from its use, so nothing can change between
a check and a use. Pipes, sockets and devices are opened with O_NONBLOCK and refused with
NotAFile: opening a pipe to write would otherwise wait for a reader forever.

Paths are API paths: names separated by "/", relative to the directory; "." and ".." are refused
(BadPath), so nothing is ever resolved upwards. Everything here is blocking system calls:
asynchronous callers run these functions in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# A directory on the way, usable only as a dir_fd. Without O_DIRECTORY: O_PATH|O_NOFOLLOW opens a
# link as itself, and fstat then tells a link from a file from what was opened, where an error
# (ENOTDIR for both with O_DIRECTORY) would need a second look that a racing kernel could change.
_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# A file or directory to read (a pipe opens at once with O_NONBLOCK, and is refused).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class LinkRefused(OSError):
    """A symbolic link where a file or directory was to be reached; `path` names the link."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, f"{path} is a symbolic link")
        self.path = path


class NotAFile(OSError):
    """A pipe, socket or device where a regular file was to be read or written."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is not a regular file")
        self.path = path


class BadPath(ValueError):
    """A path that names nothing below the directory: with "." or "..", or a NUL character."""


def split(path: str) -> tuple[str, ...]:
    """The names of an API path ("a/b/c", leading, trailing and double slashes ignored)."""
    names = tuple(name for name in path.split("/") if name)
    for name in names:
        if name in (".", ".."):
            msg = f"{path!r} has a {name!r} component; give the path from the root without it"
            raise BadPath(msg)
        if "\0" in name:
            msg = f"{path!r} has a NUL character"
            raise BadPath(msg)
    return names


def join(shown: str, *names: str) -> str:
    """How a path below a directory shown as `shown` is named in errors."""
    return "/".join(part for part in (shown, *names) if part)


def walk(dir_fd: int, names: Sequence[str], shown: str = "", *, create: int | None = None) -> int:
    """A new O_PATH descriptor of the directory `names` below `dir_fd`, opened one name at a time
    without following links; with `create`, missing directories are made with that mode. `shown`
    names `dir_fd` in errors."""
    fd = os.open(".", _STEP, dir_fd=dir_fd)
    for depth, name in enumerate(names, start=1):
        try:
            try:
                step = _open_dir(fd, name, _STEP, join(shown, *names[:depth]))
            except FileNotFoundError:
                if create is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create, dir_fd=fd)
                step = _open_dir(fd, name, _STEP, join(shown, *names[:depth]))
        finally:
            os.close(fd)
        fd = step
    return fd


def _open(dir_fd: int, name: str, flags: int, shown: str, mode: int = 0o666) -> int:
    """os.open of `name` in `dir_fd`, with O_NOFOLLOW among `flags`: ELOOP then means `name` is
    a link (LinkRefused), and ENXIO a pipe or socket opened to write, or a device (NotAFile)."""
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkRefused(shown) from e
        if e.errno == errno.ENXIO:
            raise NotAFile(shown) from e
        raise


def _open_dir(dir_fd: int, name: str, flags: int, shown: str) -> int:
    """The directory `name` in `dir_fd`, opened with `flags` (_STEP or _READ); LinkRefused or
    NotADirectoryError for anything else, as fstat sees what was opened."""
    fd = _open(dir_fd, name, flags, shown)
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        return fd
    os.close(fd)
    if stat.S_ISLNK(mode):  # opened as itself, with O_PATH
        raise LinkRefused(shown)
    raise NotADirectoryError(errno.ENOTDIR, f"{shown} is not a directory", shown)


def _regular(fd: int, shown: str) -> os.stat_result:
    """The status of an open file, which must be a regular file."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{shown} is a directory", shown)
    raise NotAFile(shown)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_CHUNK]) :]


def _copy_bytes(source: int, target: int) -> None:
    """Copy all of `source` (from its start) to `target` (at its offset)."""
    offset = 0
    while chunk := os.pread(source, _CHUNK, offset):
        _write_all(target, chunk)
        offset += len(chunk)


@dataclass(frozen=True)
class Entry:
    """A name in a directory, as lstat sees it."""

    name: str
    stat: os.stat_result
    # Whether this process may write it; never for a link.
    writable: bool

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.stat.st_mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.stat.st_mode)


def _entry(dir_fd: int, name: str) -> Entry:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    writable = not stat.S_ISLNK(st.st_mode) and os.access(
        name, os.W_OK, dir_fd=dir_fd, follow_symlinks=False
    )
    return Entry(name, st, writable)


def _listing(fd: int) -> list[Entry]:
    """The entries of the open directory `fd`; names that are not valid UTF-8 are left out."""
    with os.scandir(fd) as listing:
        found = [entry.name for entry in listing]
    entries = []
    for name in found:
        try:
            name.encode()
            entries.append(_entry(fd, name))
        except (UnicodeEncodeError, FileNotFoundError):
            continue
    return entries


@dataclass(frozen=True)
class Loaded:
    """A file or directory opened once: what it is, as fstat saw the open file, and its
    content (a regular file's bytes, or a directory's entries)."""

    entry: Entry
    data: bytes = b""
    listing: tuple[Entry, ...] = ()


class Beneath:
    """The files below the directory `root`, which is opened once, here, as given (links in its
    own path are the admin's and are followed); nothing below it follows a link."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    @contextlib.contextmanager
    def directory(self, path: str) -> Iterator[int]:
        """An O_PATH descriptor of the directory `path`."""
        fd = walk(self.fd, split(path))
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        """The directory holding `path` (an O_PATH descriptor) and the last name of `path`."""
        names = split(path)
        if not names:
            msg = "the root directory has no parent here"
            raise BadPath(msg)
        fd = walk(self.fd, names[:-1])
        try:
            yield fd, names[-1]
        finally:
            os.close(fd)

    def entry(self, path: str) -> Entry:
        """`path` itself, a link not followed."""
        if not split(path):
            st = os.fstat(self.fd)
            return Entry("", st, os.access(".", os.W_OK, dir_fd=self.fd))
        with self.parent(path) as (fd, name):
            return _entry(fd, name)

    def _open_to_list(self, path: str) -> int:
        names = split(path)
        with self.directory("/".join(names[:-1])) as parent:
            return _open_dir(parent, names[-1] if names else ".", _READ, path)

    def listdir(self, path: str) -> list[Entry]:
        """What the directory `path` holds; names that are not valid UTF-8 are left out."""
        fd = self._open_to_list(path)
        try:
            return _listing(fd)
        finally:
            os.close(fd)

    def load(self, path: str) -> Loaded:
        """`path` opened once (never through a link): a regular file's content or a directory's
        entries, and what it is as the open file is."""
        names = split(path)
        with self.directory("/".join(names[:-1])) as parent:
            name = names[-1] if names else "."
            fd = _open(parent, name, _READ, path)
            try:
                st = os.fstat(fd)
                writable = os.access(name, os.W_OK, dir_fd=parent, follow_symlinks=False)
                entry = Entry(name if names else "", st, writable)
                if stat.S_ISDIR(st.st_mode):
                    return Loaded(entry, listing=tuple(_listing(fd)))
                if not stat.S_ISREG(st.st_mode):
                    raise NotAFile(path)
                return Loaded(entry, data=_read_all(fd))
            finally:
                os.close(fd)

    def read(self, path: str) -> bytes:
        """The content of the regular file `path`."""
        with self.parent(path) as (parent, name):
            fd = _open(parent, name, _READ, path)
        try:
            _regular(fd, path)
            return _read_all(fd)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes, *, backup: bool = True) -> None:
        """Replace the content of the regular file `path` with `data`, or create it.

        An existing file is written in place, as jupyter_server does, so it keeps its owner,
        mode and links. With `backup`, its old content is first copied to `.~<name>` beside it
        (jupyter_server's name, which its notebook reader recovers from) and put back if the
        write fails; without the permission to make that copy, the file is written without it."""
        with self.parent(path) as (parent, name):
            fd, existed = _open_to_write(parent, name, path)
            try:
                saved = _backup(fd, parent, name) if backup and existed else None
                try:
                    os.ftruncate(fd, 0)
                    _write_all(fd, data)
                    os.fsync(fd)
                except BaseException:
                    if saved is not None:
                        _put_back(saved, fd, parent)
                    raise
                if saved is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(saved, dir_fd=parent)
            finally:
                os.close(fd)

    def append(self, path: str, data: bytes) -> None:
        """Add `data` at the end of the regular file `path`, made if missing."""
        with self.parent(path) as (parent, name):
            fd = _open(parent, name, _WRITE | os.O_APPEND | os.O_CREAT, path)
        try:
            _regular(fd, path)
            _write_all(fd, data)
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> bool:
        """Make the directory `path`; False if it is one already, FileExistsError if something
        else has its name."""
        with self.parent(path) as (parent, name):
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise LinkRefused(path) from None
                if not stat.S_ISDIR(mode):
                    msg = f"{path} exists and is not a directory"
                    raise FileExistsError(errno.EEXIST, msg, path) from None
                return False
            return True

    def makedirs(self, path: str) -> None:
        """Make the directory `path` and those above it that are missing."""
        os.close(walk(self.fd, split(path), create=0o777))

    def rename(self, old: str, new: str) -> None:
        """Move `old` to `new`, which must not exist; a link is moved as itself. Across file
        systems the move is a copy and a removal (of regular files and directories only)."""
        with self.parent(old) as (old_parent, old_name), self.parent(new) as (new_parent, name):
            try:
                there = os.stat(name, dir_fd=new_parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                here = os.stat(old_name, dir_fd=old_parent, follow_symlinks=False)
                if (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
                    raise FileExistsError(errno.EEXIST, f"{new} exists", new)
            try:
                os.rename(old_name, name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                _copy_entry(old_parent, old_name, new_parent, name, old)
                _remove(old_parent, old_name)

    def remove(self, path: str) -> None:
        """Remove `path`: a file or link itself, a directory with everything in it."""
        with self.parent(path) as (parent, name):
            _remove(parent, name)

    def copy_file(self, source: str, target: str) -> os.stat_result:
        """Copy the regular file `source` over `target` (written in place if it exists, else
        made), with its modification time and its permission bits, but never a setuid, setgid
        or sticky bit; returns the status of `target`."""
        with self.parent(source) as (parent, name):
            fd = _open(parent, name, _READ, source)
        try:
            st = _regular(fd, source)
            with self.parent(target) as (parent, name):
                out, _ = _open_to_write(parent, name, target)
            try:
                os.ftruncate(out, 0)
                _copy_bytes(fd, out)
                _copy_metadata(st, out)
                return os.fstat(out)
            finally:
                os.close(out)
        finally:
            os.close(fd)

    def copy_tree(self, source: str, target: str) -> None:
        """Copy the directory `source` to `target`, which must not exist: directories and
        regular files only. A link (LinkRefused) or a pipe, socket or device (NotAFile) inside
        stops the copy, and what was copied is removed."""
        with self.parent(source) as (source_parent, name), self.parent(target) as (parent, new):
            os.mkdir(new, 0o777, dir_fd=parent)
            try:
                _copy_directory(source_parent, name, parent, new, source)
            except BaseException:
                _remove(parent, new)
                raise

    def tree_size(self, path: str) -> int:
        """The bytes in the regular files below the directory `path`; LinkRefused for a link
        inside."""
        fd = self._open_to_list(path)
        try:
            return _tree_size(fd, path)
        finally:
            os.close(fd)

    def mount_top(self, path: str) -> tuple[str, int] | None:
        """The topmost directory on the way to `path`, below the root, on the same file system
        as `path` (its path and a new O_PATH descriptor); None if that is the root's own file
        system, whose top is the root or above it."""
        names = split(path)
        device = self.entry(path).stat.st_dev
        fds = [os.open(".", _STEP, dir_fd=self.fd)]
        try:
            for depth, name in enumerate(names[:-1], start=1):
                fds.append(_open_dir(fds[-1], name, _STEP, "/".join(names[:depth])))
            top = len(fds)
            while top > 0 and os.fstat(fds[top - 1]).st_dev == device:
                top -= 1
            if top == 0:
                return None
            if top == len(fds):  # `path` is the top of a file system of its own
                msg = f"{path} is the top of a file system"
                raise OSError(errno.EBUSY, msg, path)
            return "/".join(names[:top]), fds.pop(top)
        finally:
            for fd in fds:
                os.close(fd)

    def recover(self, path: str) -> bool:
        """jupyter_server's recovery of a notebook whose write failed half way: if `.~<name>`
        (the copy `write` makes) is there, move `path` aside to `<name>.invalid` and the copy
        into its place. False if there is no copy."""
        with self.parent(path) as (parent, name):
            try:
                copy = os.stat(f".~{name}", dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(copy.st_mode):
                return False
            os.rename(name, f"{name}.invalid", src_dir_fd=parent, dst_dir_fd=parent)
            os.rename(f".~{name}", name, src_dir_fd=parent, dst_dir_fd=parent)
            return True


def _open_to_write(parent: int, name: str, shown: str) -> tuple[int, bool]:
    """The regular file `name` open to write, made if missing; and whether it existed."""
    for _ in range(3):
        try:
            fd = _open(parent, name, _WRITE, shown)
            existed = True
        except FileNotFoundError:
            try:
                fd = _open(parent, name, _WRITE | os.O_CREAT | os.O_EXCL, shown)
                existed = False
            except FileExistsError:
                continue  # made meanwhile: open it as an existing file
        try:
            _regular(fd, shown)
        except OSError:
            os.close(fd)
            raise
        return fd, existed
    raise FileExistsError(errno.EEXIST, f"{shown} keeps appearing and disappearing", shown)


def _backup(fd: int, parent: int, name: str) -> str | None:
    """Copy what `fd` holds to `.~<name>` in `parent`; its name, or None if it cannot be made."""
    if os.fstat(fd).st_size == 0:
        return None
    saved = f".~{name}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(saved, dir_fd=parent)
        out = os.open(saved, _WRITE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent)
    except OSError:
        return None
    try:
        _copy_bytes(fd, out)
    except OSError:
        os.close(out)
        os.unlink(saved, dir_fd=parent)
        return None
    os.close(out)
    return saved


def _put_back(saved: str, fd: int, parent: int) -> None:
    """Write the copy `saved` back into `fd` and remove it; keep it if that fails too."""
    try:
        copy = os.open(saved, _READ, dir_fd=parent)
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            _copy_bytes(copy, fd)
        finally:
            os.close(copy)
        os.unlink(saved, dir_fd=parent)
    except OSError:
        pass


def _copy_metadata(source: os.stat_result, fd: int) -> None:
    """What shutil.copystat copies, minus privileges: permission bits without setuid, setgid
    and sticky, and the access and modification times. Not being allowed is no error."""
    with contextlib.suppress(OSError):
        os.fchmod(fd, stat.S_IMODE(source.st_mode) & 0o777)
    with contextlib.suppress(OSError):
        os.utime(fd, ns=(source.st_atime_ns, source.st_mtime_ns))


def _remove(parent: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except IsADirectoryError:
        pass
    except OSError as e:
        if e.errno != errno.EPERM:  # EPERM: unlink of a directory on some file systems
            raise
    else:
        return
    try:
        fd = _open_dir(parent, name, _READ, name)
    except (NotADirectoryError, LinkRefused):  # replaced by a file or a link meanwhile
        os.unlink(name, dir_fd=parent)
        return
    try:
        with os.scandir(fd) as listing:
            names = [entry.name for entry in listing]
        for child in names:
            with contextlib.suppress(FileNotFoundError):
                _remove(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _copy_entry(parent: int, name: str, target_parent: int, target: str, shown: str) -> None:
    mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(target, 0o777, dir_fd=target_parent)
        try:
            _copy_directory(parent, name, target_parent, target, shown)
        except BaseException:
            _remove(target_parent, target)
            raise
    else:
        _copy_new_file(parent, name, target_parent, target, shown)


def _copy_new_file(parent: int, name: str, target_parent: int, target: str, shown: str) -> None:
    fd = _open(parent, name, _READ, shown)
    try:
        st = _regular(fd, shown)
        out = os.open(target, _WRITE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=target_parent)
        try:
            _copy_bytes(fd, out)
            _copy_metadata(st, out)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _copy_directory(parent: int, name: str, target_parent: int, target: str, shown: str) -> None:
    """Copy what the directory `name` holds into the new directory `target`."""
    fd = _open_dir(parent, name, _READ, shown)
    try:
        out = _open_dir(target_parent, target, _STEP, target)
        try:
            with os.scandir(fd) as listing:
                names = [entry.name for entry in listing]
            for child in names:
                child_shown = join(shown, child)
                mode = os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise LinkRefused(child_shown)
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise NotAFile(child_shown)
                _copy_entry(fd, child, out, child, child_shown)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _tree_size(fd: int, shown: str) -> int:
    size = 0
    with os.scandir(fd) as listing:
        entries = [(entry.name, entry.stat(follow_symlinks=False)) for entry in listing]
    for name, st in entries:
        if stat.S_ISLNK(st.st_mode):
            raise LinkRefused(join(shown, name))
        if stat.S_ISREG(st.st_mode):
            size += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            child = _open_dir(fd, name, _READ, join(shown, name))
            try:
                size += _tree_size(child, join(shown, name))
            finally:
                os.close(child)
    return size
