"""Inert content (labextension/src/inertContent.ts) in a real Chromium page: the rebuild that
lets a Hopx output show in the page itself refuses everything that could run script or load,
and what it does rebuild loads nothing even when it is live in the page.

The module is bundled on its own with the extension's esbuild and loaded into a blank page.
Every attack HTML is rebuilt, and whatever comes back is put in a shadow root of the live page;
a test HTTP server on another loopback address counts the requests that reach it. The same
HTML put in the page as written does reach it: the test can fail.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from conftest import wait_until

LABEXTENSION = Path(__file__).parent.parent / "labextension"
# A 1x1 PNG, as matplotlib's outputs carry theirs: data, loaded from nowhere.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def inert_module(tmp_path_factory: pytest.TempPathFactory) -> str:
    """inertContent.ts bundled as a script that defines `hopxInert`."""
    out = tmp_path_factory.mktemp("inert") / "inert.js"
    subprocess.run(
        [
            str(LABEXTENSION / "node_modules" / ".bin" / "esbuild"),
            str(LABEXTENSION / "src" / "inertContent.ts"),
            "--bundle",
            "--format=iife",
            "--global-name=hopxInert",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        check=True,
        timeout=60,
    )
    return out.read_text()


class Requests:
    """An HTTP server on 127.0.0.2 that records the path of every request."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def requests_seen() -> Iterator[Requests]:
    seen = Requests()
    yield seen
    seen.close()


@pytest.fixture
def page(browser: Browser, inert_module: str) -> Iterator[Page]:
    page = browser.new_page()
    page.set_content("<!DOCTYPE html><html><body></body></html>")
    page.add_script_tag(content=inert_module)
    # `rebuild(html)`: the rebuilt content in a new shadow root of the page, and whether there
    # was any; `asWritten(html)`: the HTML as it came, in a shadow root, for comparison.
    page.evaluate(
        """() => {
  function host() {
    const element = document.createElement('div');
    document.body.appendChild(element);
    return element.attachShadow({ mode: 'open' });
  }
  window.rebuild = html => {
    const content = hopxInert.inertHTML(html, document);
    if (!content) { return null; }
    const root = host();
    if (content.sheet) { root.adoptedStyleSheets = [content.sheet]; }
    root.appendChild(content.nodes);
    return root.innerHTML;
  };
  window.asWritten = html => { host().innerHTML = html; };
}"""
    )
    yield page
    page.close()


def attacks(a: str) -> dict[str, str]:
    """HTML that would load from `a` (or run script that does), each under its own path."""
    return {
        "img": f'<img src="{a}/img">',
        "srcset": f'<img src="{PIXEL}" srcset="{a}/srcset 1x">',
        "onerror": f'<img src="data:," onerror="new Image().src=\'{a}/onerror\'">',
        "style-url": f'<div style="background:url({a}/style-url);width:4px;height:4px"></div>',
        "style-escaped": (
            f'<div style="background-image:u\\72 l({a}/style-escaped);width:4px;height:4px">'
        ),
        "style-var": (
            f'<div style="--leak:url({a}/style-var)">'
            '<p style="background-image:var(--leak);width:4px;height:4px">x</p></div>'
        ),
        "style-image-set": f"<div style=\"background:image-set('{a}/style-image-set' 1x)\">x</div>",
        "style-cursor": f'<div style="cursor:url({a}/style-cursor),auto">x</div>',
        "style-list": f'<ul style="list-style-image:url({a}/style-list)"><li>x</li></ul>',
        "style-mask": f'<div style="mask-image:url({a}/style-mask);width:4px;height:4px">x</div>',
        "style-border": (
            f'<div style="border:4px solid;border-image:url({a}/style-border) 4">x</div>'
        ),
        "sheet-url": f"<style>p{{background:url({a}/sheet-url)}}</style><p>x</p>",
        "sheet-import": f"<style>@import url({a}/sheet-import);</style><p>x</p>",
        "sheet-font": (
            f"<style>@font-face{{font-family:leak;src:url({a}/sheet-font)}}"
            "p{font-family:leak}</style><p>x</p>"
        ),
        "sheet-media": f"<style>@media all{{p{{background:url({a}/sheet-media)}}}}</style><p>x</p>",
        "sheet-supports": (
            f"<style>@supports (display:grid){{p{{background:url({a}/sheet-supports)}}}}</style>"
            "<p>x</p>"
        ),
        "sheet-nested": (
            f"<style>div{{& p{{background:url({a}/sheet-nested)}}}}</style><div><p>x</p></div>"
        ),
        "sheet-layer": f"<style>@layer l{{p{{background:url({a}/sheet-layer)}}}}</style><p>x</p>",
        "sheet-var": (
            f"<style>div{{--leak:url({a}/sheet-var)}} p{{background-image:var(--leak)}}</style>"
            "<div><p>x</p></div>"
        ),
        "sheet-attribute": (
            "<style>p[data-secret^=a]{background:url(" + a + "/sheet-attribute)}</style>"
            '<p data-secret="abc">x</p>'
        ),
        "table-background": f'<table background="{a}/table-background"><tr><td>x</td></tr></table>',
        "td-background": f'<table><tr><td background="{a}/td-background">x</td></tr></table>',
        "svg-image": f'<svg><image href="{a}/svg-image" width="4" height="4"/></svg>',
        "math": f'<math><mi href="{a}/math">x</mi></math>',
        "video": f'<video poster="{a}/video"></video>',
        "audio": f'<audio src="{a}/audio" preload="auto"></audio>',
        "iframe": f'<iframe src="{a}/iframe"></iframe>',
        "object": f'<object data="{a}/object"></object>',
        "embed": f'<embed src="{a}/embed">',
        "link": f'<link rel="stylesheet" href="{a}/link">',
        "prefetch": f'<link rel="prefetch" href="{a}/prefetch">',
        "meta": f'<meta http-equiv="refresh" content="0;url={a}/meta">',
        "base": f'<base href="{a}/base/"><img src="relative">',
        "input": f"<input autofocus onfocus=\"new Image().src='{a}/input'\">",
        "details": f"<details open ontoggle=\"new Image().src='{a}/details'\"></details>",
        "form": f'<form action="{a}/form"><button>x</button></form>',
        "ping": f'<a href="{a}/ping-link" ping="{a}/ping">x</a>',
        "script": f"<script>new Image().src='{a}/script'</script>",
        "noscript": f'<noscript><p title="</noscript><img src={a}/noscript>"></p></noscript>',
        "template": f'<template><img src="{a}/template"></template>',
        "img-data-html": '<img src="data:text/html,<script>parent.pwned=1</script>">',
        # What JupyterLab's context menu and command links look for along an event's path.
        "command-link": f'<span data-commandlinker-command="help:open" data-x="{a}">x</span>',
        "application-class": '<div class="output jp-DirListing-item">x</div>',
    }


def test_nothing_that_loads_or_runs_script_is_rebuilt(page: Page, requests_seen: Requests) -> None:
    """Every attack HTML is refused (the output then goes to a frame), and nothing rebuilt
    loads; put in the page as written, the same HTML does load: the test can fail."""
    vectors = attacks(requests_seen.url)
    rebuilt = {
        name: page.evaluate("html => window.rebuild(html)", html) for name, html in vectors.items()
    }
    assert {name: html for name, html in rebuilt.items() if html is not None} == {}
    page.wait_for_timeout(1500)
    assert requests_seen.paths == []
    assert page.evaluate("window.pwned") is None

    # As written, in the very same page: the loads happen.
    for html in vectors.values():
        page.evaluate("html => window.asWritten(html)", html)
    # (A font a shadow root's sheet declares is never loaded: Chromium ignores @font-face there.)
    expected = {"/img", "/srcset", "/onerror", "/style-url", "/style-escaped", "/style-var"}
    expected |= {"/sheet-url", "/sheet-import", "/sheet-media", "/sheet-nested", "/sheet-var"}
    expected |= {"/table-background", "/svg-image", "/iframe", "/noscript"}
    loaded = wait_until(lambda: expected <= set(requests_seen.paths), 15)
    assert loaded, " ".join(sorted(requests_seen.paths))


def test_a_link_is_kept_as_text_and_leads_nowhere(page: Page, requests_seen: Requests) -> None:
    a = requests_seen.url
    rebuilt = page.evaluate(
        "html => window.rebuild(html)",
        f'see <a href="{a}/click" target="_blank" rel="noopener">the method</a> or '
        '<a href="javascript:window.pwned=1">this</a>',
    )
    assert rebuilt == "see <a>the method</a> or <a>this</a>"
    page.evaluate(
        "() => document.querySelectorAll('div').forEach("
        "d => d.shadowRoot.querySelectorAll('a').forEach(a => a.click()))"
    )
    page.wait_for_timeout(500)
    assert requests_seen.paths == []
    assert page.evaluate("window.pwned") is None


def test_what_notebooks_show_is_rebuilt_as_it_came(page: Page) -> None:
    """pandas tables (with their scoped style), a Styler's id-scoped rules, Markdown's HTML,
    status snippets with inline style, details, progress, data images: all rebuilt, with their
    text, structure, attributes and rules."""
    table = (
        "<div><style scoped>.dataframe tbody tr th:only-of-type{vertical-align:middle}"
        ".dataframe thead th{text-align:right}</style>"
        '<table border="1" class="dataframe"><thead><tr style="text-align: right;">'
        "<th></th><th>city</th><th>people</th></tr></thead><tbody>"
        "<tr><th>0</th><td>Lyon</td><td>522250</td></tr>"
        "<tr><th>1</th><td>Nantes</td><td>320732</td></tr></tbody></table></div>"
    )
    assert page.evaluate("html => window.rebuild(html)", table) == (
        '<div><table border="1" class="dataframe"><thead><tr style="text-align: right;">'
        "<th></th><th>city</th><th>people</th></tr></thead><tbody>"
        "<tr><th>0</th><td>Lyon</td><td>522250</td></tr>"
        "<tr><th>1</th><td>Nantes</td><td>320732</td></tr></tbody></table></div>"
    )
    # The scoped rules apply inside the shadow root: the header cells are right-aligned.
    aligned = page.evaluate(
        "() => getComputedStyle(Array.from(document.querySelectorAll('div')).pop()"
        ".shadowRoot.querySelector('thead th')).textAlign"
    )
    assert aligned == "right"

    styler = (
        '<style type="text/css">#T_ab12_row0_col1 { background-color: #fde725; color: #000000;'
        " }</style>"
        '<table id="T_ab12"><thead><tr><th class="blank level0" >&nbsp;</th>'
        '<th id="T_ab12_level0_col0" class="col_heading level0 col0" >a</th></tr></thead>'
        '<tbody><tr><th id="T_ab12_level0_row0" class="row_heading level0 row0" >0</th>'
        '<td id="T_ab12_row0_col1" class="data row0 col1" >1.5</td></tr></tbody></table>'
    )
    assert page.evaluate("html => window.rebuild(html)", styler) is not None
    colour = page.evaluate(
        "() => getComputedStyle(Array.from(document.querySelectorAll('div')).pop()"
        ".shadowRoot.querySelector('#T_ab12_row0_col1')).backgroundColor"
    )
    assert colour == "rgb(253, 231, 37)"

    kept = [
        '<div style="padding: 6px 10px; border-left: 4px solid rgb(230, 149, 0);">'
        "<b>Warning</b>: 3 rows dropped.</div>",
        '<progress value="61" max="100"></progress> <span>61% done</span>',
        '<details open=""><summary>Parameters</summary><ul><li>rate: 0.01</li></ul></details>',
        '<h2 id="result-1">Result 1</h2><p>converged after <strong>41 epochs</strong>, loss '
        "<code>0.1240</code>.</p><ul><li><em>temperature</em></li></ul>"
        '<table><thead><tr><th>split</th><th align="right">rows</th></tr></thead>'
        '<tbody><tr><td>train</td><td align="right">9 872</td></tr></tbody></table>',
        f'<img src="{PIXEL}" alt="a pixel" width="4">',
        "<pre>a\n  b</pre><hr><blockquote><p>q</p></blockquote>",
    ]
    for html in kept:
        assert page.evaluate("html => window.rebuild(html)", html) == html


def test_an_svg_without_script_is_shown_as_an_image_and_one_with_script_is_not(
    page: Page, requests_seen: Requests
) -> None:
    a = requests_seen.url
    plain = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
        '<rect width="40" height="20" fill="#08c"/>'
        f'<image href="{a}/svg-image" width="4" height="4"/><text y="15">é</text></svg>'
    )
    shown = page.evaluate(
        """svg => {
  const image = hopxInert.inertSVG(svg, document);
  document.body.appendChild(image);
  return new Promise(resolve => image.decode().then(
    () => resolve([image.src.slice(0, 26), image.naturalWidth]), () => resolve(['broken', 0])));
}""",
        plain,
    )
    assert shown == ["data:image/svg+xml;base64,", 40]
    for scripted in (
        plain.replace("<rect", f"<script>new Image().src='{a}/svg-script'</script><rect"),
        plain.replace("<rect", '<rect onload="1"'),
        plain.replace("<rect", "<foreignObject><p>x</p></foreignObject><rect"),
        "<svg><unclosed>",
        "<html>not svg</html>",
    ):
        assert page.evaluate("svg => hopxInert.inertSVG(svg, document)", scripted) is None
    page.wait_for_timeout(500)
    assert requests_seen.paths == []


def test_markdown_with_math_is_left_to_a_frame(page: Page) -> None:
    assert page.evaluate("() => hopxInert.hasMath('the mean is $\\\\mu$')")
    assert page.evaluate("() => hopxInert.hasMath('\\\\[x^2\\\\]')")
    assert page.evaluate("() => hopxInert.hasMath('\\\\begin{align}x\\\\end{align}')")
    assert not page.evaluate("() => hopxInert.hasMath('## Result 3\\n\\n**41 epochs**')")
