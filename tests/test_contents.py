"""The Jupyter server's file operations in a folder a sandbox can write follow no symbolic link.

A Hopx kernel with workspace "rw" plants the links, from inside its sandbox, in the notebook folder
of a real jupyter_server (as root, as the tests run); the test then drives every contents
operation over the REST API: save, checkpoints (create, restore, through a rename), rename, copy,
delete (to the trash and for good), upload (whole and chunked), download (/api/contents and
/files/), trust and listing. Each link points at a directory standing in for /etc/cron.d, outside
the server's root, or at a private folder inside the root but outside the notebook folder. Nothing
there may be written, removed or read; the server answers 4xx with a message naming the link, and
keeps serving. A kernel swapping directories for links in a loop while the server saves is raced
too."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import wait_until
from server_harness import KernelSocket, Server, free_port, running_server

# Who owns the notebook folder: an ordinary user, as a read-write workspace must be.
OWNER = 4321
SECRET = "root's secret, not the kernel's\n"
PRESET = Path(__file__).parent.parent / "examples" / "lockdown" / "jupyter_server_config.py"
STOCK = "jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager"
CLASS = "hopx_kernel.contents.HopxContentsManager"
NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@dataclass
class Folder:
    """A server whose notebook folder `ws` a sandboxed kernel (`kernel`) can write."""

    server: Server
    ws: Path
    # A directory outside the server's root, standing in for /etc/cron.d: holds secret.txt.
    outside: Path
    # A folder inside the server's root but outside the notebook folder: holds secret.txt.
    private: Path
    kernel: KernelSocket

    def sandbox(self, code: str) -> str:
        """Run `code` in the sandboxed kernel (its working directory is `ws`); its stdout."""
        content, stdout = self.kernel.execute(textwrap.dedent(code))
        assert content["status"] == "ok", content
        return stdout

    def link(self, name: str, target: Path) -> None:
        """Make `name` in the notebook folder a symbolic link to `target`, from the sandbox."""
        self.sandbox(f"import os; os.symlink({str(target)!r}, {name!r})")
        assert (self.ws / name).is_symlink()

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response: requests.Response = self.server.api(method, path, **kwargs)
        return response

    def contents(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request to /api/contents/notebooks/<path> (the notebook folder itself for "")."""
        return self.api(method, "/api/contents/notebooks" + (f"/{path}" if path else ""), **kwargs)

    def untouched(self) -> dict[str, Any]:
        """What lies outside the notebook folder, to compare before and after."""
        return {"outside": tree(self.outside), "private": tree(self.private)}


def tree(folder: Path) -> dict[str, Any]:
    """Every entry below `folder`, without following links: type, mode, owner and content (or a
    link's target)."""
    found: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what: Any = ["link", os.readlink(path)]
        elif path.is_dir():
            what = ["dir"]
        else:
            what = ["file", path.read_bytes().decode(errors="replace")]
        found[str(path.relative_to(folder))] = [*what, stat.filemode(st.st_mode), st.st_uid]
    return found


@pytest.fixture
def own_mount() -> bool:
    """Whether the notebook folder is a file system of its own (parametrize to change it)."""
    return False


@pytest.fixture
def folder(
    runtime_dir: Path,
    make_kernelspec: Any,
    tmp_path: Path,
    server_args: list[str],
    own_mount: bool,
) -> Iterator[Folder]:
    """A server (as root) whose notebook folder `notebooks`, owned by an ordinary user, is the
    read-write workspace of a running Hopx kernel."""
    make_kernelspec("hopx-rw", workspace="rw")
    root = tmp_path / "root"
    ws = root / "notebooks"
    ws.mkdir(parents=True)
    private = root / "private"
    private.mkdir()
    (private / "secret.txt").write_text(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "victim.txt").write_text("outside the folder\n")
    if own_mount:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", ws], check=True)
    try:
        ws.chmod(0o755)
        os.chown(ws, OWNER, OWNER)
        (tmp_path / "config").mkdir()
        token = secrets.token_hex(16)
        env = {
            "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
            "JUPYTER_TOKEN": token,
            # The server's trash (delete_to_trash), instead of root's own.
            "XDG_DATA_HOME": str(tmp_path / "data"),
        }
        with running_server(root, token, env, tmp_path / "server.log", server_args) as server:
            kernel = server.connect(server.start_kernel("hopx-rw", "notebooks"))
            folder = Folder(server, ws, outside, private, kernel)
            # The kernel writes as the folder's owner.
            folder.sandbox("open('mine.txt', 'w').write('kernel')")
            assert (ws / "mine.txt").stat().st_uid == OWNER
            yield folder
            assert server.status_ok(), server.log()[-3000:]
    finally:
        if own_mount:
            subprocess.run(["umount", "--lazy", ws], check=True)


def refused(response: requests.Response, link: str) -> None:
    """The server refused the operation because `link` (an API path) is a symbolic link."""
    assert response.status_code == 403, (response.status_code, response.text[:500])
    # jupyter_server answers errors of its API in JSON, those of its pages (POST .../trust is
    # one) in HTML.
    is_json = response.headers["Content-Type"].startswith("application/json")
    message = response.json()["message"] if is_json else response.text
    assert f"notebooks/{link} is a symbolic link" in message, message
    assert SECRET not in response.text


def save_model(kind: str, text: str = "new content\n") -> dict[str, Any]:
    if kind == "notebook":
        nb = {**NOTEBOOK, "cells": [{"cell_type": "markdown", "metadata": {}, "source": text}]}
        return {"type": "notebook", "format": "json", "content": nb}
    return {"type": "file", "format": "text", "content": text}


# --- Save, upload -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "notebook"])
def test_save_through_a_linked_file_or_folder_writes_nothing_outside(
    folder: Folder, kind: str
) -> None:
    """PUT of a file or notebook whose name, or whose folder, is a link the kernel made to a
    directory outside: refused with 403 naming the link; nothing outside changes."""
    name = "report.ipynb" if kind == "notebook" else "report.txt"
    folder.link(name, folder.outside / "victim.txt")
    folder.link("sub", folder.outside)
    before = folder.untouched()

    refused(folder.contents("PUT", name, json=save_model(kind)), name)
    refused(folder.contents("PUT", f"sub/{name}", json=save_model(kind)), "sub")
    refused(folder.contents("PUT", "sub/new", json={"type": "directory"}), "sub")
    assert folder.untouched() == before
    # A regular file beside them saves as usual, and gets its first checkpoint.
    response = folder.contents("PUT", f"plain-{name}", json=save_model(kind))
    assert response.status_code == 201, response.text
    assert (folder.ws / f"plain-{name}").exists()


def test_upload_whole_and_in_chunks_writes_nothing_outside(folder: Folder) -> None:
    """An upload (base64) into a linked folder is refused; a chunked upload whose file the
    kernel replaces with a link between two chunks is refused at the next chunk, and nothing
    lands outside."""
    folder.link("sub", folder.outside)
    before = folder.untouched()
    data = base64.b64encode(b"\x00\x01 uploaded").decode()
    upload = {"type": "file", "format": "base64", "content": data}
    refused(folder.contents("PUT", "sub/upload.bin", json=upload), "sub")

    # The kernel's own file (one the root server made would be root's, which the kernel could
    # not remove through its idmapped folder), written in place by the first chunk.
    folder.sandbox("open('big.bin', 'w').close()")
    first = folder.contents("PUT", "big.bin", json={**upload, "chunk": 1})
    assert first.status_code == 200, first.text
    folder.sandbox(
        f"import os; os.remove('big.bin'); os.symlink({str(folder.outside / 'victim.txt')!r}, "
        "'big.bin')"
    )
    refused(folder.contents("PUT", "big.bin", json={**upload, "chunk": -1}), "big.bin")
    refused(folder.contents("PUT", "sub/big.bin", json={**upload, "chunk": 1}), "sub")
    assert folder.untouched() == before


def test_saving_onto_a_pipe_is_refused_without_blocking(folder: Folder) -> None:
    """A named pipe the kernel made under a notebook's name: saving and reading it answer 400
    at once (opening a pipe to write would wait for a reader forever)."""
    folder.sandbox("import os; os.mkfifo('pipe.ipynb')")
    response = folder.contents("PUT", "pipe.ipynb", json=save_model("notebook"), timeout=10)
    assert response.status_code == 400, response.text
    assert "notebooks/pipe.ipynb is not a regular file" in response.json()["message"]
    response = folder.contents("GET", "pipe.ipynb", timeout=10)
    assert response.status_code == 400, response.text


# --- Checkpoints -----------------------------------------------------------------------------


def test_checkpoint_into_a_linked_checkpoint_folder_writes_nothing_outside(folder: Folder) -> None:
    """The reported attack: the kernel makes .ipynb_checkpoints a link to /etc/cron.d (here a
    stand-in); saving the notebook and creating a checkpoint (as JupyterLab does on save) used
    to write a root-owned copy of the kernel's content there. The save succeeds inside the
    folder, the checkpoint is refused naming the link, and nothing is written outside."""
    folder.sandbox(
        "import json; json.dump({'cells': [], 'metadata': {}, 'nbformat': 4, "
        "'nbformat_minor': 5}, open('job.ipynb', 'w'))"
    )
    folder.link(".ipynb_checkpoints", folder.outside)
    before = folder.untouched()

    saved = folder.contents("PUT", "job.ipynb", json=save_model("notebook", "* * * * * root x"))
    assert saved.status_code == 200, saved.text
    refused(folder.contents("POST", "job.ipynb/checkpoints"), ".ipynb_checkpoints")
    listed = folder.contents("GET", "job.ipynb/checkpoints")
    assert listed.status_code == 200, listed.text
    assert listed.json() == []
    refused(
        folder.contents("POST", "job.ipynb/checkpoints/checkpoint"),
        ".ipynb_checkpoints",
    )
    refused(
        folder.contents("DELETE", "job.ipynb/checkpoints/checkpoint"),
        ".ipynb_checkpoints",
    )
    assert folder.untouched() == before
    assert "* * * * *" in (folder.ws / "job.ipynb").read_text()


@pytest.mark.parametrize("linked", ["checkpoint", "notebook"])
def test_restoring_a_checkpoint_reads_and_writes_nothing_outside(
    folder: Folder, linked: str
) -> None:
    """Restore a checkpoint when the checkpoint file is a link to a secret outside (which would
    copy the secret into the kernel's folder), or when the notebook is a link to a file outside
    (which would overwrite it): refused, the notebook and everything outside unchanged."""
    notebook = json.dumps(NOTEBOOK)
    if linked == "checkpoint":
        (folder.ws / "job.ipynb").write_text(notebook)
        folder.sandbox(
            f"import os; os.mkdir('.ipynb_checkpoints'); os.symlink("
            f"{str(folder.outside / 'secret.txt')!r}, '.ipynb_checkpoints/job-checkpoint.ipynb')"
        )
        link = ".ipynb_checkpoints/job-checkpoint.ipynb"
    else:
        (folder.ws / ".ipynb_checkpoints").mkdir()
        (folder.ws / ".ipynb_checkpoints" / "job-checkpoint.ipynb").write_text(notebook)
        folder.link("job.ipynb", folder.outside / "victim.txt")
        link = "job.ipynb"
    before = folder.untouched()
    refused(folder.contents("POST", "job.ipynb/checkpoints/checkpoint"), link)
    assert folder.untouched() == before
    if linked == "checkpoint":
        assert (folder.ws / "job.ipynb").read_text() == notebook


def test_a_checkpoint_never_carries_a_setuid_bit(folder: Folder) -> None:
    """A setuid program of the folder's owner (the sandbox cannot make one: its seccomp filter
    refuses the bits): its checkpoint, made by the root server, is root's file, and must not be
    a setuid (or setgid) one."""
    tool = folder.ws / "tool.sh"
    tool.write_text("#!/bin/sh\nid\n")
    os.chown(tool, OWNER, OWNER)
    tool.chmod(0o6755)
    response = folder.contents("POST", "tool.sh/checkpoints")
    assert response.status_code == 201, response.text
    checkpoint = folder.ws / ".ipynb_checkpoints" / "tool-checkpoint.sh"
    assert checkpoint.read_text() == "#!/bin/sh\nid\n"
    assert checkpoint.stat().st_uid == 0
    assert checkpoint.stat().st_mode & (stat.S_ISUID | stat.S_ISGID) == 0, checkpoint.stat()


# --- Rename, copy, delete --------------------------------------------------------------------


def test_rename_moves_nothing_in_or_out_through_a_link(folder: Folder) -> None:
    """PATCH from a linked folder (which would take a file from outside into the kernel's
    folder) or into one (which would put one outside) is refused. Renaming a notebook whose
    checkpoint folder is a link renames the notebook only: the checkpoints outside stay.
    Renaming the link itself moves the link."""
    folder.link("sub", folder.outside)
    (folder.outside / "job-checkpoint.ipynb").write_text("outside checkpoint")
    (folder.ws / "job.ipynb").write_text(json.dumps(NOTEBOOK))
    folder.link(".ipynb_checkpoints", folder.outside)
    before = folder.untouched()

    taken = folder.contents("PATCH", "sub/victim.txt", json={"path": "notebooks/moved.txt"})
    refused(taken, "sub")
    put = folder.contents("PATCH", "mine.txt", json={"path": "notebooks/sub/mine.txt"})
    refused(put, "sub")
    renamed = folder.contents("PATCH", "job.ipynb", json={"path": "notebooks/job2.ipynb"})
    assert renamed.status_code == 200, renamed.text
    assert (folder.ws / "job2.ipynb").exists()
    assert folder.untouched() == before
    assert not (folder.ws / "moved.txt").exists()
    assert (folder.ws / "mine.txt").exists()
    # The link itself can be renamed: it moves as a link, its target stays where it is.
    moved = folder.contents("PATCH", "sub", json={"path": "notebooks/sub2"})
    assert moved.status_code == 200, moved.text
    assert os.readlink(folder.ws / "sub2") == str(folder.outside)
    assert folder.untouched() == before


def test_copy_reads_and_writes_nothing_outside(folder: Folder) -> None:
    """Copying a linked file (which would put the secret into the kernel's folder), a folder
    holding a link, or into a linked folder: refused, with no partial copy left."""
    folder.link("data.csv", folder.outside / "secret.txt")
    folder.link("sub", folder.outside)
    folder.sandbox(
        f"import os; os.mkdir('project'); open('project/a.txt', 'w').write('a'); "
        f"os.symlink({str(folder.private / 'secret.txt')!r}, 'project/key')"
    )
    before = folder.untouched()
    listing_before = sorted(p.name for p in folder.ws.iterdir())

    refused(folder.contents("POST", "", json={"copy_from": "notebooks/data.csv"}), "data.csv")
    refused(folder.contents("POST", "", json={"copy_from": "notebooks/project"}), "project/key")
    refused(folder.contents("POST", "sub", json={"copy_from": "notebooks/mine.txt"}), "sub")
    refused(folder.contents("POST", "", json={"copy_from": "notebooks/sub/secret.txt"}), "sub")
    assert folder.untouched() == before
    assert sorted(p.name for p in folder.ws.iterdir()) == listing_before
    # Copying a plain folder still works.
    (folder.ws / "clean").mkdir()
    (folder.ws / "clean" / "b.txt").write_text("b")
    copied = folder.contents("POST", "", json={"copy_from": "notebooks/clean"})
    assert copied.status_code == 201, copied.text
    assert (folder.ws / copied.json()["name"] / "b.txt").read_text() == "b"


@pytest.mark.parametrize(
    "server_args",
    [[], ["--FileContentsManager.delete_to_trash=False"]],
    ids=["to-trash", "for-good"],
)
def test_delete_removes_nothing_outside(folder: Folder, server_args: list[str]) -> None:
    """DELETE of a file in a linked folder, to the trash (the default) or for good, is refused
    and the file outside stays. Deleting the link itself removes the link, not its target."""
    folder.link("sub", folder.outside)
    before = folder.untouched()
    refused(folder.contents("DELETE", "sub/victim.txt"), "sub")
    assert folder.untouched() == before
    response = folder.contents("DELETE", "sub")
    assert response.status_code == 204, response.text
    assert not (folder.ws / "sub").is_symlink()
    assert folder.untouched() == before


@pytest.mark.parametrize("own_mount", [True])
def test_delete_to_a_linked_trash_writes_nothing_outside(folder: Folder) -> None:
    """A notebook folder that is a file system of its own keeps its trash inside, in
    .Trash-<uid> at its top, where the kernel can make it a link: moving a file to the trash
    then would write the trash's records (and the file) outside. Refused, naming the link;
    without the link the file goes there."""
    trash = f".Trash-{os.getuid()}"
    folder.link(trash, folder.outside)
    before = folder.untouched()
    refused(folder.contents("DELETE", "mine.txt"), trash)
    assert folder.untouched() == before
    assert (folder.ws / "mine.txt").exists()
    # Without the link, the file goes to that trash, recorded relative to the folder's top.
    (folder.ws / trash).unlink()
    response = folder.contents("DELETE", "mine.txt")
    assert response.status_code == 204, response.text
    assert (folder.ws / trash / "files" / "mine.txt").read_text() == "kernel"
    record = (folder.ws / trash / "info" / "mine.txt.trashinfo").read_text()
    assert "\nPath=mine.txt\n" in record


def test_delete_to_the_trash_works_in_a_folder_of_its_own(folder: Folder) -> None:
    """Control: without links, DELETE moves the file to the server's trash, with its record."""
    response = folder.contents("DELETE", "mine.txt")
    assert response.status_code == 204, response.text
    assert not (folder.ws / "mine.txt").exists()
    trash = Path(folder.server.root).parent / "data" / "Trash"
    assert (trash / "files" / "mine.txt").read_text() == "kernel"
    info = (trash / "info" / "mine.txt.trashinfo").read_text()
    assert f"Path={folder.ws}/mine.txt\n" in info


# --- Download, trust, listing ----------------------------------------------------------------


def test_download_reads_nothing_through_a_link(folder: Folder) -> None:
    """GET of a linked file's content (also as a notebook, or with its hash) and /files/ of a
    link to a file elsewhere in the server's root: refused, the secret not sent. /files/ still
    serves plain files (HEAD too), and only with the token."""
    folder.link("data.csv", folder.outside / "secret.txt")
    folder.link("notes.ipynb", folder.private / "secret.txt")
    folder.link("sub", folder.private)
    for query in ("", "?content=1", "?type=file&format=text", "?hash=1"):
        refused(folder.contents("GET", f"data.csv{query}"), "data.csv")
    refused(folder.contents("GET", "notes.ipynb?type=notebook"), "notes.ipynb")
    refused(folder.contents("GET", "sub/secret.txt"), "sub")
    for path in ("notes.ipynb", "sub/secret.txt", "data.csv"):
        response = folder.api("GET", f"/files/notebooks/{path}")
        assert response.status_code == 403, (path, response.status_code)
        assert SECRET not in response.text
    assert folder.api("GET", "/files/notebooks/mine.txt").text == "kernel"
    head = folder.api("HEAD", "/files/notebooks/mine.txt")
    assert head.status_code == 200
    assert head.headers["Content-Type"].startswith("text/plain")
    for method in ("GET", "HEAD"):
        # A page, not an API: without a login it redirects to the login page.
        anonymous = folder.server.api(
            method, "/files/notebooks/mine.txt", token=False, allow_redirects=False
        )
        assert anonymous.status_code == 302, (method, anonymous.status_code)
        assert anonymous.headers["Location"].startswith("/login?next="), anonymous.headers
        assert "kernel" not in anonymous.text


def test_trust_reads_nothing_through_a_link(folder: Folder) -> None:
    """POST .../trust of a notebook that is a link to a notebook elsewhere (trusting, and so
    reading, a notebook outside the folder): refused."""
    (folder.private / "other.ipynb").write_text(json.dumps(NOTEBOOK))
    folder.link("other.ipynb", folder.private / "other.ipynb")
    refused(folder.contents("POST", "other.ipynb/trust"), "other.ipynb")
    (folder.ws / "own.ipynb").write_text(json.dumps(NOTEBOOK))
    assert folder.contents("POST", "own.ipynb/trust").status_code == 201


def test_listing_shows_links_without_following_them(folder: Folder) -> None:
    """A listing shows each link as an entry of its own (a file, not writable), learning
    nothing about its target; listing a linked folder is refused, as is a link to a file of
    the same folder."""
    folder.link("sub", folder.outside)
    folder.link("data.csv", folder.outside / "secret.txt")
    folder.link("alias.txt", folder.ws / "mine.txt")
    response = folder.contents("GET", "")
    assert response.status_code == 200, response.text
    entries = {e["name"]: e for e in response.json()["content"]}
    for name in ("sub", "data.csv", "alias.txt"):
        assert entries[name]["type"] == "file", entries[name]
        assert entries[name]["writable"] is False
        assert entries[name]["size"] is None
    assert entries["mine.txt"]["type"] == "file"
    assert entries["mine.txt"]["writable"] is True
    refused(folder.contents("GET", "sub"), "sub")
    refused(folder.contents("GET", "alias.txt"), "alias.txt")
    assert "victim.txt" not in response.text


# --- The race --------------------------------------------------------------------------------

FLIP = """
import os, time
links = {"sub": OUTSIDE, ".ipynb_checkpoints": OUTSIDE, "notes.txt": OUTSIDE + "/secret.txt"}
os.makedirs("sub", exist_ok=True)
os.makedirs(".ipynb_checkpoints", exist_ok=True)
open("notes.txt", "w").write("notes")
flips = 0
end = time.monotonic() + 60
while not os.path.exists("stop") and time.monotonic() < end:
    for name, target in links.items():
        try:
            os.rename(name, name + ".real")
            os.symlink(target, name)
        except OSError:
            pass
    for name in links:
        try:
            if os.path.islink(name):
                os.unlink(name)
            os.rename(name + ".real", name)
        except OSError:
            pass
    flips += 1
print(flips)
"""


def test_a_kernel_flipping_folders_and_links_gets_nothing_outside(folder: Folder) -> None:
    """The kernel swaps a folder, the checkpoint folder and a file for links to outside in a
    tight loop, while the server saves into the folder, saves the file, checkpoints it and
    reads it, over and over: a check-then-use would lose this race. Nothing outside is written
    or read; the server answers each request with success or a refusal (some of each)."""
    before = folder.untouched()
    kernel = folder.kernel
    msg_id = kernel.send_execute(f"OUTSIDE = {str(folder.outside)!r}\n{FLIP}")
    assert kernel.wait_busy(msg_id, 30)
    assert wait_until((folder.ws / "notes.txt").exists, 10)
    statuses: dict[int, int] = {}
    odd: list[str] = []
    deadline = time.monotonic() + 8
    requests_made = 0
    while time.monotonic() < deadline:
        for method, path, body in (
            ("PUT", "sub/x.txt", save_model("file", "raced\n")),
            ("PUT", "notes.txt", save_model("file", "raced\n")),
            ("POST", "notes.txt/checkpoints", None),
            ("GET", "notes.txt?content=1", None),
            ("GET", "sub", None),
        ):
            response = folder.contents(method, path, json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code not in (200, 201, 403, 404):
                odd.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
            assert SECRET not in response.text
            assert "victim.txt" not in response.text
            requests_made += 1
    (folder.ws / "stop").touch()
    assert kernel.wait_for(lambda _: bool(kernel.replies_to(msg_id, "execute_reply")), 60)
    flips = int("".join(m["content"]["text"] for m in kernel.replies_to(msg_id, "stream")))
    assert flips > 100, flips
    assert folder.untouched() == before
    assert not odd, odd[:10]
    assert statuses.get(403, 0) > 0, statuses
    assert statuses.get(200, 0) + statuses.get(201, 0) > 0, statuses


# --- The file layer on its own (hopx_kernel.nofollow, hopx_kernel.trash) -----------------------


@pytest.fixture
def beneath(tmp_path: Path) -> Iterator[Any]:
    """A Beneath over tmp_path/root holding a folder `ws` with links to `outside`: `sub` (the
    folder), `link.txt` (its secret.txt) and `ws/dir/inner` (the folder again)."""
    from hopx_kernel.nofollow import Beneath  # noqa: PLC0415 - the module under test

    root = tmp_path / "root"
    (root / "ws" / "dir").mkdir(parents=True)
    (root / "ws" / "plain.txt").write_text("plain")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "ws" / "sub").symlink_to(outside)
    (root / "ws" / "link.txt").symlink_to(outside / "secret.txt")
    (root / "ws" / "dir" / "inner").symlink_to(outside)
    tree_ = Beneath(str(root))
    yield tree_
    tree_.close()


def attempts(b: Any) -> dict[str, Any]:
    """Every operation of Beneath, each through a link: a linked folder on the way, or the link
    as the last name where following it would read or write its target."""
    return {
        "entry through": lambda: b.entry("ws/sub/secret.txt"),
        "load through": lambda: b.load("ws/sub/secret.txt"),
        "load link": lambda: b.load("ws/link.txt"),
        "load linked folder": lambda: b.load("ws/sub"),
        "listdir linked folder": lambda: b.listdir("ws/sub"),
        "read link": lambda: b.read("ws/link.txt"),
        "write through": lambda: b.write("ws/sub/new.txt", b"x"),
        "write link": lambda: b.write("ws/link.txt", b"x"),
        "append link": lambda: b.append("ws/link.txt", b"x"),
        "mkdir through": lambda: b.mkdir("ws/sub/new"),
        "mkdir link": lambda: b.mkdir("ws/sub"),
        "makedirs through": lambda: b.makedirs("ws/sub/a/b"),
        "rename out of": lambda: b.rename("ws/sub/secret.txt", "ws/taken.txt"),
        "rename into": lambda: b.rename("ws/plain.txt", "ws/sub/plain.txt"),
        "remove through": lambda: b.remove("ws/sub/secret.txt"),
        "copy_file from link": lambda: b.copy_file("ws/link.txt", "ws/copy.txt"),
        "copy_file onto link": lambda: b.copy_file("ws/plain.txt", "ws/link.txt"),
        "copy_tree with a link inside": lambda: b.copy_tree("ws/dir", "ws/dir2"),
        "copy_tree into": lambda: b.copy_tree("ws/dir", "ws/sub/dir"),
        "tree_size with a link inside": lambda: b.tree_size("ws/dir"),
        "mount_top through": lambda: b.mount_top("ws/sub/secret.txt"),
    }


def test_every_file_operation_refuses_a_link(beneath: Any, tmp_path: Path) -> None:
    """Each operation that would go through a link raises LinkRefused naming the link (the one
    met first), and nothing outside changes; nothing is left half done inside."""
    from hopx_kernel.nofollow import LinkRefused  # noqa: PLC0415

    outside = tmp_path / "outside"
    before = tree(outside)
    ws_before = tree(tmp_path / "root" / "ws")
    expected_link = {"load link": "ws/link.txt", "read link": "ws/link.txt"}
    for name, attempt in attempts(beneath).items():
        with pytest.raises(LinkRefused) as refusal:
            attempt()
        link = refusal.value.path
        assert link in ("ws/sub", "ws/link.txt", "ws/dir/inner"), (name, link)
        assert link == expected_link.get(name, link), name
        assert str(refusal.value) == f"[Errno 40] {link} is a symbolic link", name
        assert tree(outside) == before, name
        assert tree(tmp_path / "root" / "ws") == ws_before, name


def test_a_link_itself_is_seen_renamed_and_removed_without_following_it(
    beneath: Any, tmp_path: Path
) -> None:
    """entry() describes a link as a link (not writable), rename moves the link, remove removes
    the link: the target stays."""
    entry = beneath.entry("ws/link.txt")
    assert entry.is_link
    assert not entry.writable
    names = {e.name: e for e in beneath.listdir("ws")}
    assert names["sub"].is_link
    assert names["plain.txt"].is_file
    assert names["plain.txt"].writable
    beneath.rename("ws/link.txt", "ws/renamed.txt")
    assert (tmp_path / "root" / "ws" / "renamed.txt").is_symlink()
    beneath.remove("ws/renamed.txt")
    beneath.remove("ws/sub")
    assert (tmp_path / "outside" / "secret.txt").read_text() == SECRET


def test_bad_paths_are_refused_with_the_reason() -> None:
    """'.', '..' and NUL never reach the file system; extra slashes are ignored."""
    from hopx_kernel.nofollow import BadPath, split  # noqa: PLC0415

    assert split("/a//b/") == ("a", "b")
    assert split("") == ()
    for bad, why in (("a/../b", "'..'"), ("./a", "'.'"), ("a\0b", "NUL")):
        with pytest.raises(BadPath, match=why):
            split(bad)


def test_write_in_place_keeps_the_file_and_ignores_a_planted_backup_link(
    beneath: Any, tmp_path: Path
) -> None:
    """A save writes the existing file in place (same inode and owner, as jupyter_server does),
    keeps a copy at `.~<name>` only while writing, and a link planted under that name is
    replaced, not followed."""
    ws = tmp_path / "root" / "ws"
    os.chown(ws / "plain.txt", OWNER, OWNER)
    inode = (ws / "plain.txt").stat().st_ino
    (ws / ".~plain.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    beneath.write("ws/plain.txt", b"new")
    assert (ws / "plain.txt").read_bytes() == b"new"
    assert (ws / "plain.txt").stat().st_ino == inode
    assert (ws / "plain.txt").stat().st_uid == OWNER
    assert not (ws / ".~plain.txt").exists()
    assert not (ws / ".~plain.txt").is_symlink()
    assert (tmp_path / "outside" / "secret.txt").read_text() == SECRET


def test_pipes_are_refused_at_once(beneath: Any, tmp_path: Path) -> None:
    """A pipe is neither read nor written, and opening it does not wait for the other end."""
    from hopx_kernel.nofollow import NotAFile  # noqa: PLC0415

    os.mkfifo(tmp_path / "root" / "ws" / "pipe")
    started = time.monotonic()
    for attempt in (
        lambda: beneath.write("ws/pipe", b"x"),
        lambda: beneath.append("ws/pipe", b"x"),
        lambda: beneath.read("ws/pipe"),
        lambda: beneath.load("ws/pipe"),
        lambda: beneath.copy_file("ws/pipe", "ws/copy"),
    ):
        with pytest.raises(NotAFile, match="ws/pipe is not a regular file"):
            attempt()
    assert time.monotonic() - started < 5


def test_copies_lose_setuid_and_setgid_bits(beneath: Any, tmp_path: Path) -> None:
    """copy_file (checkpoints) and copy_tree keep the permission bits but not setuid, setgid or
    sticky."""
    ws = tmp_path / "root" / "ws"
    (ws / "dir" / "inner").unlink()
    (ws / "dir" / "tool").write_text("tool")
    (ws / "dir" / "tool").chmod(0o7755)
    beneath.copy_file("ws/dir/tool", "ws/tool-copy")
    beneath.copy_tree("ws/dir", "ws/dir-copy")
    for copy in (ws / "tool-copy", ws / "dir-copy" / "tool"):
        assert stat.S_IMODE(copy.stat().st_mode) == 0o755, copy
        assert copy.read_text() == "tool"


def test_a_thread_flipping_a_folder_and_a_link_gets_nothing_outside(
    beneath: Any, tmp_path: Path
) -> None:
    """The race at the system call level, thousands of times: while a thread swaps the folder
    `flip` for a link to outside and back, writes, appends, directories and copies into it
    either land in the real folder or are refused."""
    from hopx_kernel.nofollow import LinkRefused  # noqa: PLC0415

    ws = tmp_path / "root" / "ws"
    outside = tmp_path / "outside"
    (ws / "flip").mkdir()
    before = tree(outside)
    stop = threading.Event()

    def flip() -> None:
        # makedirs may make `flip` again while it is away: every step may fail.
        while not stop.is_set():
            with contextlib.suppress(OSError):
                os.rename(ws / "flip", ws / "flip.real")
                os.symlink(outside, ws / "flip")
            time.sleep(0.0001)
            with contextlib.suppress(OSError):
                if (ws / "flip").is_symlink():
                    os.unlink(ws / "flip")
                os.rename(ws / "flip.real", ws / "flip")
            time.sleep(0.0001)

    operations = (
        lambda i: beneath.write(f"ws/flip/w{i % 7}", b"raced"),
        lambda i: beneath.append(f"ws/flip/a{i % 7}", b"raced"),
        lambda i: beneath.makedirs(f"ws/flip/d{i % 7}"),
        lambda i: beneath.copy_file("ws/plain.txt", f"ws/flip/c{i % 7}"),
        lambda i: beneath.load(f"ws/flip/w{i % 7}"),
    )
    flipper = threading.Thread(target=flip)
    flipper.start()
    outcomes = {"done": 0, "refused": 0, "missing": 0}
    try:
        for i in range(3000):
            for operation in operations:
                try:
                    operation(i)
                    outcomes["done"] += 1
                except LinkRefused:
                    outcomes["refused"] += 1
                except FileNotFoundError:
                    outcomes["missing"] += 1
    finally:
        stop.set()
        flipper.join()
    assert tree(outside) == before
    assert outcomes["done"] > 0, outcomes
    assert outcomes["refused"] > 0, outcomes


def test_the_trash_refuses_a_linked_trash_folder(
    beneath: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The home trash ($XDG_DATA_HOME/Trash) made a link, or its `files` folder: the file is not
    moved and nothing is written there. Without links it is moved, with its record."""
    from hopx_kernel.nofollow import LinkRefused  # noqa: PLC0415
    from hopx_kernel.trash import move_to_trash  # noqa: PLC0415

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    outside = tmp_path / "outside"
    before = tree(outside)
    (data / "Trash").symlink_to(outside)
    with pytest.raises(LinkRefused, match=f"{data}/Trash is a symbolic link"):
        move_to_trash(beneath, "ws/plain.txt")
    (data / "Trash").unlink()
    (data / "Trash").mkdir()
    (data / "Trash" / "files").symlink_to(outside)
    with pytest.raises(LinkRefused, match=f"{data}/Trash/files is a symbolic link"):
        move_to_trash(beneath, "ws/plain.txt")
    assert tree(outside) == before
    (data / "Trash" / "files").unlink()

    where = move_to_trash(beneath, "ws/plain.txt")
    assert where == f"{data}/Trash/files/plain.txt"
    assert (data / "Trash" / "files" / "plain.txt").read_text() == "plain"
    (tmp_path / "root" / "ws" / "plain.txt").write_text("again")
    assert move_to_trash(beneath, "ws/plain.txt") == f"{data}/Trash/files/plain 1.txt"
    record = (data / "Trash" / "info" / "plain 1.txt.trashinfo").read_text()
    assert record.startswith(f"[Trash Info]\nPath={tmp_path}/root/ws/plain.txt\nDeletionDate=")


# --- How the server gets it -----------------------------------------------------------------


@pytest.mark.parametrize(
    "server_args", [[], [f"--ServerApp.contents_manager_class={STOCK}"]], ids=["hopx", "admin's"]
)
def test_the_extension_installs_it_unless_the_admin_chose_a_manager(
    runtime_dir: Path, tmp_path: Path, server_args: list[str]
) -> None:
    """With the hopx_kernel extension (enabled on install) a server follows no link; a contents
    manager the admin chose is kept, and when it follows links the log says so and what to
    set instead."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text(SECRET)
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    token = secrets.token_hex(16)
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_TOKEN": token}
    with running_server(root, token, env, tmp_path / "server.log", server_args) as server:
        response = server.api("GET", "/api/contents/link.txt")
        log = server.log()
    if server_args:
        assert response.status_code == 200
        assert f"ServerApp.contents_manager_class is {STOCK}, which follows symbolic links" in log
        assert "Use hopx_kernel.contents.HopxContentsManager" in log
    else:
        assert response.status_code == 403
        assert "link.txt is a symbolic link" in response.json()["message"]
        assert "HopxContentsManager, which follows no symbolic link" in log


def test_lockdown_refuses_a_contents_manager_that_follows_links(
    tmp_path: Path, runtime_dir: Path
) -> None:
    """Lockdown with jupyter_server's own file manager chosen: the server does not start, and
    says why and what to set instead."""
    log = tmp_path / "failed-server.log"
    with open(log, "wb") as out:
        status = subprocess.run(
            [
                sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={free_port()}",
                f"--ServerApp.root_dir={tmp_path}", f"--config={PRESET}",
                f"--ServerApp.contents_manager_class={STOCK}",
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60,
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path)}, check=False,
        ).returncode  # fmt: skip
    text = log.read_text()
    assert status == 1, text[-3000:]
    assert f"ServerApp.contents_manager_class is {STOCK}, which follows symbolic links" in text
    assert "set it to hopx_kernel.contents.HopxContentsManager" in text
    assert "The server does not start without lockdown" in text


def doctor_review(tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    """The server findings of `jupyter hopx doctor --json`, for this environment's config."""
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"}
    (tmp_path / "user-config").mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", "doctor", "--json", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**env, "JUPYTER_CONFIG_DIR": str(tmp_path / "user-config")},
    )  # fmt: skip
    report = json.loads(result.stdout)
    return {check["name"]: check for check in report["server"]["checks"]}


def test_doctor_warns_when_read_write_folders_meet_a_manager_that_follows_links(
    runtime_dir: Path, tmp_path: Path, make_kernelspec: Any
) -> None:
    """Only with a Hopx kernelspec mounting its folder read-write does the doctor speak of links:
    fine with the default (the hopx_kernel extension installs HopxContentsManager), a warning
    with the fix when the config chooses jupyter_server's own file manager."""
    make_kernelspec("hopx-test")
    assert "file links" not in doctor_review(tmp_path)
    make_kernelspec("hopx-rw", workspace="rw")
    links = doctor_review(tmp_path)["file links"]
    assert links["ok"] is True, links
    assert links["found"] == f"{CLASS} follows none (read-write: hopx-rw)"

    config = tmp_path / "jupyter_server_config.py"
    config.write_text(f"c.ServerApp.contents_manager_class = {STOCK!r}\n")
    links = doctor_review(tmp_path, "--config", str(config))["file links"]
    assert links["ok"] is False
    assert links["found"].startswith(f"{STOCK} follows symbolic links, and hopx-rw mount")
    assert "hopx_kernel.contents.HopxContentsManager" in links["fix"]
    preset = doctor_review(tmp_path, "--config", str(PRESET))
    assert all(finding["ok"] for finding in preset.values()), preset
