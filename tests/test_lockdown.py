"""Lockdown (the hopx_kernel.lockdown server extension) on real servers: no terminals, only Hopx
kernelspecs listed and started, a page Content-Security-Policy that keeps JupyterLab working and
loads nothing from other hosts; the rule for "starts under Hopx" it shares with
GET /hopx/api/kernelspecs; `jupyter hopx install --lockdown` end to end.

Each server test runs with and without lockdown, so what lockdown changes is shown to change."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from traitlets import TraitError

from browser_harness import UI_TIMEOUT, run_first_cell, shoot
from conftest import assert_no_leaks, wait_until
from hopx_kernel.kernelspec import hopx_kernelspecs, provisioner_of, starts_under_hopx
from hopx_kernel.lockdown import LOCKDOWN_CSP, HopxLockdown, refusal_message
from server_harness import Server, free_port, running_server

PRESET = Path(__file__).parent.parent / "examples" / "lockdown" / "jupyter_server_config.py"
LOCKDOWN = [f"--config={PRESET}"]
JUPYTER = str(Path(sys.executable).with_name("jupyter"))
# jupyter_server's own page policy, which lockdown replaces.
STOCK_CSP = "frame-ancestors 'self'; report-uri /api/security/csp-report"

with_and_without_lockdown = pytest.mark.parametrize(
    "server_args", [LOCKDOWN, []], ids=["lockdown", "no-lockdown"]
)


def in_lockdown(server_args: list[str]) -> bool:
    return LOCKDOWN[0] in server_args


# --- The rule: which kernelspecs start under Hopx -----------------------------------------------


def hopx_metadata(**stanza: Any) -> dict[str, Any]:
    return {"kernel_provisioner": {"provisioner_name": "hopx-provisioner", **stanza}}


@pytest.mark.parametrize(
    ("metadata", "default", "expected"),
    [
        (hopx_metadata(config={"memory_limit": "1G"}), "local-provisioner", "hopx-provisioner"),
        # A spec that names a provisioner gets it, whatever the default.
        (
            {"kernel_provisioner": {"provisioner_name": "local-provisioner"}},
            "hopx-provisioner",
            "local-provisioner",
        ),
        # A spec that names none (python3, ir, ...) gets the factory's default.
        ({}, "local-provisioner", "local-provisioner"),
        ({}, "hopx-provisioner", "hopx-provisioner"),
        ({"debugger": True}, "hopx-provisioner", "hopx-provisioner"),
        # A stanza without a provisioner_name is no choice: jupyter_client uses the default.
        ({"kernel_provisioner": {"config": {}}}, "hopx-provisioner", "hopx-provisioner"),
        ({"kernel_provisioner": {"config": {}}}, "local-provisioner", "local-provisioner"),
        # Malformed stanzas never count as Hopx unless the default is Hopx (jupyter_client uses
        # the default for a string, and fails to start a list).
        ({"kernel_provisioner": "hopx-provisioner"}, "local-provisioner", "local-provisioner"),
        ({"kernel_provisioner": ["provisioner_name"]}, "local-provisioner", "local-provisioner"),
    ],
)
def test_provisioner_of_follows_jupyter_client(
    metadata: dict[str, Any], default: str, expected: str
) -> None:
    assert provisioner_of(metadata, default) == expected
    assert starts_under_hopx(metadata, default) is (expected == "hopx-provisioner")


def test_hopx_kernelspecs_from_a_kernelspec_listing() -> None:
    """From a KernelSpecManager.get_all_specs() listing: the names of those that start under
    Hopx, sorted; with Hopx as the default provisioner, also those that name none."""
    listing = {
        "python3": {"resource_dir": "/x", "spec": {"metadata": {"debugger": True}}},
        "hopx-b": {"resource_dir": "/y", "spec": {"metadata": hopx_metadata()}},
        "hopx-a": {"resource_dir": "/z", "spec": {"metadata": hopx_metadata()}},
        "ssh": {
            "resource_dir": "/w",
            "spec": {"metadata": {"kernel_provisioner": {"provisioner_name": "ssh"}}},
        },
    }
    assert hopx_kernelspecs(listing, "local-provisioner") == ["hopx-a", "hopx-b"]
    assert hopx_kernelspecs(listing, "hopx-provisioner") == ["hopx-a", "hopx-b", "python3"]


def test_refusal_message_says_what_why_and_what_instead() -> None:
    message = refusal_message(
        "python3", "local-provisioner", {"hopx-python": "Python 3 (Hopx sandbox)"}
    )
    assert message == (
        "Lockdown: the kernelspec 'python3' may not start on this server.\n"
        "It would run outside the Hopx sandbox (its provisioner is 'local-provisioner'),\n"
        "and this server starts only sandboxed kernels.\n"
        "Pick a Hopx kernelspec instead:\n"
        "- hopx-python: Python 3 (Hopx sandbox)"
    )
    nothing = refusal_message("ir", "local-provisioner", {})
    assert nothing.endswith(
        "No Hopx kernelspec is installed here: an admin adds one with `jupyter hopx install`."
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "default-src 'self'\nX-Injected: 1",
        "default-src 'self'\x01",
        "default-src 'sélf'",
        "img-src 'self'",
        "'self'; nonsense",
    ],
)
def test_a_bad_content_security_policy_is_refused_with_an_example(bad: str) -> None:
    """Empty, more than one line or with characters a header cannot carry (tornado would drop
    the header, leaving pages with no policy), without default-src (so anything it does not name
    is allowed), or not made of directives: refused, naming the setting and showing a valid
    policy."""
    with pytest.raises(TraitError) as refused:
        HopxLockdown(content_security_policy=bad)
    message = str(refused.value)
    assert message.startswith("HopxLockdown.content_security_policy ")
    assert "e.g. \"default-src 'self'; img-src 'self' data:\"" in message


def test_a_content_security_policy_is_normalised() -> None:
    assert (
        HopxLockdown(
            content_security_policy=" default-src  'self' ;\timg-src 'self';;"
        ).content_security_policy
        == "default-src 'self'; img-src 'self'"
    )


def test_the_default_content_security_policy_is_valid_and_allows_no_other_host() -> None:
    directives = dict(d.split(" ", 1) for d in LOCKDOWN_CSP.split("; "))
    assert HopxLockdown().content_security_policy == LOCKDOWN_CSP
    assert directives["default-src"] == "'self'"
    for sources in directives.values():
        # Only this server, inline code, and browser-local data: no scheme or host wildcard.
        assert set(sources.split()) <= {
            "'self'",
            "'unsafe-inline'",
            "'unsafe-eval'",
            "'none'",
            "data:",
            "blob:",
        }, sources


# --- Terminals --------------------------------------------------------------------------------


@with_and_without_lockdown
def test_terminals_are_gone_in_lockdown(server: Server, server_args: list[str]) -> None:
    """In lockdown the terminal API and websocket do not exist (404) and JupyterLab is told
    there are no terminals; without lockdown a terminal starts."""
    listed = server.api("GET", "/api/terminals")
    created = server.api("POST", "/api/terminals")
    socket = server.api("GET", "/terminals/websocket/1")
    if in_lockdown(server_args):
        assert (listed.status_code, created.status_code, socket.status_code) == (404, 404, 404)
        assert "Hopx lockdown: terminals are off" in server.log()
    else:
        assert listed.status_code == 200
        assert created.status_code == 200, created.text
        name = created.json()["name"]
        assert server.api("DELETE", f"/api/terminals/{name}").status_code == 204


# --- Kernelspecs: listed and started ------------------------------------------------------------


def unsandboxed_kernels(server: Server) -> list[str]:
    """ipykernel processes descending from the server and not from a bubblewrap sandbox."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        chain = ancestors(int(pid))
        if (
            "ipykernel" in cmdline
            and server.process.pid in chain
            and "bwrap" not in {command_name(p) for p in [int(pid), *chain]}
        ):
            found.append(f"{pid}: {cmdline[:100]}")
    return found


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def provisioners(listing: dict[str, Any]) -> dict[str, str | None]:
    """Kernelspec name -> the provisioner its kernel.json names (None: it names none), from a
    GET /api/kernelspecs answer."""
    return {
        name: model["spec"]["metadata"].get("kernel_provisioner", {}).get("provisioner_name")
        for name, model in listing["kernelspecs"].items()
    }


@with_and_without_lockdown
def test_kernelspec_list_has_only_hopx_kernelspecs(server: Server, server_args: list[str]) -> None:
    """GET /api/kernelspecs lists only the Hopx kernelspecs in lockdown, with a Hopx default (so
    JupyterLab's "new notebook" picks one); without lockdown python3 is listed and the default."""
    listing = server.api("GET", "/api/kernelspecs").json()
    listed = provisioners(listing)
    assert {"hopx-small", "hopx-test"} <= set(listed)
    if in_lockdown(server_args):
        assert set(listed.values()) == {"hopx-provisioner"}, listed
        assert listing["default"] in listed
    else:
        assert listed["python3"] is None
        assert listing["default"] == "python3"


@with_and_without_lockdown
def test_an_unsandboxed_kernel_is_refused_before_it_starts(
    server: Server, server_args: list[str], runtime_dir: Path
) -> None:
    """POST /api/kernels naming python3 is refused in lockdown with 403 and a message that names
    the kernelspec, says why and names the Hopx kernelspecs to pick instead; no kernel is listed,
    no process started, no connection file written. A Hopx kernelspec starts and runs. Without
    lockdown python3 starts, unsandboxed."""
    refused = server.api("POST", "/api/kernels", json={"name": "python3", "path": "notebooks"})
    if not in_lockdown(server_args):
        assert refused.status_code == 201, refused.text
        assert len(unsandboxed_kernels(server)) == 1
        return
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert message.startswith("Lockdown: the kernelspec 'python3' may not start on this server.")
    assert (
        "It would run outside the Hopx sandbox (its provisioner is 'local-provisioner')" in message
    )
    assert "\nPick a Hopx kernelspec instead:\n" in message
    assert "\n- hopx-small: Python 3 (Hopx sandbox)" in message
    assert "\n- hopx-test: Python 3 (Hopx sandbox)" in message
    assert server.api("GET", "/api/kernels").json() == []
    assert unsandboxed_kernels(server) == []
    assert not list(runtime_dir.glob("kernel-*.json"))
    assert "Hopx lockdown: refused to start kernelspec 'python3'" in server.log()

    # The default kernel (a POST naming none) is a Hopx one, and it starts and runs.
    response = server.api("POST", "/api/kernels", json={"path": "notebooks"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    listed = provisioners(server.api("GET", "/api/kernelspecs").json())
    assert listed[response.json()["name"]] == "hopx-provisioner"
    assert server.connect(kernel_id).value("import os; print(os.getuid())") == 1000
    assert [k["id"] for k in server.api("GET", "/api/kernels").json()] == [kernel_id]
    assert unsandboxed_kernels(server) == []


def notebook(server: Server, name: str) -> str:
    (server.root / "notebooks" / name).write_text(json.dumps(nbformat.v4.new_notebook()))
    return f"notebooks/{name}"


@with_and_without_lockdown
def test_a_session_cannot_start_or_change_to_an_unsandboxed_kernel(
    server: Server, server_args: list[str]
) -> None:
    """POST /api/sessions (how JupyterLab opens a notebook) naming python3 is refused in
    lockdown with the same message, and leaves no session and no kernel; a session on a Hopx
    kernel opens, and changing its kernel to python3 (PATCH, JupyterLab's Change Kernel) is
    refused and keeps the Hopx kernel. Without lockdown both succeed."""
    model = {"path": notebook(server, "a.ipynb"), "type": "notebook", "kernel": {"name": "python3"}}
    opened = server.api("POST", "/api/sessions", json=model)
    hopx_kernel = server.open_notebook(notebook(server, "b.ipynb"), "hopx-test")
    session_id = next(
        s["id"] for s in server.api("GET", "/api/sessions").json() if s["path"].endswith("b.ipynb")
    )
    changed = server.api(
        "PATCH", f"/api/sessions/{session_id}", json={"kernel": {"name": "python3"}}
    )
    if not in_lockdown(server_args):
        assert (opened.status_code, changed.status_code) == (201, 200), (opened.text, changed.text)
        assert changed.json()["kernel"]["name"] == "python3"
        return
    # jupyter_server's session handlers report any failed kernel start as 500 (POST) or 501
    # (PATCH); the message is lockdown's.
    assert opened.status_code >= 400
    assert opened.json()["message"].startswith(
        "Lockdown: the kernelspec 'python3' may not start on this server."
    )
    assert changed.status_code >= 400
    assert "Lockdown: the kernelspec 'python3' may not start" in changed.json()["message"]
    sessions = server.api("GET", "/api/sessions").json()
    assert [(s["path"], s["kernel"]["id"]) for s in sessions] == [
        ("notebooks/b.ipynb", hopx_kernel)
    ]
    assert [k["id"] for k in server.api("GET", "/api/kernels").json()] == [hopx_kernel]
    assert unsandboxed_kernels(server) == []


@pytest.mark.parametrize(
    "server_args",
    [[*LOCKDOWN, "--KernelProvisionerFactory.default_provisioner_name=hopx-provisioner"]],
)
def test_with_hopx_as_the_default_provisioner_every_kernelspec_starts_sandboxed(
    server: Server,
) -> None:
    """A farm that makes Hopx the default provisioner runs python3 (which names no provisioner)
    under Hopx: lockdown lists it and starts it, sandboxed."""
    listing = server.api("GET", "/api/kernelspecs").json()
    assert provisioners(listing)["python3"] is None
    kernel_id = server.start_kernel(name="python3")
    assert server.connect(kernel_id).value("import os; print(os.getuid())") == 1000
    assert unsandboxed_kernels(server) == []
    assert server.api("GET", "/hopx/api/kernelspecs").json() == {
        "hopx": sorted(listing["kernelspecs"]),
        "lockdown": True,
    }


# --- GET /hopx/api/kernelspecs -------------------------------------------------------------------


@with_and_without_lockdown
def test_hopx_kernelspecs_endpoint(server: Server, server_args: list[str]) -> None:
    """GET /hopx/api/kernelspecs names the kernelspecs that start under Hopx and says whether the
    server is in lockdown; it needs the same login as /api/kernelspecs."""
    response = server.api("GET", "/hopx/api/kernelspecs")
    assert response.status_code == 200, response.text
    listed = provisioners(server.api("GET", "/api/kernelspecs").json())
    hopx = sorted(name for name, provisioner in listed.items() if provisioner == "hopx-provisioner")
    assert {"hopx-small", "hopx-test"} <= set(hopx)
    assert response.json() == {"hopx": hopx, "lockdown": in_lockdown(server_args)}
    assert server.api("GET", "/hopx/api/kernelspecs", token=False).status_code in (401, 403)


# --- The page Content-Security-Policy -----------------------------------------------------------


PORTAL_CSP = "default-src 'self'; frame-ancestors 'self' https://portal.example"


@pytest.mark.parametrize(
    "server_args",
    [
        LOCKDOWN,
        [*LOCKDOWN, "--ServerApp.base_url=/user/alice/"],
        [*LOCKDOWN, f"--HopxLockdown.content_security_policy={PORTAL_CSP}"],
        [],
    ],
    ids=["lockdown", "lockdown-base-url", "lockdown-own-policy", "no-lockdown"],
)
def test_content_security_policy_on_jupyterlab_pages(
    server: Server, server_args: list[str]
) -> None:
    """JupyterLab's pages carry lockdown's policy (or the one configured instead), with
    jupyter_server's violation reports going to this server under its base URL; files served
    raw keep jupyter_server's sandbox."""
    base = "/user/alice/" if "--ServerApp.base_url=/user/alice/" in server_args else "/"
    own = any(a.startswith("--HopxLockdown.content_security_policy=") for a in server_args)
    policy = PORTAL_CSP if own else LOCKDOWN_CSP
    for path in ("/lab", "/lab/tree/notebooks", "/lab/workspaces/x"):
        page = server.api("GET", path)
        assert page.status_code == 200, (path, page.status_code)
        csp = page.headers["Content-Security-Policy"]
        if in_lockdown(server_args):
            assert csp == f"{policy}; report-uri {base}api/security/csp-report", path
        else:
            assert csp == STOCK_CSP, path
    raw = server.api("GET", "/files/notebooks/data.txt")
    assert raw.headers["Content-Security-Policy"].endswith("; sandbox allow-scripts")


# --- Start-up failures: lockdown is on or the server does not start ----------------------------


def failed_start(tmp_path: Path, *server_args: str) -> tuple[int, str]:
    """Start a server that is expected to exit at once; its exit status and log."""
    log = tmp_path / "failed-server.log"
    with open(log, "wb") as out:
        process = subprocess.run(
            [
                sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={free_port()}",
                f"--ServerApp.root_dir={tmp_path}", *server_args,
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=60,
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path)}, check=False,
        )  # fmt: skip
    return process.returncode, log.read_text()


def test_a_bad_lockdown_setting_stops_the_server(tmp_path: Path, runtime_dir: Path) -> None:
    """A server whose lockdown setting is bad does not start (rather than start without
    lockdown): the log names the setting and shows a valid value."""
    status, log = failed_start(
        tmp_path, *LOCKDOWN, "--HopxLockdown.content_security_policy=img-src 'self'"
    )
    assert status == 1, log[-3000:]
    assert "HopxLockdown.content_security_policy " in log
    assert "e.g. \"default-src 'self'; img-src 'self' data:\"" in log
    assert "The server does not start without lockdown" in log


def test_lockdown_with_a_kernel_gateway_stops_the_server(tmp_path: Path, runtime_dir: Path) -> None:
    """Kernels a Kernel Gateway starts are not this server's to check: lockdown says so and the
    server does not start."""
    status, log = failed_start(tmp_path, *LOCKDOWN, "--GatewayClient.url=http://127.0.0.1:9")
    assert status == 1, log[-3000:]
    assert "GatewayClient.url" in log
    assert "The server does not start without lockdown" in log


# --- `jupyter hopx install --lockdown`, end to end -----------------------------------------------


def test_install_lockdown_into_a_prefix_then_remove_it(
    tmp_path: Path, runtime_dir: Path, kernels_dir: Path
) -> None:
    """`jupyter hopx install --lockdown --prefix P` puts the kernelspec and the lockdown config
    in P; a server reading P's config is in lockdown and lists P's kernelspec; after
    `jupyter hopx install --no-lockdown --prefix P` a new server is not."""
    prefix = tmp_path / "env"
    installed = subprocess.run(
        [JUPYTER, "hopx", "install", "--lockdown", "--prefix", str(prefix), "--name", "hopx-p",
         "--memory", "512M"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    config = prefix / "etc/jupyter/jupyter_server_config.d/hopx_lockdown.json"
    assert f"Lockdown on: {config}" in installed.stdout

    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    env = {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "user-config"),
        "JUPYTER_CONFIG_PATH": str(prefix / "etc/jupyter"),
        "JUPYTER_PATH": f"{prefix / 'share/jupyter'}:{kernels_dir.parent}",
    }

    def start(log: str) -> Any:
        return running_server(root, secrets.token_hex(16), env, tmp_path / log, [])

    with start("locked.log") as locked:
        assert locked.api("GET", "/api/terminals").status_code == 404
        listed = provisioners(locked.api("GET", "/api/kernelspecs").json())
        assert "hopx-p" in listed
        assert set(listed.values()) == {"hopx-provisioner"}
        refused = locked.api("POST", "/api/kernels", json={"name": "python3"})
        assert refused.status_code == 403
        assert "\n- hopx-p: Python 3 (Hopx sandbox)" in refused.json()["message"]
        assert locked.api("GET", "/lab").headers["Content-Security-Policy"].startswith(LOCKDOWN_CSP)
        kernel_id = locked.start_kernel(name="hopx-p", path="notebooks")
        assert locked.connect(kernel_id).value("print(6 * 7)") == 42

    removed = subprocess.run(
        [JUPYTER, "hopx", "install", "--no-lockdown", "--prefix", str(prefix), "--name", "hopx-p"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert f"Lockdown off: removed {config}" in removed.stdout
    with start("open.log") as unlocked:
        assert unlocked.api("GET", "/api/terminals").status_code == 200
        assert "python3" in unlocked.api("GET", "/api/kernelspecs").json()["kernelspecs"]
    assert_no_leaks(runtime_dir)


# --- In the browser -----------------------------------------------------------------------------

PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
def remote_images() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.2 (another host, as far as the browser is concerned) serving
    /pixel.png: its base URL and the paths requested from it."""
    requested: list[str] = []

    class Pixel(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PIXEL)))
            self.end_headers()
            self.wfile.write(PIXEL)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Pixel)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{httpd.server_address[1]}", requested
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({directive: e.effectiveDirective, blocked: e.blockedURI});
});
"""


def recording_page(browser: Browser) -> tuple[Page, list[str]]:
    """A new page that records policy violations, and the list its console messages go to."""
    console: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(VIOLATIONS)

    def keep(message: ConsoleMessage) -> None:
        console.append(message.text)

    context.on("console", keep)
    return context.new_page(), console


@with_and_without_lockdown
def test_jupyterlab_works_and_loads_nothing_remote_in_lockdown(
    lab: Server,
    browser: Browser,
    server_args: list[str],
    make_kernelspec: Callable[..., str],
    remote_images: tuple[str, list[str]],
) -> None:
    """JupyterLab opens a notebook on a Hopx kernel and runs a cell under lockdown's policy,
    which JupyterLab itself never violates. The notebook's Markdown cell shows an image from
    another host: in lockdown the browser does not request it (the policy blocks it, and that
    is the only violation); without lockdown it does."""
    remote, requested = remote_images
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-lab", "display_name": "Hopx", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("print(6 * 7)"),
        nbformat.v4.new_markdown_cell(f"A remote image: ![pixel]({remote}/pixel.png)"),
    ]
    make_kernelspec("hopx-lab")
    nbformat.write(nb, lab.root / "notebooks" / "remote.ipynb")

    page, console = recording_page(browser)
    page.goto(
        f"{lab.url}/lab/workspaces/remote/tree/notebooks/remote.ipynb?reset&token={lab.token}"
    )
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
    expect(
        page.locator('.jp-NotebookPanel .jp-DebuggerBugButton[aria-disabled="false"]')
    ).to_have_count(1, timeout=60_000)
    assert run_first_cell(page).strip() == "42"
    image = page.locator(f'.jp-RenderedMarkdown img[src="{remote}/pixel.png"]')
    expect(image).to_have_count(1, timeout=UI_TIMEOUT)

    def violations() -> list[dict[str, str]]:
        found: list[dict[str, str]] = page.evaluate("window.__cspViolations")
        return found

    blocked_image = {"directive": "img-src", "blocked": f"{remote}/pixel.png"}
    page_config = json.loads(page.locator("#jupyter-config-data").text_content() or "{}")
    if in_lockdown(server_args):
        assert wait_until(lambda: blocked_image in violations(), 30), violations()
        shoot(page, "lockdown-01-remote-image-blocked")
        assert requested == []
        assert violations() == [blocked_image]
        csp_console = [m for m in console if "Content Security Policy" in m]
        assert len(csp_console) == 1, csp_console
        assert f"{remote}/pixel.png" in csp_console[0]
        # The violation is reported to the server, which logs it.
        assert wait_until(lambda: "Content security violation" in lab.log(), 30)
        assert f"{remote}/pixel.png" in lab.log()
        assert page_config["terminalsAvailable"] is False
    else:
        assert wait_until(lambda: requested, 30)
        shoot(page, "lockdown-02-remote-image-without-lockdown")
        assert requested[0] == "/pixel.png"
        assert violations() == []
        assert page_config["terminalsAvailable"] is True
    page.context.close()


@pytest.mark.parametrize("server_args", [[*LOCKDOWN, "--LabApp.expose_app_in_browser=True"]])
def test_jupyterlab_offers_only_hopx_kernels_and_shows_a_refusal_in_full(
    lab: Server, browser: Browser
) -> None:
    """A notebook saved with the python3 kernelspec, opened in lockdown: JupyterLab sees that
    python3 is not listed and asks for a kernel, offering only Hopx ones. A start of python3
    asked for anyway (here through JupyterLab's own session API) is refused, and JupyterLab's
    error dialog shows lockdown's whole message. No kernel starts."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells.append(nbformat.v4.new_code_cell("print(6 * 7)"))
    nbformat.write(nb, lab.root / "notebooks" / "stock.ipynb")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{lab.url}/lab/workspaces/stock/tree/notebooks/stock.ipynb?reset&token={lab.token}")
    picker = page.locator(".jp-Dialog", has_text="Select Kernel")
    expect(picker).to_be_visible(timeout=UI_TIMEOUT)
    offered = picker.locator("select option").all_inner_texts()
    assert "Python 3 (Hopx sandbox)" in offered, offered
    assert "Python 3 (ipykernel)" not in offered, offered
    shoot(page, "lockdown-03-kernel-picker")
    picker.get_by_role("button", name="No Kernel").click()
    expect(picker).to_have_count(0)

    page.evaluate(
        "window.jupyterapp.shell.currentWidget.sessionContext"
        ".changeKernel({name: 'python3'}).catch(() => null)"
    )
    listing = lab.api("GET", "/api/kernelspecs").json()["kernelspecs"]
    choices = {name: model["spec"]["display_name"] for name, model in listing.items()}
    expected = refusal_message("python3", "local-provisioner", choices)
    dialog = page.locator(".jp-Dialog", has_text="Error Starting Kernel")
    expect(dialog.locator("pre").first).to_have_text(expected, timeout=UI_TIMEOUT)
    shoot(page, "lockdown-04-refusal-dialog")
    assert lab.api("GET", "/api/kernels").json() == []
    page.close()


RICH_OUTPUTS = r"""
import struct, zlib
from IPython.display import HTML, JSON, SVG, Image, Latex, display

def png(width, height):
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))

display(Image(png(20, 10)))
display(HTML("<b>bold</b> <i>html</i>"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
            '<circle cx="10" cy="10" r="8"/></svg>'))
display(Latex(r"$\alpha^2 + \beta$"))
display(JSON({"a": 1}))
print("done")
"""


@with_and_without_lockdown
def test_jupyterlab_launcher_rich_outputs_and_panel_under_lockdown(
    lab: Server, browser: Browser, server_args: list[str], make_kernelspec: Callable[..., str]
) -> None:
    """Under lockdown JupyterLab's launcher offers no terminal (without lockdown it does); a cell
    displaying an image, HTML, SVG, LaTeX and JSON, Markdown with math, and the Sandboxes panel
    all work without a single policy violation, in the page or in any frame."""
    make_kernelspec("hopx-lab")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-lab", "display_name": "Hopx", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(RICH_OUTPUTS),
        nbformat.v4.new_markdown_cell("Math $x^2$ and **bold**"),
    ]
    nbformat.write(nb, lab.root / "notebooks" / "rich.ipynb")
    page, console = recording_page(browser)
    page.goto(f"{lab.url}/lab/workspaces/launcher?reset&token={lab.token}")
    cards = page.locator(".jp-LauncherCard")
    expect(cards.first).to_be_visible(timeout=60_000)
    has_terminal = any("Terminal" in card for card in cards.all_inner_texts())
    assert has_terminal is not in_lockdown(server_args)
    if not in_lockdown(server_args):
        page.context.close()
        return

    page.goto(f"{lab.url}/lab/workspaces/rich/tree/notebooks/rich.ipynb?reset&token={lab.token}")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
    expect(
        page.locator('.jp-NotebookPanel .jp-DebuggerBugButton[aria-disabled="false"]')
    ).to_have_count(1, timeout=60_000)
    run_first_cell(page)
    expect(page.locator(".jp-OutputArea-output", has_text="done")).to_have_count(
        1, timeout=UI_TIMEOUT
    )
    page.locator('.jp-SideBar [data-id="hopx-sandboxes"]').click()
    expect(page.locator(".hopx-SandboxCard")).to_contain_text("rich.ipynb", timeout=UI_TIMEOUT)
    page.wait_for_timeout(2000)  # late loads (fonts, MathJax) would show by now
    shoot(page, "lockdown-05-rich-outputs")
    assert page.evaluate("window.__cspViolations") == []
    assert [m for m in console if "Content Security Policy" in m] == []
    assert "Content security violation" not in lab.log()
    page.context.close()
