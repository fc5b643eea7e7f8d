"""Batch execution runs in the sandbox: papermill's CLI and nbclient in-process, with parameters,
errors, and a papermill killed with SIGKILL mid-cell, each leaving nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbclient
import nbformat
import pytest
from nbformat.notebooknode import NotebookNode

from conftest import assert_no_leaks, hopx_processes, leftovers, wait_until

DATA = "from the notebook folder\n"

PROOF = """
import json, os, socket
print(json.dumps({"uid": os.getuid(), "hostname": socket.gethostname(), "cwd": os.getcwd(),
                  "data": open("data.txt").read()}))
"""


def notebook(*cells: tuple[str, str]) -> NotebookNode:
    """A notebook of code cells, each tagged with its name; a cell named `parameters` is the
    papermill parameters cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-test", "display_name": "Hopx", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for tag, source in cells:
        cell = nbformat.v4.new_code_cell(source.strip())
        cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    return nb


def cell(nb: NotebookNode, tag: str) -> NotebookNode:
    (found,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return found


def stdout(code_cell: NotebookNode) -> str:
    return "".join(
        o["text"]
        for o in code_cell.outputs
        if o["output_type"] == "stream" and o["name"] == "stdout"
    )


@pytest.fixture
def folder(tmp_path: Path, make_kernelspec: Callable[..., str]) -> Path:
    """A notebook folder with a data file; the `hopx-test` kernelspec is on JUPYTER_PATH."""
    make_kernelspec("hopx-test")
    path = tmp_path / "work"
    path.mkdir()
    (path / "data.txt").write_text(DATA)
    return path


def papermill(
    folder: Path, *args: str, log: Path, kernel: str = "hopx-test"
) -> subprocess.Popen[bytes]:
    """`python -m papermill in.ipynb out.ipynb -k <kernel> --cwd <folder> ...`, run in `folder`,
    its output going to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "papermill",
                "in.ipynb",
                "out.ipynb",
                "-k",
                kernel,
                "--cwd",
                str(folder),
                "--no-progress-bar",
                *args,
            ],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_papermill(folder: Path, *args: str, log: Path, kernel: str = "hopx-test") -> int:
    process = papermill(folder, *args, log=log, kernel=kernel)
    try:
        return process.wait(240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_papermill_cli_runs_parameters_in_the_sandbox(folder: Path, runtime_dir: Path) -> None:
    """papermill injects `-p n 5`, the cells run as the sandbox's uid 1000 on host `hopx` in the
    notebook folder, the output notebook holds their outputs, and nothing is left afterwards."""
    nb = notebook(("parameters", "n = 1"), ("double", "print(n * 2)"), ("proof", PROOF))
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    assert run_papermill(folder, "-p", "n", "5", log=log) == 0, log.read_text()

    out = nbformat.read(folder / "out.ipynb", as_version=4)
    assert stdout(cell(out, "injected-parameters")) == ""
    assert "n = 5" in cell(out, "injected-parameters").source
    assert stdout(cell(out, "double")) == "10\n"
    proof = json.loads(stdout(cell(out, "proof")))
    assert proof == {"uid": 1000, "hostname": "hopx", "cwd": str(folder.resolve()), "data": DATA}
    assert out.metadata["papermill"]["parameters"] == {"n": 5}
    assert_no_leaks(runtime_dir)
    assert not list(runtime_dir.glob("kernel-*.json"))


def test_papermill_cell_error_fails_the_run(folder: Path, runtime_dir: Path) -> None:
    """A raising cell makes papermill exit non-zero, the error is in the output notebook, later
    cells did not run, and nothing is left afterwards."""
    nb = notebook(
        ("before", "print('before')"),
        ("boom", "raise ValueError('hopx boom')"),
        ("after", "print('after')"),
    )
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    assert run_papermill(folder, log=log) != 0
    assert "hopx boom" in log.read_text()

    out = nbformat.read(folder / "out.ipynb", as_version=4)
    assert stdout(cell(out, "before")) == "before\n"
    errors = [o for o in cell(out, "boom").outputs if o["output_type"] == "error"]
    assert [(e["ename"], e["evalue"]) for e in errors] == [("ValueError", "hopx boom")]
    assert cell(out, "after").outputs == []
    assert cell(out, "after").execution_count is None
    assert_no_leaks(runtime_dir)


def test_papermill_out_of_memory_fails_the_run_quickly(
    folder: Path, runtime_dir: Path, make_kernelspec: Callable[..., str]
) -> None:
    """A cell going past memory_limit kills the kernel: papermill reports the dead kernel and
    exits non-zero well before any timeout, and nothing is left."""
    make_kernelspec("hopx-small", memory_limit="256M")
    nb = notebook(("hog", "hog = b'x' * (600 * 1024 * 1024)"), ("after", "print('after')"))
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    started = time.monotonic()
    assert run_papermill(folder, log=log, kernel="hopx-small") != 0
    assert time.monotonic() - started < 60
    assert "DeadKernelError" in log.read_text(), log.read_text()
    assert "out of memory" in log.read_text()
    out = nbformat.read(folder / "out.ipynb", as_version=4)
    assert cell(out, "after").outputs == []
    assert_no_leaks(runtime_dir)


def test_nbclient_in_process(folder: Path, runtime_dir: Path) -> None:
    """nbclient's NotebookClient, in this process, runs the notebook sandboxed in its folder."""
    nb = notebook(("double", "n = 21\nprint(n * 2)"), ("proof", PROOF), ("rich", "n + 1"))
    client = nbclient.NotebookClient(
        nb, kernel_name="hopx-test", resources={"metadata": {"path": str(folder)}}, timeout=120
    )
    client.execute()
    assert stdout(cell(nb, "double")) == "42\n"
    proof = json.loads(stdout(cell(nb, "proof")))
    assert proof == {"uid": 1000, "hostname": "hopx", "cwd": str(folder.resolve()), "data": DATA}
    (result,) = cell(nb, "rich").outputs
    assert result["output_type"] == "execute_result"
    assert result["data"]["text/plain"] == "22"
    assert_no_leaks(runtime_dir)
    assert not list(runtime_dir.glob("kernel-*.json"))


def test_papermill_kill_9_mid_cell_leaves_nothing(folder: Path, runtime_dir: Path) -> None:
    """papermill killed with SIGKILL while a cell sleeps: the sandbox and its connection file go
    within seconds, with nobody left to shut the kernel down."""
    nb = notebook(("sleep", "print('sl' + 'eeping-now', flush=True)\nimport time\ntime.sleep(600)"))
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    process = papermill(folder, "--log-output", log=log)
    try:
        assert wait_until(
            lambda: "sleeping-now" in log.read_text() or process.poll() is not None, 120
        )
        assert process.poll() is None, log.read_text()
        assert hopx_processes()
        assert leftovers(runtime_dir)
        started = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert_no_leaks(runtime_dir, timeout=10)
        assert time.monotonic() - started < 10
        assert not list(runtime_dir.glob("kernel-*.json"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


LONG_CELL = """
import time
print('long-cell-started', flush=True)
for i in range(200):
    time.sleep(0.1)
    if i % 10 == 0:
        print('tick', i, flush=True)
"""


def error_outputs(code_cell: NotebookNode) -> list[NotebookNode]:
    return [o for o in code_cell.outputs if o["output_type"] == "error"]


def test_papermill_past_max_lifetime_ends_the_cell_with_the_reason(
    folder: Path, runtime_dir: Path, make_kernelspec: Callable[..., str]
) -> None:
    """A papermill run whose kernel reaches max_lifetime '4s' in a ~20 s cell: papermill exits
    non-zero long before the cell would have finished, the output notebook is written, the
    running cell ends with a SandboxStopped error naming max_lifetime (the stop notice, not a bare
    "Kernel died"), the next cell never runs, and nothing is left."""
    make_kernelspec("hopx-short", max_lifetime="4s")
    nb = notebook(
        ("before", "print('before')"),
        ("long", LONG_CELL),
        ("after", "print('after')"),
    )
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    started = time.monotonic()
    assert run_papermill(folder, log=log, kernel="hopx-short") != 0, log.read_text()
    elapsed = time.monotonic() - started
    assert elapsed < 18, (elapsed, log.read_text())

    assert (folder / "out.ipynb").exists(), log.read_text()
    out = nbformat.read(folder / "out.ipynb", as_version=4)
    assert stdout(cell(out, "before")) == "before\n"
    long = cell(out, "long")
    assert "long-cell-started" in stdout(long)
    assert "tick 190" not in stdout(long)
    errors = error_outputs(long)
    assert [e["ename"] for e in errors] == ["SandboxStopped"], long.outputs
    assert "max_lifetime" in errors[0]["evalue"]
    assert "maximum lifetime of 4s" in errors[0]["evalue"]
    assert cell(out, "after").outputs == []
    assert cell(out, "after").execution_count is None
    assert "SandboxStopped" in log.read_text()
    assert_no_leaks(runtime_dir)
    assert hopx_processes() == []
    assert not list(runtime_dir.glob("kernel-*.json"))


def test_nbclient_in_process_sees_the_stop_notice(
    folder: Path, runtime_dir: Path, make_kernelspec: Callable[..., str]
) -> None:
    """nbclient in this process, with max_lifetime '4s': execution raises CellExecutionError for
    the running cell with the SandboxStopped notice, the cell's outputs hold it, and nothing is
    left once the client has shut the kernel down."""
    make_kernelspec("hopx-short", max_lifetime="4s")
    nb = notebook(("long", LONG_CELL), ("after", "print('after')"))
    client = nbclient.NotebookClient(
        nb, kernel_name="hopx-short", resources={"metadata": {"path": str(folder)}}, timeout=120
    )
    started = time.monotonic()
    with pytest.raises(nbclient.exceptions.CellExecutionError) as raised:
        client.execute()
    assert time.monotonic() - started < 18
    assert raised.value.ename == "SandboxStopped"
    assert "max_lifetime" in raised.value.evalue
    (error,) = error_outputs(cell(nb, "long"))
    assert error["ename"] == "SandboxStopped"
    assert cell(nb, "after").outputs == []
    assert_no_leaks(runtime_dir)
    assert not list(runtime_dir.glob("kernel-*.json"))


PAPERMILL = str(Path(sys.executable).with_name("papermill"))


def papermill_command(folder: Path, *args: str, log: Path, kernel: str) -> subprocess.Popen[bytes]:
    """The `papermill` command itself (as users run it, not `python -m`), in `folder`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [PAPERMILL, "in.ipynb", "out.ipynb", "-k", kernel, "--cwd", str(folder), *args],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def hopx_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`jupyter hopx ...` as `python -m hopx_kernel.cli`, seeing this test's runtime directory."""
    return subprocess.run(
        [sys.executable, "-m", "hopx_kernel.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hopx_kill_stops_a_papermill_run_with_the_reason(
    folder: Path, runtime_dir: Path, make_kernelspec: Callable[..., str]
) -> None:
    """`jupyter hopx list` shows a papermill run's sandbox with papermill as its owner and the
    time left of its 10m lifetime; `jupyter hopx kill <kernel id prefix>` stops it and says so:
    papermill fails, its output notebook shows the running cell ended with SandboxStopped
    "killed by hand", the next cell never ran, and nothing is left."""
    make_kernelspec("hopx-10m", max_lifetime="10m")
    nb = notebook(
        ("sleep", "print('sl' + 'eeping-now', flush=True)\nimport time\ntime.sleep(600)"),
        ("after", "print('after')"),
    )
    nbformat.write(nb, folder / "in.ipynb")
    log = folder.parent / "papermill.log"
    process = papermill_command(folder, "--log-output", log=log, kernel="hopx-10m")
    try:
        assert wait_until(
            lambda: "sleeping-now" in log.read_text() or process.poll() is not None, 120
        )
        assert process.poll() is None, log.read_text()
        listing = hopx_cli("list", "--json")
        assert listing.returncode == 0, listing.stderr
        (row,) = json.loads(listing.stdout)
        assert "papermill" in row["owner"]
        assert 500 < row["lifetime_left_seconds"] <= 600
        table = hopx_cli("list").stdout
        assert "OWNER" in table
        assert "ENDS IN" in table
        assert "papermill" in table
        kernel_id = row["kernel_id"]

        killed = hopx_cli("kill", kernel_id[:8])
        assert killed.returncode == 0, killed.stderr
        assert f"Killed kernel {kernel_id} (sandbox {row['sandbox_id']})" in killed.stdout
        assert process.wait(60) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    out = nbformat.read(folder / "out.ipynb", as_version=4)
    errors = error_outputs(cell(out, "sleep"))
    assert [(e["ename"], e["evalue"]) for e in errors] == [
        ("SandboxStopped", "Hopx stopped this kernel: it was killed by hand.")
    ]
    assert cell(out, "after").outputs == []
    assert cell(out, "after").execution_count is None
    assert "killed by hand" in log.read_text()
    assert_no_leaks(runtime_dir)
    assert json.loads(hopx_cli("list", "--json").stdout) == []
    assert not list(runtime_dir.glob("kernel-*.json"))
