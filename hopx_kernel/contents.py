"""The server's file operations, following no symbolic link: `HopxContentsManager`.

jupyter_server's file contents manager and checkpoints follow symbolic links wherever they
point. In a notebook folder a sandboxed kernel can write (workspace = "rw"), the kernel can make
.ipynb_checkpoints a link to /etc/cron.d, and the next checkpoint of a root server is a root-owned
file there with the kernel's content; a link to a file elsewhere is read back into the folder by
a copy or a checkpoint restore, written over by a save, moved by a rename or a delete.

HopxContentsManager is jupyter_server's AsyncLargeFileManager (what JupyterLab uses, chunked
uploads included) with every file operation done through `nofollow.Beneath`: save, upload,
checkpoints, rename, copy, delete (to the trash through `trash.move_to_trash`), download
(/api/contents and /files/), trust and listing. **No symbolic link below the server's root is
followed, by any operation, wherever it points**: a link the user made cannot be told apart
from one a kernel made, and a link to another file of the root reads or writes outside the
folder as much as one to /etc does. A link is listed as an entry of its own (a file, not
writable) and can be renamed or deleted, as itself; opening, saving, copying, trusting or
listing through it answers 403 with a message naming it. Pipes, sockets and devices answer 400
instead of holding a server thread. A checkpoint never carries a setuid or setgid bit.

The hopx_kernel server extension installs it (`install`) unless the admin chose a contents
manager, and lockdown refuses to start with a contents manager that follows links.
"""

# jupyter_server's contents API, which these classes extend and call, is not annotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
import mimetypes
import os
from base64 import decodebytes, encodebytes
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import nbformat
from anyio.to_thread import run_sync
from jupyter_server import _tz as tz
from jupyter_server.auth.decorator import authorized
from jupyter_server.files.handlers import FilesHandler
from jupyter_server.services.contents.filecheckpoints import AsyncFileCheckpoints
from jupyter_server.services.contents.filemanager import FileContentsManager
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.utils import to_api_path
from tornado import web
from tornado.web import HTTPError
from traitlets import default

from hopx_kernel.nofollow import BadPath, Beneath, Entry, LinkRefused, Loaded, NotAFile, split
from hopx_kernel.trash import move_to_trash

CLASS_NAME = "hopx_kernel.contents.HopxContentsManager"
CHECKPOINT_ID = "checkpoint"


def link_message(link: str) -> str:
    return (
        f"{link} is a symbolic link. This server follows no symbolic link in its folders: a "
        "sandboxed kernel that can write a folder could have made it, to reach files outside. "
        "Use the file or folder it points to by its own path, or replace the link with a copy."
    )


@contextlib.contextmanager
def http_errors(path: str, what: str = "") -> Iterator[None]:
    """Turn the errors of a file operation on `path` into jupyter_server's HTTP errors, with
    messages that say what was wrong: 403 for a link or a denied permission, 400 for a pipe, 404
    for a missing file or a path that leads nowhere below the root (as jupyter_server answers
    one that leads outside it), 409 for an existing one."""
    try:
        yield
    except HTTPError:
        raise
    except LinkRefused as e:
        raise HTTPError(403, link_message(e.path)) from e
    except NotAFile as e:
        msg = f"{e.path} is not a regular file (a pipe, socket or device); it is not opened"
        raise HTTPError(400, msg) from e
    except BadPath as e:
        raise HTTPError(404, str(e)) from e
    except (FileNotFoundError, NotADirectoryError) as e:
        raise HTTPError(404, f"No such file or directory: {path}") from e
    except FileExistsError as e:
        raise HTTPError(409, f"File already exists: {e.filename or path}") from e
    except IsADirectoryError as e:
        raise HTTPError(400, f"{path} is a directory") from e
    except PermissionError as e:
        raise HTTPError(403, f"Permission denied: {path}") from e
    except OSError as e:
        msg = f"Unexpected error {what or 'with'} {path}: {e.strerror or e}"
        raise HTTPError(500, msg) from e


class HopxFilesHandler(FilesHandler):
    """/files/ served from the contents manager's get(), as jupyter_server does for contents
    managers without local files, instead of tornado's StaticFileHandler, which opens the path
    it resolved a moment before (a race a kernel can win). jupyter_server's handler answers
    HEAD with an error; this one does not."""

    # tornado's decorators widen the return type, as on jupyter_server's own FilesHandler.head.
    @web.authenticated
    @authorized
    async def head(self, path: str) -> None:  # type: ignore[override]
        response = self.get(path, include_body=False)
        if response is not None:
            await response

    def compute_etag(self) -> str | None:
        # StaticFileHandler's would stat a path this handler never resolves.
        return None


def _utc(timestamp: float) -> datetime:
    try:
        return tz.utcfromtimestamp(timestamp)
    except (ValueError, OverflowError, OSError):
        return tz.utcfromtimestamp(0)


def _created(st: os.stat_result) -> float:
    birth = getattr(st, "st_birthtime", None)
    return birth if isinstance(birth, (int, float)) and birth >= 0 else st.st_ctime


class HopxContentsManager(AsyncLargeFileManager):
    """jupyter_server's AsyncLargeFileManager following no symbolic link below root_dir.

    root_dir itself is opened once, as configured (a link in its own path is the admin's
    choice), and held open: every path is reached from it one name at a time."""

    _beneath: Beneath | None = None

    @default("checkpoints_class")
    def _checkpoints_class_default(self) -> type:
        return HopxCheckpoints

    @default("files_handler_class")
    def _files_handler_class_default(self) -> type:
        return HopxFilesHandler

    @default("files_handler_params")
    def _files_handler_params_default(self) -> dict[str, Any]:
        return {"path": self.root_dir}

    @property
    def beneath(self) -> Beneath:
        """The root directory, held open."""
        if self._beneath is None or self._beneath.root != os.path.abspath(self.root_dir):
            self._beneath = Beneath(self.root_dir)
        return self._beneath

    async def _run(self, path: str, function: Any, *args: Any, what: str = "") -> Any:
        """`function(*args)` in a worker thread, its errors as HTTP errors about `path`."""
        with http_errors(path, what):
            return await run_sync(function, *args)

    # --- Questions about paths; none follows a link ---------------------------------------

    def _hidden(self, path: str) -> bool:
        """Whether a name of `path` starts with a dot; a bad path answers 404 first."""
        with http_errors(path):
            return any(name.startswith(".") for name in split(path))

    def _lstat(self, path: str) -> Entry | None:
        """`path` as lstat sees it; None if missing. A link on the way answers 403."""
        with http_errors(path):
            try:
                return self.beneath.entry(path)
            except (FileNotFoundError, NotADirectoryError):
                return None

    def _not_a_link(self, path: str, entry: Entry | None) -> Entry | None:
        if entry is not None and entry.is_link:
            raise HTTPError(403, link_message(path))
        return entry

    async def is_hidden(self, path: str) -> bool:
        return self._hidden(path.strip("/"))

    def is_writable(self, path: str) -> bool:
        entry = self._lstat(path.strip("/"))
        return entry is not None and entry.writable

    async def exists(self, path: str) -> bool:
        """Whether anything, a link included, has this name."""
        return self._lstat(path.strip("/")) is not None

    async def file_exists(self, path: str) -> bool:
        """Whether `path` is a regular file; 403 if it is a link."""
        path = path.strip("/")
        entry = self._not_a_link(path, self._lstat(path))
        return entry is not None and entry.is_file

    async def dir_exists(self, path: str) -> bool:
        """Whether `path` is a directory; 403 if it is a link."""
        path = path.strip("/")
        entry = self._not_a_link(path, self._lstat(path))
        return entry is not None and entry.is_dir

    # FileContentsManager's is synchronous, AsyncContentsManager's a coroutine; the handler
    # takes either.
    async def resolve_path(self, path: str) -> str | None:  # type: ignore[override]
        """The API path of the server path `path`, if something is there (not following links)."""
        expanded = os.path.expanduser(path)
        if os.path.isabs(expanded):
            root = os.path.abspath(self.root_dir)
            absolute = os.path.abspath(expanded)
            if os.path.commonpath([root, absolute]) != root:
                return None
            path = absolute
        relative = to_api_path(path, self.root_dir)
        try:
            return relative if self._lstat(relative) is not None else None
        except HTTPError:
            return None

    # --- Reading ----------------------------------------------------------------------------

    def _model(self, path: str, entry: Entry, kind: str) -> dict[str, Any]:
        st = entry.stat
        regular = entry.is_file and kind != "directory"
        return {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "last_modified": _utc(st.st_mtime),
            "created": _utc(_created(st)),
            "content": None,
            "format": None,
            "mimetype": mimetypes.guess_type(path)[0] if regular and kind == "file" else None,
            "size": st.st_size if regular else None,
            "writable": entry.writable,
            "hash": None,
            "hash_algorithm": None,
            "type": kind,
        }

    def _kind(self, path: str, entry: Entry) -> str:
        if entry.is_dir:
            return "directory"
        if entry.is_file and path.endswith(".ipynb"):
            return "notebook"
        return "file"  # a link too: it is not followed to see what it is

    async def get(
        self,
        path: str,
        content: bool = True,
        type: str | None = None,
        format: str | None = None,
        require_hash: bool = False,
    ) -> dict[str, Any]:
        """The model of `path`. With content, the file or directory is opened once, and what it
        is, is what was opened: a kernel swapping it for a link meanwhile gets a 403."""
        path = path.strip("/")
        missing = f"file or directory does not exist: {path!r}"
        if not self.allow_hidden and self._hidden(path):
            raise HTTPError(404, missing)
        loaded = None
        if content or require_hash:
            loaded = await self._load(path)
            entry: Entry | None = loaded.entry
        else:
            entry = self._lstat(path)
        if entry is None:
            raise HTTPError(404, missing)
        if entry.is_dir:
            if type not in (None, "directory"):
                raise HTTPError(400, f"{path} is a directory, not a {type}", reason="bad type")
            model = self._directory(path, entry, loaded if content else None)
        elif type == "notebook" or (type is None and path.endswith(".ipynb")):
            model = await self._notebook(path, entry, loaded, content, require_hash)
        else:
            if type == "directory":
                raise HTTPError(400, f"{path} is not a directory", reason="bad type")
            model = self._file(
                path, entry, loaded, content, format=format, require_hash=require_hash
            )
        self.emit(data={"action": "get", "path": path})
        return model

    async def _load(self, path: str) -> Loaded:
        loaded: Loaded = await self._run(path, self.beneath.load, path, what="reading")
        return loaded

    def _directory(self, path: str, entry: Entry, loaded: Loaded | None) -> dict[str, Any]:
        model = self._model(path, entry, "directory")
        if loaded is not None:
            listing = []
            for child in sorted(loaded.listing, key=lambda e: e.name):
                if not (child.is_dir or child.is_file or child.is_link):
                    continue  # pipes, sockets, devices, as jupyter_server does
                if not self.should_list(child.name):
                    continue
                if not self.allow_hidden and child.name.startswith("."):
                    continue
                child_path = f"{path}/{child.name}" if path else child.name
                listing.append(self._model(child_path, child, self._kind(child_path, child)))
            model["content"] = listing
            model["format"] = "json"
        return model

    def _file(
        self,
        path: str,
        entry: Entry,
        loaded: Loaded | None,
        content: bool,
        *,
        format: str | None,
        require_hash: bool,
    ) -> dict[str, Any]:
        model = self._model(path, entry, "file")
        data = loaded.data if loaded is not None else b""
        if content:
            if format in (None, "text"):
                try:
                    model.update(content=data.decode("utf-8"), format="text")
                except UnicodeDecodeError as e:
                    if format == "text":
                        msg = f"{path} is not UTF-8 encoded"
                        raise HTTPError(400, msg, reason="bad format") from e
            if model["format"] is None:
                model.update(content=encodebytes(data).decode("ascii"), format="base64")
            if model["mimetype"] is None:
                default_mime = {"text": "text/plain", "base64": "application/octet-stream"}
                model["mimetype"] = default_mime[model["format"]]
        if require_hash:
            model.update(self._get_hash(data))
        return model

    async def _notebook(
        self, path: str, entry: Entry, loaded: Loaded | None, content: bool, require_hash: bool
    ) -> dict[str, Any]:
        model = self._model(path, entry, "notebook")
        data = loaded.data if loaded is not None else b""
        if content:
            validation_error: dict[str, Any] = {}
            nb = await self._parse_notebook(path, data, validation_error)
            self.mark_trusted_cells(nb, path)
            model.update(content=nb, format="json")
            self.validate_notebook_model(model, validation_error)
        if require_hash:
            model.update(self._get_hash(data))
        return model

    async def _parse_notebook(
        self, path: str, data: bytes, validation_error: dict[str, Any]
    ) -> Any:
        try:
            return nbformat.reads(
                data.decode("utf-8"), as_version=4, capture_validation_error=validation_error
            )
        except Exception as e:
            # A write that failed half way left its copy beside it (as jupyter_server does).
            if self.use_atomic_writing and await self._run(path, self.beneath.recover, path):
                data = await self._run(path, self.beneath.read, path, what="reading")
                return await self._parse_notebook(path, data, validation_error)
            raise HTTPError(400, f"Unreadable Notebook: {path} {e!r}") from e

    # --- Writing ----------------------------------------------------------------------------

    def _decode(self, path: str, content: Any, format: str | None) -> bytes:
        if format not in ("text", "base64"):
            raise HTTPError(400, "Must specify format of file contents as 'text' or 'base64'")
        try:
            if format == "text":
                return bytes(content.encode("utf8"))
            return decodebytes(content.encode("ascii"))
        except Exception as e:
            raise HTTPError(400, f"Encoding error saving {path}: {e}") from e

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        """Save a notebook, file or directory; a chunk of an upload (LargeFileManager's
        protocol: chunk 1 starts the file, later ones are appended, -1 is the last)."""
        path = path.strip("/")
        chunk = model.get("chunk")
        if chunk is None or chunk == 1:
            self.run_pre_save_hooks(model=model, path=path)
        if "type" not in model:
            raise HTTPError(400, "No file type provided")
        if chunk is not None and model["type"] != "file":
            msg = f'File type "{model["type"]}" is not supported for large file transfer'
            raise HTTPError(400, msg)
        if "content" not in model and model["type"] != "directory":
            raise HTTPError(400, "No file content provided")
        if not self.allow_hidden and self._hidden(path):
            raise HTTPError(400, f"Cannot create file or directory {path!r}")
        self.log.debug("Saving %s", path)

        validation_error: dict[str, Any] = {}
        await self._save_content(path, model, validation_error)
        message = None
        if model["type"] == "notebook":
            self.validate_notebook_model(model, validation_error=validation_error)
            message = model.get("message")
        saved = await self.get(path, content=False)
        if message:
            saved["message"] = message
        if chunk is None or chunk == -1:
            self.run_post_save_hooks(model=saved, os_path=self._get_os_path(path))
        self.emit(data={"action": "save", "path": path})
        return saved

    async def _save_content(
        self, path: str, model: dict[str, Any], validation_error: dict[str, Any]
    ) -> None:
        chunk = model.get("chunk")
        if model["type"] == "notebook":
            nb = nbformat.from_dict(model["content"])
            self.check_and_sign(nb, path)
            text = nbformat.writes(
                nb, version=nbformat.NO_CONVERT, capture_validation_error=validation_error
            )
            data = (text if text.endswith("\n") else f"{text}\n").encode("utf-8")
            await self._run(path, self._write, path, data, what="saving")
            await self._first_checkpoint(path)
        elif model["type"] == "file":
            data = self._decode(path, model["content"], model.get("format"))
            if chunk is not None and chunk != 1:
                await self._run(path, self.beneath.append, path, data, what="saving")
            else:
                await self._run(path, self._write, path, data, what="saving")
        elif model["type"] == "directory":
            await self._run(path, self.beneath.mkdir, path, what="creating")
        else:
            raise HTTPError(400, f"Unhandled contents type: {model['type']}")

    def _write(self, path: str, data: bytes) -> None:
        self.beneath.write(path, data, backup=self.use_atomic_writing)

    async def _first_checkpoint(self, path: str) -> None:
        """A notebook has a checkpoint from its first save on, as jupyter_server makes sure. The
        save itself succeeded: if the checkpoint cannot be made, that is logged, and the
        client's own checkpoint request (JupyterLab makes one) gets the error."""
        try:
            if not await self.checkpoints.list_checkpoints(path):
                await self.create_checkpoint(path)
        except HTTPError as e:
            self.log.warning("Hopx: no checkpoint of %s: %s", path, e.log_message)

    # --- Delete, rename, copy ---------------------------------------------------------------

    async def delete_file(self, path: str) -> None:
        path = path.strip("/")
        if not self.allow_hidden and self._hidden(path):
            raise HTTPError(400, f"Cannot delete file or directory {path!r}")
        entry = self._lstat(path)
        if entry is None:
            raise HTTPError(404, f"File or directory does not exist: {path}")
        if self.delete_to_trash:
            if not entry.writable and not entry.is_link:
                raise HTTPError(403, f"Permission denied: {path}")
            self.log.debug("Sending %s to trash", path)
            with http_errors(path):
                try:
                    await run_sync(move_to_trash, self.beneath, path)
                except (LinkRefused, BadPath, PermissionError):
                    raise
                except OSError as e:
                    msg = (
                        f"{path} could not be moved to the trash: {e.strerror or e}; with "
                        "FileContentsManager.delete_to_trash = False it is deleted for good"
                    )
                    raise HTTPError(400, msg) from e
            return
        if entry.is_dir and not self.always_delete_dir:
            entries = await self._run(path, self.beneath.listdir, path)
            # A folder holding only its checkpoints counts as empty, as in jupyter_server.
            checkpoint_dir = getattr(self.checkpoints, "checkpoint_dir", None)
            if {e.name for e in entries} - {checkpoint_dir}:
                raise HTTPError(400, f"Directory {path} not empty")
        await self._run(path, self.beneath.remove, path, what="deleting")

    async def rename_file(self, old_path: str, new_path: str) -> None:
        old_path, new_path = old_path.strip("/"), new_path.strip("/")
        if new_path == old_path:
            return
        if not self.allow_hidden and (self._hidden(old_path) or self._hidden(new_path)):
            raise HTTPError(400, f"Cannot rename file or directory {old_path!r}")
        with http_errors(old_path, "renaming"):
            try:
                await run_sync(self.beneath.rename, old_path, new_path)
            except FileExistsError as e:
                raise HTTPError(409, f"File already exists: {new_path}") from e
            except FileNotFoundError as e:
                raise HTTPError(404, f"File or directory does not exist: {old_path}") from e

    async def rename(self, old_path: str, new_path: str) -> None:
        """Rename a file and its checkpoints; the file renamed, a checkpoint that cannot follow
        it (its new checkpoint folder is a link) is left where it was, with a warning."""
        await self.rename_file(old_path, new_path)
        try:
            await self.checkpoints.rename_all_checkpoints(old_path, new_path)
        except HTTPError as e:
            self.log.warning("Hopx: checkpoints of %s not moved: %s", old_path, e.log_message)
        self.emit(data={"action": "rename", "path": new_path, "source_path": old_path})

    async def check_folder_size(self, path: str) -> None:
        limit = self.max_copy_folder_size_mb * 1024 * 1024
        size = await self._run(path, self.beneath.tree_size, path.strip("/"))
        if size > limit:
            msg = (
                f"Can't copy folders larger than {self.max_copy_folder_size_mb}MB, "
                f'"{path}" is {await self._human_readable_size(size)}'
            )
            raise HTTPError(400, msg)

    async def _copy_dir(
        self, from_path: str, to_path_original: str, to_name: str, to_path: str
    ) -> dict[str, Any]:
        source, target = from_path.strip("/"), to_path.strip("/")
        with http_errors(source, "copying"):
            try:
                # Into a folder made for it if missing, as shutil.copytree does.
                await run_sync(self.beneath.makedirs, target.rpartition("/")[0])
                await run_sync(self.beneath.copy_tree, source, target)
            except (LinkRefused, NotAFile, BadPath):
                raise
            except OSError as e:
                msg = f"Can't copy '{source}' into '{target}': {e.strerror or e}"
                raise HTTPError(400, msg) from e
        model: dict[str, Any] = await self.get(target, content=False)
        return model


class HopxCheckpoints(AsyncFileCheckpoints):
    """jupyter_server's file checkpoints (`<folder>/.ipynb_checkpoints/<name>-checkpoint<ext>`),
    following no symbolic link, the checkpoint folder included. A checkpoint is a copy with the
    file's permission bits but never a setuid or setgid bit (a root server's copy of a setuid
    program would be a setuid root one). jupyter_server's fallback to a folder in /tmp when the
    notebook's folder is not writable is not kept: such a checkpoint is refused (403)."""

    _beneath: Beneath | None = None

    @property
    def beneath(self) -> Beneath:
        parent = self.parent
        if isinstance(parent, HopxContentsManager):
            return parent.beneath
        if self._beneath is None or self._beneath.root != os.path.abspath(self.root_dir):
            self._beneath = Beneath(self.root_dir)
        return self._beneath

    def _location(self, checkpoint_id: str, path: str) -> tuple[str, str]:
        """The checkpoint folder of `path` and the checkpoint's path (API paths)."""
        names = split(path)
        if not names:
            raise HTTPError(400, "The root directory has no checkpoints")
        base, ext = os.path.splitext(names[-1])
        folder = "/".join([*names[:-1], *split(self.checkpoint_dir)])
        return folder, f"{folder}/{base}-{checkpoint_id}{ext}"

    def checkpoint_path(self, checkpoint_id: str, path: str) -> str:
        """Where the checkpoint is on the server (jupyter_server's API; nothing is made)."""
        _, checkpoint = self._location(checkpoint_id, path.strip("/"))
        return os.path.join(self.root_dir, *split(checkpoint))

    def _checkpoint(self, path: str, checkpoint: str) -> Entry | None:
        """The checkpoint file, None if there is none; 403 if its folder or itself is a link."""
        with http_errors(path):
            try:
                entry = self.beneath.entry(checkpoint)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if entry.is_link:
                raise LinkRefused(checkpoint)
            return entry if entry.is_file else None

    @staticmethod
    def _model(checkpoint_id: str, st: os.stat_result) -> dict[str, Any]:
        return {"id": checkpoint_id, "last_modified": _utc(st.st_mtime)}

    async def create_checkpoint(self, contents_mgr: Any, path: str) -> dict[str, Any]:
        path = path.strip("/")
        folder, checkpoint = self._location(CHECKPOINT_ID, path)
        with http_errors(path, "checkpointing"):
            await run_sync(self.beneath.makedirs, folder)
            st = await run_sync(self.beneath.copy_file, path, checkpoint)
        return self._model(CHECKPOINT_ID, st)

    async def restore_checkpoint(self, contents_mgr: Any, checkpoint_id: str, path: str) -> None:
        path = path.strip("/")
        _, checkpoint = self._location(checkpoint_id, path)
        if self._checkpoint(path, checkpoint) is None:
            self.no_such_checkpoint(path, checkpoint_id)
        with http_errors(path, "restoring"):
            await run_sync(self.beneath.copy_file, checkpoint, path)

    async def rename_checkpoint(self, checkpoint_id: str, old_path: str, new_path: str) -> None:
        old_path, new_path = old_path.strip("/"), new_path.strip("/")
        _, old = self._location(checkpoint_id, old_path)
        folder, new = self._location(checkpoint_id, new_path)
        if self._checkpoint(old_path, old) is None:
            return
        self.log.debug("Renaming checkpoint %s -> %s", old, new)
        with http_errors(old_path, "renaming the checkpoint of"):
            await run_sync(self.beneath.makedirs, folder)
            with contextlib.suppress(FileNotFoundError):
                await run_sync(self.beneath.remove, new)
            await run_sync(self.beneath.rename, old, new)

    async def delete_checkpoint(self, checkpoint_id: str, path: str) -> None:
        path = path.strip("/")
        _, checkpoint = self._location(checkpoint_id, path)
        if self._checkpoint(path, checkpoint) is None:
            self.no_such_checkpoint(path, checkpoint_id)
        with http_errors(path, "deleting the checkpoint of"):
            await run_sync(self.beneath.remove, checkpoint)

    async def list_checkpoints(self, path: str) -> list[dict[str, Any]]:
        """The file's checkpoint, if it has one. A checkpoint folder that is a link has none
        (a warning is logged; making or restoring one answers 403)."""
        path = path.strip("/")
        _, checkpoint = self._location(CHECKPOINT_ID, path)
        try:
            entry = self._checkpoint(path, checkpoint)
        except HTTPError as e:
            if e.status_code != 403:
                raise
            self.log.warning("Hopx: checkpoints of %s not listed: %s", path, e.log_message)
            return []
        return [] if entry is None else [self._model(CHECKPOINT_ID, entry.stat)]


def follows_links(manager_class: type) -> bool:
    """Whether a contents manager class is one of jupyter_server's file managers (or built on
    one) that follow symbolic links."""
    return issubclass(manager_class, FileContentsManager) and not issubclass(
        manager_class, HopxContentsManager
    )


def install(serverapp: Any) -> None:
    """Make the server use HopxContentsManager, unless the admin chose a contents manager class
    (ServerApp.contents_manager_class): then warn if that one follows links. Called while
    jupyter_server links its extensions, before it makes its contents manager."""
    chosen = serverapp.contents_manager_class
    if issubclass(chosen, HopxContentsManager):
        return
    if "contents_manager_class" in serverapp.config.get("ServerApp", {}):
        if follows_links(chosen):
            serverapp.log.warning(
                "Hopx: ServerApp.contents_manager_class is %s.%s, which follows symbolic links: "
                "in a folder a sandboxed kernel can write (workspace 'rw') it reads and writes "
                "wherever a link the kernel made points. Use %s, or leave the setting unset.",
                chosen.__module__,
                chosen.__qualname__,
                CLASS_NAME,
            )
        return
    serverapp.contents_manager_class = HopxContentsManager
    serverapp.log.info("Hopx: files are served by %s, which follows no symbolic link", CLASS_NAME)
