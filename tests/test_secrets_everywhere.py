"""A secret's value is in the kernel and nowhere else: a real jupyter_server (logging at debug)
starts a kernel with secrets from a file and from a helper command, a client prints them over
the kernel's websocket, the kernel restarts and is deleted; then every REST answer, every event,
the server's log, `jupyter hopx list --json`, every file under the runtime, state and kernelspec
directories and every host process's command line and environment are searched. The REST model
and the list name the secrets. papermill's output notebook is searched too."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from test_cli import hopx
from test_secrets import files_holding, processes_holding

from server_harness import Server

MASKED = ("[secret API_KEY]", "[secret TOKEN]")


def value(tag: str) -> str:
    return f'{tag}-{secrets.token_hex(10)}.*?[]ü"<>'


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, tuple[str, Path]]:
    """Two secrets, each in a file of its own: one read by file:, one printed by exec:."""
    made = {}
    for name in ("API_KEY", "TOKEN"):
        path = tmp_path / f"{name.lower()}.secret"
        made[name] = (value(name.lower()), path)
        path.write_text(made[name][0])
    return made


@pytest.mark.parametrize("server_args", [["--ServerApp.log_level=DEBUG"]])
def test_a_secret_is_in_the_kernel_and_nowhere_else(
    server: Server,
    make_kernelspec: Callable[..., str],
    secret_files: dict[str, tuple[str, Path]],
    runtime_dir: Path,
    kernels_dir: Path,
) -> None:
    (api_key, api_key_file), (token, token_file) = secret_files["API_KEY"], secret_files["TOKEN"]
    make_kernelspec(
        "hopx-secret",
        secrets={"API_KEY": f"file:{api_key_file}", "TOKEN": f"exec:cat {token_file}"},
    )
    events = server.events()
    kernel_id = server.open_notebook("notebooks/secret.ipynb", "hopx-secret")
    kernel = server.connect(kernel_id)
    for code in (
        "import os; print(os.environ['API_KEY'], os.environ['TOKEN'])",
        "os.environ['API_KEY']",
        "raise KeyError(os.environ['TOKEN'])",
    ):
        kernel.execute(code)
    outputs = [m["content"] for m in kernel.received]
    seen = json.dumps(outputs, ensure_ascii=False)
    assert all(mark in seen for mark in MASKED), seen

    answers = []
    for path in (
        "/api/kernels",
        f"/api/kernels/{kernel_id}",
        "/api/sessions",
        "/api/kernelspecs",
        "/hopx/api/sandboxes",
        f"/hopx/api/sandboxes/{kernel_id}",
        f"/hopx/api/sandboxes/{kernel_id}/network",
    ):
        response = server.api("GET", path)
        assert response.status_code == 200, (path, response.text)
        answers.append(response.text)
    model = server.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    assert model["secrets"] == ["API_KEY", "TOKEN"]
    listed = hopx("list", "--json").stdout
    answers.append(listed)
    assert json.loads(listed)[0]["secrets"] == ["API_KEY", "TOKEN"]

    # Alive: no other process holds a value, no file does.
    for secret in (api_key, token):
        assert processes_holding(secret) == {}
        roots = [runtime_dir, kernels_dir, server.root]
        assert files_holding(secret, roots, but=set()) == []

    restarted = server.api("POST", f"/api/kernels/{kernel_id}/restart")
    assert restarted.status_code == 200, restarted.text
    answers.append(restarted.text)
    events.wait_for_hopx("started", kernel_id, 60)
    assert server.api("DELETE", f"/api/kernels/{kernel_id}").status_code == 204
    events.wait_for_hopx("stopped", kernel_id, 60)

    log = server.log()
    assert kernel_id in log  # the log is the server's, at debug level
    for secret in (api_key, token):
        for found_in in (seen, log, json.dumps(events.received), *answers):
            assert secret not in found_in
            assert json.dumps(secret)[1:-1] not in found_in
        assert files_holding(secret, [runtime_dir, kernels_dir, server.root], but=set()) == []


def test_a_secret_printed_by_a_papermill_run_is_not_in_the_output_notebook(
    tmp_path: Path,
    make_kernelspec: Callable[..., str],
    secret_files: dict[str, tuple[str, Path]],
) -> None:
    api_key, api_key_file = secret_files["API_KEY"]
    make_kernelspec("hopx-secret", secrets={"API_KEY": f"file:{api_key_file}"})
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "hopx-secret",
        "display_name": "Hopx",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("import os\nkey = os.environ['API_KEY']\nprint(key)"),
        nbformat.v4.new_code_cell("key"),
        nbformat.v4.new_code_cell(
            "import sys, time\nfor i in range(0, len(key), 4):\n"
            "    sys.stdout.write(key[i:i + 4]); sys.stdout.flush(); time.sleep(0.01)"
        ),
    ]
    nbformat.write(nb, tmp_path / "in.ipynb")
    run = subprocess.run(
        [sys.executable, "-m", "papermill", "in.ipynb", "out.ipynb", "-k", "hopx-secret"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    saved = (tmp_path / "out.ipynb").read_text()
    assert saved.count("[secret API_KEY]") == 3, saved
    assert api_key not in saved
    assert json.dumps(api_key)[1:-1] not in saved
    assert api_key not in run.stdout + run.stderr
