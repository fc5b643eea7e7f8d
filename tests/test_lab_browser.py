"""The JupyterLab extension in a real browser (headless Chromium): the status bar item shows a
Hopx kernel's memory limit, the Sandboxes panel lists the sandbox and kills it, and a short idle
timeout brings a warning whose "Keep alive" action works, then the cull notification.

Screenshots of every step go to artifacts/browser/ (kept by CI).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
from framework_apps import BOKEH_PORT, start_bokeh_cell
from internet_harness import WEB_SERVER, serve_at
from playwright.sync_api import Browser, Page, expect

from browser_harness import UI_TIMEOUT, open_notebook, run_first_cell, shoot, write_notebook
from conftest import wait_until
from server_harness import Server


def only_kernel(server: Server) -> str:
    kernels = server.api("GET", "/api/kernels").json()
    assert len(kernels) == 1, kernels
    return str(kernels[0]["id"])


def open_sandboxes_panel(page: Page) -> None:
    page.locator('.jp-SideBar [data-id="hopx-sandboxes"]').click()
    expect(page.locator("#hopx-sandboxes")).to_be_visible(timeout=UI_TIMEOUT)


def test_status_bar_panel_and_kill(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """A notebook on a Hopx kernel (memory_limit 256M) runs a cell; the status bar shows the
    sandbox with its memory limit and a countdown; the Sandboxes panel lists it with its
    notebook, and killing it there (after confirming) stops the kernel for good and shows a
    notification saying it was killed by hand."""
    make_kernelspec("hopx-lab", memory_limit="256M", idle_timeout="1h")
    path = write_notebook(lab, "status.ipynb", "hopx-lab")
    page = open_notebook(browser, lab, path, "status")
    assert run_first_cell(page).strip() == "42"
    shoot(page, "01-cell-ran")

    status = page.locator(".hopx-SandboxStatus")
    expect(status).to_contain_text("/ 256 MiB", timeout=UI_TIMEOUT)
    expect(status).to_contain_text("idle cull in", timeout=UI_TIMEOUT)
    shoot(page, "02-status-bar")

    kernel_id = only_kernel(lab)
    open_sandboxes_panel(page)
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{kernel_id}"]')
    expect(card).to_contain_text("status.ipynb", timeout=UI_TIMEOUT)
    expect(card.locator('.hopx-Bar[data-resource="memory"]')).to_contain_text("256 MiB")
    address = lab.api("GET", "/hopx/api/sandboxes").json()[0]["address"]
    expect(card.locator(".hopx-SandboxCard-address")).to_have_text(f"address {address}")
    shoot(page, "03-sandboxes-panel")

    card.locator(".hopx-SandboxCard-kill").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Kill this sandbox?")
    shoot(page, "04-kill-confirmation")
    dialog.locator("button.jp-mod-warn").click()

    expect(page.locator(".jp-toast-message, .Toastify__toast-body").first).to_contain_text(
        "was killed by hand", timeout=UI_TIMEOUT
    )
    assert wait_until(lambda: lab.api("GET", "/api/kernels").json() == [], 30)
    expect(card).to_have_count(0, timeout=UI_TIMEOUT)
    shoot(page, "05-killed-notification")
    page.close()


@pytest.mark.parametrize("server_args", [["--ServerApp.base_url=/user/alice/"]])
@pytest.mark.parametrize("theme", ["JupyterLab Dark"])
def test_cull_warning_keep_alive_then_cull(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """Under a JupyterHub-style base URL (/user/alice/) and the dark theme: with idle_timeout
    12s and warn_before 8s, an idle kernel brings a warning notification; its "Keep alive"
    action pushes the cull back (the REST model's next cull moves later), and when the kernel
    is finally culled a notification says it was idle too long."""
    make_kernelspec("hopx-short", idle_timeout="12s", warn_before="8s", cull_interval="1s")
    path = write_notebook(lab, "idle.ipynb", "hopx-short")
    page = open_notebook(browser, lab, path, "idle")
    assert run_first_cell(page).strip() == "42"
    kernel_id = only_kernel(lab)
    assert "/user/alice/" in page.url
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
    expect(page.locator(".hopx-SandboxStatus")).to_contain_text("idle cull in", timeout=UI_TIMEOUT)

    warning = page.locator(".Toastify__toast", has_text="idle cull in").first
    expect(warning).to_be_visible(timeout=UI_TIMEOUT)
    shoot(page, "06-cull-warning")
    before: dict[str, Any] = lab.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    warning.get_by_role("button", name="Keep alive").click()
    expect(page.locator(".Toastify__toast", has_text="Kept alive").first).to_be_visible(
        timeout=UI_TIMEOUT
    )
    after: dict[str, Any] = lab.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()
    assert after["extended_until"] is not None
    assert after["next_cull"]["at"] > before["next_cull"]["at"]
    shoot(page, "07-kept-alive")

    culled = page.locator(".Toastify__toast", has_text="was culled").first
    expect(culled).to_contain_text("idle", timeout=60_000)
    assert lab.api("GET", "/api/kernels").json() == []
    shoot(page, "08-culled-notification")
    page.close()


def test_a_page_opened_after_the_warning_went_out_still_shows_it(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """The server sends a cull warning once. A Lab page that was not open then (or whose event
    stream was reconnecting) shows it from the sandbox list instead, without touching the
    kernel."""
    make_kernelspec("hopx-late", idle_timeout="40s", warn_before="34s", cull_interval="1s")
    path = write_notebook(lab, "late.ipynb", "hopx-late")
    page = open_notebook(browser, lab, path, "first")
    assert run_first_cell(page).strip() == "42"
    kernel_id = only_kernel(lab)
    page.close()

    def warned() -> bool:
        cull = lab.api("GET", f"/hopx/api/sandboxes/{kernel_id}").json()["next_cull"]
        return cull is not None and 0 < cull["in_seconds"] <= 34

    assert wait_until(warned, 30)
    late = browser.new_page(viewport={"width": 1400, "height": 900})
    late.goto(f"{lab.url}/lab/workspaces/late/tree/notebooks?reset&token={lab.token}")
    warning = late.locator(".Toastify__toast", has_text="idle cull in").first
    expect(warning).to_be_visible(timeout=UI_TIMEOUT)
    expect(warning).to_contain_text("late.ipynb")
    shoot(late, "09-late-page-warning")
    late.close()


def test_a_start_error_shows_the_fix_in_full(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """A Hopx kernel that cannot start (workspace = "rw" on a folder owned by root) brings
    JupyterLab's "Error Starting Kernel" dialog, whose message starts with what to do and wraps
    inside the dialog: none of it is cut off or needs scrolling sideways."""
    make_kernelspec("hopx-rw", workspace="rw")
    path = write_notebook(lab, "refused.ipynb", "hopx-rw")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{lab.url}/lab/workspaces/refused/tree/{path}?reset&token={lab.token}")
    dialog = page.locator(".jp-Dialog", has_text="Error Starting Kernel")
    message = dialog.locator(".jp-Dialog-body pre").first
    expect(message).to_contain_text("it is owned by root", timeout=UI_TIMEOUT)
    shoot(page, "lab-start-error-dialog")
    text = message.inner_text()
    assert text.startswith("Set workspace = 'ro', or give "), text
    assert "Hopx could not start a sandbox for kernel" in text
    fits = message.evaluate(
        "pre => { const body = pre.closest('.jp-Dialog-body');"
        " const box = pre.getBoundingClientRect(), room = body.getBoundingClientRect();"
        " return {overflow: pre.scrollWidth - pre.clientWidth,"
        " bodyOverflow: body.scrollWidth - body.clientWidth,"
        " right: box.right - room.right}; }"
    )
    assert fits["overflow"] <= 0, fits
    assert fits["bodyOverflow"] <= 0, fits
    assert fits["right"] <= 1, fits
    assert lab.api("GET", "/api/kernels").json() == []
    page.close()


FETCH_CELL = """import urllib.error, urllib.request
print(len(urllib.request.urlopen("http://{allowed}/bytes/40000", timeout=20).read()))
try:
    urllib.request.urlopen("http://{refused}/", timeout=20)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())"""


def test_the_sandboxes_panel_shows_outbound_connections(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """A notebook whose kernelspec allows one address fetches from it and from another: the
    notebook shows the refusal's reason, and the sandbox's card its totals and both attempts,
    the refused one marked."""
    allowed, refused = "151.101.0.40", "151.101.0.41"
    make_kernelspec("hopx-net", network_allow=[f"{allowed}:80"])
    path = write_notebook(lab, "net.ipynb", "hopx-net")
    nb = nbformat.read(lab.root / path, as_version=4)
    nb.cells[0].source = FETCH_CELL.format(allowed=allowed, refused=refused)
    nbformat.write(nb, lab.root / path)
    with serve_at(allowed, WEB_SERVER, allowed):
        page = open_notebook(browser, lab, path, "net")
        output = run_first_cell(page)
    assert "40000" in output
    assert f"403 Hopx sandbox: connection refused: no rule allows {refused} port 80" in output

    open_sandboxes_panel(page)
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{only_kernel(lab)}"]')
    # 40000 bytes of body, and the response's headers.
    expect(card.locator(".hopx-SandboxCard-networkTotals")).to_have_text(
        re.compile(r"^network: 1 allowed · 1 denied · ↓39\.\d KiB ↑\d+ B$"), timeout=UI_TIMEOUT
    )
    connections = card.locator(".hopx-SandboxCard-connection")
    expect(connections).to_have_count(2)
    expect(connections.nth(0)).to_have_text(
        f"{refused}:80 (http): no rule allows {refused} port 80"
    )
    expect(connections.nth(0)).to_have_attribute("data-decision", "denied")
    expect(connections.nth(1)).to_have_text(re.compile(rf"^{allowed}:80 ↓39\.\d KiB ↑\d+ B$"))
    shoot(page, "06-sandbox-network")
    page.close()


# A web app a notebook starts: a page whose script loads data from the app, posts it back as
# JSON (a CORS preflight from the page's own origin) and shows the answer, and says whether it
# could read the Jupyter server's cookies or API.
APP_CELL = '''
import http.server, json, threading
SCRIPT = """
let cookies;
try { cookies = "cookies: " + (document.cookie || "none"); }
catch (e) { cookies = "cookies: blocked"; }
document.getElementById("cookies").textContent = cookies;
fetch("data.json").then(r => r.json())
  .then(d => fetch("echo", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify(d)}))
  .then(r => r.json())
  .then(d => { document.getElementById("answer").textContent = d.greeting; },
        e => { document.getElementById("answer").textContent = "failed: " + e; });
fetch("/user/alice/api/kernels").then(r => "api: " + r.status, () => "api: blocked")
  .then(t => { document.getElementById("api").textContent = t; });
"""
PAGES = {
    "/": ("text/html", "<!doctype html><title>notebook app</title><p id=answer>waiting</p>"
                       "<p id=cookies></p><p id=api></p><script src='app.js'></script>"),
    "/app.js": ("text/javascript", SCRIPT),
    "/data.json": ("application/json", json.dumps({"greeting": "hello from the sandbox"})),
}

class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        kind, body = PAGES[self.path]
        self._send(kind, body.encode())

    def do_POST(self):
        self._send("application/json", self.rfile.read(int(self.headers["Content-Length"])))

    def _send(self, kind, body):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

app = http.server.ThreadingHTTPServer(("127.0.0.1", 8050), App)
threading.Thread(target=app.serve_forever, daemon=True).start()
print("serving")
'''


@pytest.mark.parametrize("server_args", [["--ServerApp.base_url=/user/alice/"]])
def test_a_notebooks_web_app_opens_from_the_sandboxes_panel(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """Under JupyterHub's /user/<name>/ prefix: a notebook starts a web app; its port shows on
    the sandbox's card; "Open" shows the app in a new tab, whose script loads and posts data to
    the app but cannot read the Jupyter session's cookies or call its API; "Copy share link"
    copies a link that works without a login."""
    make_kernelspec("hopx-app")
    path = write_notebook(lab, "app.ipynb", "hopx-app")
    nb = nbformat.read(lab.root / path, as_version=4)
    nb.cells[0].source = APP_CELL
    nbformat.write(nb, lab.root / path)
    page = open_notebook(browser, lab, path, "app")
    assert "serving" in run_first_cell(page)

    open_sandboxes_panel(page)
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{only_kernel(lab)}"]')
    port = card.locator('.hopx-SandboxCard-port[data-port="8050"]')
    expect(port).to_contain_text("port 8050", timeout=UI_TIMEOUT)
    shoot(page, "07-app-port")

    with page.context.expect_page(timeout=UI_TIMEOUT) as opened:
        port.locator(".hopx-SandboxCard-open").click()
    app_page = opened.value
    expect(app_page.locator("#answer")).to_have_text("hello from the sandbox", timeout=UI_TIMEOUT)
    expect(app_page.locator("#cookies")).to_have_text("cookies: blocked")
    expect(app_page.locator("#api")).to_have_text(re.compile(r"^api: (blocked|403)$"))
    assert "/user/alice/hopx/share/" in app_page.url
    shoot(app_page, "08-app-opened")
    app_page.close()

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    port.locator(".hopx-SandboxCard-share").click()
    expect(page.locator(".jp-toast-message, .Toastify__toast-body").first).to_contain_text(
        "Share link to port 8050 copied", timeout=UI_TIMEOUT
    )
    link = page.evaluate("navigator.clipboard.readText()")
    assert link.startswith(f"{lab.url}/hopx/share/"), link
    anonymous = requests.get(f"{link}data.json", timeout=30)
    assert anonymous.json() == {"greeting": "hello from the sandbox"}
    page.close()


@pytest.mark.parametrize("server_args", [["--ServerApp.base_url=/user/alice/"]])
def test_a_bokeh_app_opens_through_a_link_made_in_the_sandboxes_panel(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str]
) -> None:
    """An app that must be told its prefix at its start: "Link for an app…" on the sandbox's
    card makes a share link for a port nothing listens on yet and shows the prefix; a Bokeh
    server started in the sandbox with it opens at the link in a browser without a Jupyter
    session, and its button's callback runs in the sandbox (the page's websocket works through
    the link)."""
    make_kernelspec("hopx-bokeh")
    path = write_notebook(lab, "bokeh.ipynb", "hopx-bokeh")
    page = open_notebook(browser, lab, path, "bokeh")
    open_sandboxes_panel(page)
    kernel_id = only_kernel(lab)
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{kernel_id}"]')
    card.locator(".hopx-SandboxCard-appLink").click()
    asked = page.locator(".jp-Dialog")
    asked.locator("input").fill(str(BOKEH_PORT))
    asked.locator(".jp-mod-accept").click()
    prefix = page.locator(".hopx-AppLink-prefix")
    expect(prefix).to_contain_text("/user/alice/hopx/share/", timeout=UI_TIMEOUT)
    shoot(page, "09-app-link")
    app_prefix = prefix.inner_text()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator(".jp-Dialog .jp-mod-accept").click()
    link = page.evaluate("navigator.clipboard.readText()")
    assert link == f"{lab.url.split('/user/')[0]}{app_prefix}/", link

    _, stdout = lab.connect(kernel_id).execute(start_bokeh_cell(app_prefix), timeout=120)
    assert "serving" in stdout, stdout
    # In a browser context of its own: no Jupyter session, only the link.
    app_page = browser.new_page()
    app_page.goto(f"{link}ask")
    expect(app_page.get_by_text("waiting")).to_be_visible(timeout=UI_TIMEOUT)
    app_page.get_by_role("button", name="Ask the kernel").click()
    expect(app_page.get_by_text("answered in the sandbox")).to_be_visible(timeout=UI_TIMEOUT)
    shoot(app_page, "10-bokeh-app")
    app_page.close()
    page.close()


def test_a_secret_printed_in_lab_is_masked_in_the_page_and_the_saved_notebook(
    lab: Server,
    browser: Browser,
    make_kernelspec: Callable[..., str],
    tmp_path: Path,
) -> None:
    """A cell prints a secret, and shows it as a result: the page shows `[secret API_KEY]`, the
    notebook saved by Lab holds no value, and the Sandboxes panel names the secret."""
    value = f"sk-{secrets.token_hex(12)}"
    (tmp_path / "api_key").write_text(value)
    make_kernelspec("hopx-secret", secrets={"API_KEY": f"file:{tmp_path / 'api_key'}"})
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-secret", "display_name": "S", "language": "python"}
    nb.cells.append(
        nbformat.v4.new_code_cell("import os\nprint(os.environ['API_KEY'])\nos.environ['API_KEY']")
    )
    nbformat.write(nb, lab.root / "notebooks" / "secret.ipynb")
    page = open_notebook(browser, lab, "notebooks/secret.ipynb", "secret")
    run_first_cell(page)
    outputs = page.locator(".jp-OutputArea-output")
    expect(outputs).to_have_count(2, timeout=UI_TIMEOUT)
    expect(outputs.nth(0)).to_have_text("[secret API_KEY]")
    expect(outputs.nth(1)).to_have_text("'[secret API_KEY]'")

    open_sandboxes_panel(page)
    card = page.locator(f'.hopx-SandboxCard[data-kernel-id="{only_kernel(lab)}"]')
    expect(card.locator(".hopx-SandboxCard-secrets")).to_have_text(
        "secrets API_KEY", timeout=UI_TIMEOUT
    )
    shoot(page, "30-secret-masked")
    assert value not in page.content()

    saved_before = (lab.root / "notebooks" / "secret.ipynb").stat().st_mtime_ns
    page.locator(".jp-NotebookPanel").first.click()
    page.keyboard.press("Control+s")
    path = lab.root / "notebooks" / "secret.ipynb"
    assert wait_until(lambda: path.stat().st_mtime_ns != saved_before, 30)
    saved = path.read_text()
    assert saved.count("[secret API_KEY]") == 2, saved
    assert value not in saved
    page.close()
