"""Browser fixtures and helpers: Debian's Chromium driven by Playwright, and a JupyterLab server
with no news pop-up, fresh workspaces and a chosen theme.

Screenshots go to artifacts/browser/ (kept by CI).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from server_harness import Server

SCREENSHOTS = Path(__file__).parent.parent / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# A generous bound for anything the UI does (it polls the API every 5 s).
UI_TIMEOUT = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: scripts/bootstrap installs it (apt install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def theme() -> str:
    """The JupyterLab theme; parametrize to change it."""
    return "JupyterLab Light"


@pytest.fixture
def lab(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    theme: str,
    server_args: list[str],
) -> Server:
    """A Jupyter server (with JupyterLab, started with `server_args`) whose Lab has no news
    pop-up, fresh workspaces, every notebook cell rendered and the given theme."""
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    # Every cell rendered, not only those in view: tests look at outputs anywhere in a notebook.
    notebook = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "lab-settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "lab-workspaces"))
    server: Server = request.getfixturevalue("server")
    return server


def write_notebook(server: Server, name: str, kernel: str) -> str:
    """A one-cell notebook in the server's notebooks/ folder using `kernel`; its API path."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell("print(6 * 7)"))
    nbformat.write(nb, server.root / "notebooks" / name)
    return f"notebooks/{name}"


def open_notebook(browser: Browser, server: Server, path: str, workspace: str) -> Page:
    """Open `path` in a fresh Lab workspace and wait until its kernel is idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={server.token}")
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
    expect(
        page.locator('.jp-NotebookPanel .jp-DebuggerBugButton[aria-disabled="false"]')
    ).to_have_count(1, timeout=60_000)
    return page


def run_first_cell(page: Page) -> str:
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    expect(output).to_be_visible(timeout=UI_TIMEOUT)
    return output.inner_text()


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(600)  # let notifications finish sliding in
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
