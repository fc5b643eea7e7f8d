"""The server's token appears nowhere inside a sandbox: not in any file the kernel can see, not in
any environment or command line of its processes.

A real jupyter_server is started with a random token, and the token is put everywhere servers and
admins keep such secrets: the server's command line (`--IdentityProvider.token`), its environment
(`JUPYTER_TOKEN`, `JUPYTERHUB_API_TOKEN`, `JPY_API_TOKEN`), `jupyter_server_config.json` in the
user's config directory (`JUPYTER_CONFIG_DIR`) and in two directories on `JUPYTER_CONFIG_PATH`
(one of them `.jupyter/` inside the notebook's own folder, which the sandbox mounts), and the
server's runtime directory, where the server itself writes `jpserver-<pid>.json` and
`jpserver-<pid>-open.html` with the token (checked on the host). A notebook user then opens
`project/analysis.ipynb` (POST /api/sessions, then the kernel websocket, as JupyterLab does).

Inside, the kernel walks the whole visible filesystem from `/` and reads every regular file it
may read in full, in 1 MiB chunks that overlap by the needle's length less one byte, looking for
the token's bytes. What is and is not searched:

- searched: every regular file reachable from `/` without following symlinks, /proc and /sys
  excepted: the host's /usr, the /etc allowlist and generated files, the kernel's Python
  installation, the notebook folder, /run/hopx, and the scratch tmpfs (/tmp, /var/tmp, $HOME,
  /dev/shm) with nothing excluded; a file reachable under several names (hard links: same
  device and inode) is read once and counted under each name, a directory reachable twice (a
  bind mount) is walked once;
- searched in /proc: `environ` and `cmdline` of /proc/self and of every process in the
  sandbox's /proc, and every regular file any of them holds open (`/proc/<pid>/fd/<n>`, which
  would show an inherited host file);
- not searched: symlinks (their targets are walked under their own names), FIFOs, sockets and
  device files (never opened: that could block or have side effects), the rest of /proc
  (kernel interfaces, process memory) and files the sandbox's uid is not allowed to read
  (counted and reported; what it cannot read it cannot leak).

Everything is read, nothing sampled (the host's /usr is most of it); the test prints how many
files and bytes it read and how long that took. The walk is checked for completeness against the
host: in /usr, the kernel's Python installation and the notebook folder it must have read
exactly the files (and bytes) the host has there, less those the sandbox's uid may not read and
the hidden Jupyter config and data directories.

The token never appears literally in the code sent to the kernel (it is sent reversed and
rebuilt inside), and the cells run with `store_history` off, so IPython records neither the code
nor its results (its history file, $HOME/.ipython/profile_default/history.sqlite, exists and is
searched like everything else; the settings are reported). After the main search the scratch
tmpfs is searched again, for the token and for the reversed token that stands for the code sent:
nothing the search wrote holds either (with `store_history` on, the second would be found in the
history file).

Controls, so the search cannot pass vacuously: a file holding the token in the notebook folder
(read-only mount), placed across a chunk boundary, must be found, and it must be the only find; a
random marker in the kernelspec's `env` and on a child process's command line must be found in
/proc/self/environ, the kernel's and the child's /proc environ and the child's /proc cmdline, and
only in /proc; files that must have been read (the interpreter, the venv's pyvenv.cfg, the
generated /etc/passwd, /run/hopx/kernel.json, the control) were read.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_SETTINGS
from hopx_kernel.kernelspec import kernelspec
from server_harness import KernelSocket, Server, running_server

CHUNK = 1 << 20
KERNEL_NAME = "hopx-search"
CONTROL_MARKER_VAR = "HX_SEARCH_CONTROL"

# Inside the kernel: the search. Parameters (REVERSED, CHUNK, AREAS) are bound by `cell()`.
# Nothing here writes a file; results are paths and counts only, never a needle.
SEARCH = """
import errno, json, os, stat, subprocess, sys, time

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
OTHER_KINDS = {
    stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char_device", stat.S_IFBLK: "block_device",
}


class Search:
    def __init__(self, needles):
        self.needles = needles
        self.keep = max(map(len, needles)) - 1
        self.buf = bytearray(self.keep + CHUNK)
        self.view = memoryview(self.buf)
        self.found = [[] for _ in needles]
        self.files = self.bytes = self.dirs = self.aliases = self.proc_files = 0
        self.unreadable = []
        self.skipped = dict.fromkeys(OTHER_KINDS.values(), 0)
        self.per_area = {}
        self.read_files = {}  # (st_dev, st_ino) -> indexes of the needles found in it
        self.seen_dirs = set()

    def scan_fd(self, fd):
        hits, keep = set(), 0
        while True:
            n = os.readv(fd, [self.view[keep:keep + CHUNK]])
            if not n:
                return hits
            self.bytes += n
            end = keep + n
            for i, needle in enumerate(self.needles):
                if i not in hits and self.buf.find(needle, 0, end) >= 0:
                    hits.add(i)
            keep = min(self.keep, end)
            self.buf[:keep] = self.buf[end - keep:end]

    def fail(self, path, e):
        self.unreadable.append([path, errno.errorcode.get(e.errno, str(e.errno))])

    def file(self, path, st):
        area = next((a for a in AREAS if path.startswith(a + "/")), "/" + path.split("/")[1])
        counts = self.per_area.setdefault(area, [0, 0])
        key = (st.st_dev, st.st_ino)
        hits = self.read_files.get(key)
        if hits is None:
            try:
                fd = os.open(path, OPEN_FLAGS)
            except OSError as e:
                self.fail(path, e)
                return
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return
                before = self.bytes
                hits = self.scan_fd(fd)
                counts[1] += self.bytes - before
            except OSError as e:
                self.fail(path, e)
                return
            finally:
                os.close(fd)
            self.read_files[key] = hits
            self.files += 1
        else:
            self.aliases += 1
        counts[0] += 1
        for i in hits:
            self.found[i].append(path)

    def walk(self, top, skip=(), one_device=False):
        root = os.lstat(top)
        self.seen_dirs.add((root.st_dev, root.st_ino))
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError as e:
                self.fail(directory + "/", e)
                continue
            self.dirs += 1
            for entry in entries:
                path = entry.path
                if path in skip:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as e:
                    self.fail(path, e)
                    continue
                if one_device and st.st_dev != root.st_dev:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) not in self.seen_dirs:
                        self.seen_dirs.add((st.st_dev, st.st_ino))
                        stack.append(path)
                elif stat.S_ISREG(st.st_mode):
                    self.file(path, st)
                else:
                    kind = OTHER_KINDS.get(stat.S_IFMT(st.st_mode), "other")
                    self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def proc_file(self, path, flags):
        try:
            fd = os.open(path, flags)
        except OSError as e:
            self.fail(path, e)
            return
        try:
            hits = self.scan_fd(fd)
        except OSError as e:
            self.fail(path, e)
            return
        finally:
            os.close(fd)
        self.proc_files += 1
        for i in hits:
            self.found[i].append(path)

    def proc(self):
        pids = sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)
        for pid in ["self", *pids]:
            for leaf in ("environ", "cmdline"):
                self.proc_file(f"/proc/{pid}/{leaf}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError as e:
                self.fail(f"/proc/{pid}/fd/", e)
                continue
            for fd in fds:
                path = f"/proc/{pid}/fd/{fd}"
                try:
                    regular = stat.S_ISREG(os.stat(path).st_mode)  # the open file itself
                except OSError:
                    continue  # closed meanwhile (the listing's own fd), or not ours to see
                if regular:  # never a pipe, socket or device
                    self.proc_file(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def result(self):
        return {
            "found": self.found,
            "files": self.files,
            "aliases": self.aliases,
            "bytes": self.bytes,
            "dirs": self.dirs,
            "proc_files": self.proc_files,
            "skipped": self.skipped,
            "unreadable": self.unreadable,
            "per_area": self.per_area,
        }

    def was_read(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self.read_files


def needles():
    return [n[::-1].encode() for n in REVERSED]  # never literally in the code sent here


SCRATCH = ["/tmp", "/var/tmp", os.environ["HOME"], "/dev/shm"]


def scratch_files():
    # Files on the scratch tmpfs mounts (not on what is mounted below them), with their sizes.
    listing = {}
    for top in SCRATCH:
        device = os.lstat(top).st_dev
        for root, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
            for name in names:
                st = os.lstat(os.path.join(root, name))
                if st.st_dev == device:
                    listing[os.path.join(root, name)] = st.st_size
    return listing
"""


def cell(ks: KernelSocket, code: str, timeout: float = 60, **params: Any) -> Any:
    """Run `code` (after `params` bound as globals) with `store_history` off, so IPython records
    neither the code nor its result; returns the JSON document it printed."""
    prelude = "".join(f"{name} = {value!r}\n" for name, value in params.items())
    content = {
        "code": prelude + textwrap.dedent(code),
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg_id = ks.send("execute_request", content)

    def done(_: dict[str, Any]) -> bool:
        idle = any(
            m["content"].get("execution_state") == "idle" for m in ks.replies_to(msg_id, "status")
        )
        return idle and bool(ks.replies_to(msg_id, "execute_reply"))

    assert ks.wait_for(done, timeout), ks.received[-10:]
    (reply,) = ks.replies_to(msg_id, "execute_reply")
    assert reply["content"]["status"] == "ok", reply["content"]
    streams = ks.replies_to(msg_id, "stream")
    return json.loads(
        "".join(m["content"]["text"] for m in streams if m["content"]["name"] == "stdout")
    )


def server_config(token: str) -> str:
    return json.dumps({"IdentityProvider": {"token": token}})


@pytest.fixture
def token_server(
    runtime_dir: Path, kernels_dir: Path, tmp_path: Path
) -> Iterator[tuple[Server, str, Path]]:
    """A jupyter_server whose token is on its command line, in its environment, in its config
    directories and (written by the server) in its runtime directory; with the kernelspec
    `hopx-search` (whose `env` carries a control marker) and a notebook folder `project/`.
    Yields the server, the marker and the notebook folder."""
    token = secrets.token_hex(16)
    marker = f"hx-control-{secrets.token_hex(12)}"
    spec = kernelspec(TEST_SETTINGS, python=sys.executable)
    spec["env"] = {CONTROL_MARKER_VAR: marker}
    (kernels_dir / KERNEL_NAME).mkdir()
    (kernels_dir / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec))

    root = tmp_path / "root"
    project = root / "project"
    (project / "data").mkdir(parents=True)
    (project / "analysis.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    (project / "README.md").write_text("# Analysis\n\nMeasurements from the lab.\n")
    (project / "data" / "measurements.csv").write_text("t,value\n0,1.5\n1,2.5\n")
    # Repository-local Jupyter config, on JUPYTER_CONFIG_PATH: inside the mounted notebook folder.
    (project / ".jupyter").mkdir()
    (project / ".jupyter" / "jupyter_server_config.json").write_text(server_config(token))
    # An admin's config directory outside every mount, and the user's own.
    admin_config = tmp_path / "etc-jupyter"
    admin_config.mkdir()
    (admin_config / "jupyter_server_config.json").write_text(server_config(token))
    user_config = tmp_path / "config"
    user_config.mkdir()
    (user_config / "jupyter_server_config.json").write_text(server_config(token))

    env = {
        "JUPYTER_CONFIG_DIR": str(user_config),
        "JUPYTER_CONFIG_PATH": os.pathsep.join([str(project / ".jupyter"), str(admin_config)]),
        "JUPYTER_TOKEN": token,
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
    }
    assert os.environ["JUPYTER_RUNTIME_DIR"] == str(runtime_dir)
    assert os.environ["JUPYTER_PATH"] == str(kernels_dir.parent)
    with running_server(root, token, env, tmp_path / "server.log", []) as srv:
        yield srv, marker, project


def where_the_host_keeps_the_token(server: Server, runtime_dir: Path, token: str) -> list[str]:
    """The host places that hold the token (to show the setup put it where it says)."""
    places = [
        str(p)
        for p in sorted(runtime_dir.iterdir())
        if p.is_file() and token.encode() in p.read_bytes()
    ]
    proc = Path(f"/proc/{server.process.pid}")
    places += [
        str(proc / n) for n in ("environ", "cmdline") if token.encode() in (proc / n).read_bytes()
    ]
    return places


def host_tree(top: str, excluded: set[str]) -> list[int]:
    """[paths of regular files, their bytes (each inode once)] below `top` on the host, as
    root sees it, leaving out the paths in `excluded` (directories with a trailing slash)."""
    paths, sizes = 0, {}
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) + "/" not in excluded]
        for name in names:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and path not in excluded:
                paths += 1
                sizes[st.st_dev, st.st_ino] = st.st_size
    return [paths, sum(sizes.values())]


@pytest.mark.timeout(900)
def test_the_token_is_nowhere_in_the_sandbox(
    token_server: tuple[Server, str, Path], runtime_dir: Path
) -> None:
    """Search the sandbox's whole visible filesystem, and every environ and cmdline in its /proc,
    for the server's token (see the module docstring for exactly what is read): it is found
    only in the control file planted in the notebook folder."""
    server, marker, project = token_server
    token = server.token
    pid = server.process.pid
    # The token really is where the setup put it, on the host.
    assert where_the_host_keeps_the_token(server, runtime_dir, token) == [
        str(runtime_dir / f"jpserver-{pid}-open.html"),
        str(runtime_dir / f"jpserver-{pid}.json"),
        f"/proc/{pid}/environ",
        f"/proc/{pid}/cmdline",
    ]
    config_files = [
        project / ".jupyter" / "jupyter_server_config.json",
        server.root.parent / "etc-jupyter" / "jupyter_server_config.json",
        server.root.parent / "config" / "jupyter_server_config.json",
    ]
    assert all(token in p.read_text() for p in config_files)
    # Control: the token in the notebook folder, across the search's first chunk boundary.
    control = project / "data" / "export.bin"
    control.write_bytes(b"x" * (CHUNK - 10) + token.encode() + b"y" * 100)

    ks = server.connect(server.open_notebook("project/analysis.ipynb", KERNEL_NAME))
    areas = ["/usr", sys.prefix, str(project)]
    params: dict[str, Any] = {
        "REVERSED": [token[::-1], marker[::-1]],
        "CHUNK": CHUNK,
        "AREAS": areas,
    }

    setup = cell(
        ks,
        SEARCH
        + textwrap.dedent(
            """
            hm = get_ipython().history_manager
            print(json.dumps({
                "cwd": os.getcwd(), "pid": os.getpid(),
                "history": {"enabled": hm.enabled, "file": str(hm.hist_file),
                            "db_log_output": hm.db_log_output},
                "scratch": scratch_files(),
            }))
            """
        ),
        **params,
    )
    assert setup["cwd"] == os.path.realpath(project)

    started = time.monotonic()
    seen = cell(
        ks,
        """
        token, marker = needles()
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", marker.decode()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the child has exec'd its own command line
            with open(f"/proc/{child.pid}/cmdline", "rb") as f:
                if marker in f.read():
                    break
            time.sleep(0.02)
        search = Search([token, marker])
        t0 = time.monotonic()
        search.walk("/", skip={"/proc", "/sys"})
        t1 = time.monotonic()
        search.proc()
        t2 = time.monotonic()
        child.kill()
        child.wait()
        del token, marker
        print(json.dumps({
            **search.result(),
            "child": child.pid,
            "walk_seconds": t1 - t0,
            "proc_seconds": t2 - t1,
            "top": sorted(os.listdir("/")),
            "read": {p: search.was_read(p) for p in MUST_READ},
        }))
        """,
        timeout=800,
        MUST_READ=[
            os.path.realpath(sys.executable),
            sys.executable,
            str(Path(sys.prefix) / "pyvenv.cfg"),
            "/etc/passwd",
            "/run/hopx/kernel.json",
            str(control),
        ],
    )
    elapsed = time.monotonic() - started

    # Afterwards, the scratch tmpfs again, without what is mounted below it: neither the token
    # nor the code sent (the reversed token stands for it) was written there.
    after = cell(
        ks,
        """
        search = Search([*needles(), REVERSED[0].encode()])
        for top in SCRATCH:
            search.walk(top, one_device=True)
        print(json.dumps({**search.result(), "scratch": scratch_files()}))
        """,
    )

    token_found, marker_found = seen["found"]
    kernel_pid, child = setup["pid"], seen["child"]
    unreadable = {path for path, _ in seen["unreadable"]}
    # What the host has in the mounted trees, less what the sandbox may not read and less the
    # Jupyter config and data directories that must be hidden ({sys.prefix}/etc/jupyter,
    # {sys.prefix}/share/jupyter, those below /usr, project/.jupyter).
    jupyter_dirs = [
        *(Path(sys.prefix) / part / "jupyter" for part in ("etc", "share")),
        *(
            Path(prefix) / part / "jupyter"
            for prefix in ("/usr", "/usr/local")
            for part in ("etc", "share")
        ),
        project / ".jupyter",
    ]
    hidden = {str(path) + "/" for path in jupyter_dirs}
    expected = {area: host_tree(area, unreadable | hidden) for area in areas}
    print(
        f"\nsearched {seen['files']} files ({seen['aliases']} more names of the same files), "
        f"{seen['bytes'] / 1e9:.2f} GB, {seen['dirs']} directories "
        f"in {seen['walk_seconds']:.1f} s; "
        f"{seen['proc_files']} /proc files in {seen['proc_seconds']:.2f} s; cell {elapsed:.1f} s"
        f"\nvisible at /: {seen['top']}\n(files, bytes) per area: {seen['per_area']}"
        f"\nhost, less unreadable and hidden: {expected}"
        f"\nnot opened: {seen['skipped']}; unreadable: {seen['unreadable']}"
        f"\nhistory: {setup['history']}"
        f"\nscratch before: {setup['scratch']}\nscratch after: {after['scratch']}"
        f"\ntoken found in: {token_found}\nmarker found in: {marker_found}"
    )

    # Controls: the search finds what is there, across a chunk boundary, in /proc too, and it
    # read every file of the mounted trees that the sandbox may read.
    assert seen["read"] == dict.fromkeys(seen["read"], True)
    assert {
        "/proc/self/environ",
        f"/proc/{kernel_pid}/environ",
        f"/proc/{child}/environ",
        f"/proc/{child}/cmdline",
    } <= set(marker_found)
    assert all(path.startswith("/proc/") for path in marker_found)
    assert {area: seen["per_area"].get(area) for area in areas} == expected
    assert expected[str(project)][0] == 4  # the notebook, README, data and the control
    # The finding: the token only in the planted control, nowhere else.
    assert token_found == [str(control)]
    assert after["found"] == [[], [], []]
    assert after["files"] > 0  # the scratch space was searched again (the history file at least)
