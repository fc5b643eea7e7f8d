"""Rendering in the browser: how long JupyterLab takes to show a saved notebook's outputs when
the notebook is a Hopx kernel's (its outputs render in sandboxed frames) and when it is the stock
kernel's (they render in the page), in headless Chromium.

Two notebooks, each saved twice with its outputs, once with a Hopx kernelspec and once with
`python3`: one of 50 outputs of the kinds notebooks are full of (printed text, pandas tables, PNG
plots, Markdown, HTML snippets, values), and one Plotly figure. They are signed (`jupyter
trust`), as a notebook the user saved is, so the stock page renders the HTML unsanitized.

How one sample is taken:
- A fresh page (of one browser profile, so both kernels share a warm HTTP cache) loads
  JupyterLab with a reset workspace and waits for it to be restored and settled: no sample
  finds what another notebook left in the page, and none includes loading JupyterLab.
- The clock starts in the page (`performance.now()`) as it runs `docmanager:open` with a kernel
  preference that starts no kernel: rendering the saved outputs is timed, not a kernel start
  competing for the CPU.
- At every animation frame the page checks whether the notebook shows everything: its 50 (or 1)
  `.jp-OutputArea-output` elements each filled by their renderer, every image loaded, the
  pandas tables' rows and the figure's `.main-svg` that are not in frames (in the page, or in
  the shadow roots of Hopx's inert outputs); for Hopx, every output frame has reported its
  height and has been given it. The clock stops at the
  first such check or, if later, at the last height report of any of the notebook's frames
  (a frame reports its height when its content is parsed, rendered or resized), so a sample is
  exact to about one display frame (17 ms) for both kernels.
- Off the clock, the Hopx frames are looked into: each shows its content (the figure's
  `.main-svg`, any table rows) and is as tall as it. Nothing is attached to the
  frames before (see benchmarks/chromium.py: Playwright would add its own cost to each frame).
The kernels alternate (stock, Hopx, stock, Hopx, ...) after one warm-up round.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.chromium import Chromium, Frame, Page
from benchmarks.kernels import HOPX, STOCK, jupyter_path, kernelspecs
from benchmarks.servers import free_port
from benchmarks.stats import Metric, Samples

# The stock notebooks name the kernelspec every Jupyter has.
STOCK_KERNELSPEC = "python3"
KERNELS = (STOCK, HOPX)

OUTPUTS = Metric("open a notebook of 50 outputs → rendered", "s")
PLOTLY = Metric("open a Plotly figure → rendered", "s")
METRICS = [OUTPUTS, PLOTLY]

# Seconds to wait for a server, a page or a rendering: far beyond any real one.
TIMEOUT = 60.0
# After JupyterLab says it is restored it still lists files and fetches settings: let that end.
SETTLE = 1.0
TABLE_ROWS = 15  # rows of each pandas table


@dataclass(frozen=True)
class Expected:
    """What the page must show before a notebook counts as rendered."""

    outputs: int  # .jp-OutputArea-output elements
    rows: int  # rows of pandas tables (table.dataframe tbody tr) not in frames
    plots: int  # Plotly figures drawn (their .main-svg) not in frames
    frames: int  # Hopx output frames (the outer iframes the page holds); 0 for stock
    inert: int  # Hopx outputs shown in the page as inert content; 0 for stock
    framed_rows: int  # table rows inside the frames
    framed_plots: int  # figures drawn inside the frames


@dataclass(frozen=True)
class RenderCase:
    """One notebook, saved for each kernel."""

    metric: Metric
    paths: dict[str, str]  # kernel → path under the server's root
    expected: dict[str, Expected]


# --- The notebooks -------------------------------------------------------------------------------


def _png(seed: int) -> str:
    """A line plot as matplotlib's inline backend makes it (PNG at 100 dpi), base64."""
    import matplotlib as mpl  # noqa: PLC0415 - only the render benchmark draws

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    xs = [i / 10 for i in range(200)]
    axes.plot(xs, [((x * (seed + 1)) % 7) - 3 + (x / 20) for x in xs])
    axes.set_title(f"run {seed}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(seed: int) -> dict[str, str]:
    """A pandas DataFrame's execute_result bundle: its HTML table and its text."""
    import pandas as pd  # type: ignore[import-untyped]  # noqa: PLC0415

    frame = pd.DataFrame(
        {
            "city": [f"city {seed}-{i}" for i in range(TABLE_ROWS)],
            "people": [1000 * (i + 1) * (seed + 3) for i in range(TABLE_ROWS)],
            "area km²": [round(12.5 * (i + seed + 1), 1) for i in range(TABLE_ROWS)],
            "share": [(i * 7 + seed) % 100 / 100 for i in range(TABLE_ROWS)],
            "growth": [((i * 13 + seed) % 21 - 10) / 1000 for i in range(TABLE_ROWS)],
        }
    )
    return {"text/html": str(frame._repr_html_()), "text/plain": repr(frame)}


def _markdown(seed: int) -> str:
    return (
        f"## Result {seed}\n\n"
        f"The model converged after **{40 + seed} epochs**, with a validation loss of "
        f"`{0.123 + seed / 1000:.4f}`.\n\n"
        "- data: `measurements.parquet`, 12 340 rows\n"
        "- features: *temperature*, *pressure*, *humidity*\n"
        "- see [the method](https://example.org/method) for details\n\n"
        "| split | rows |\n|---|---:|\n| train | 9 872 |\n| test | 2 468 |\n"
    )


def _html(seed: int) -> str:
    snippets = [
        '<div style="padding:6px 10px;border-left:4px solid #e69500;background:#fff6e5">'
        f"<b>Warning</b>: 3 of {seed + 100} rows had missing values and were dropped.</div>",
        f'<progress value="{seed + 60}" max="100"></progress> <span>{seed + 60}% done</span>',
        "<details><summary>Parameters</summary><ul><li>learning rate: 0.01</li>"
        f"<li>batch size: {32 * (seed + 1)}</li><li>seed: {seed}</li></ul></details>",
        '<p>Saved <a href="results.csv" download>results.csv</a> '
        f"(<code>{seed + 12} kB</code>).</p>",
        f'<h4 style="margin:0">Summary {seed}</h4><p style="color:#555">mean <b>4.2</b>, '
        "median <b>3.9</b>, p95 <b>9.7</b></p>",
    ]
    return snippets[seed % len(snippets)]


def _stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def _display(data: dict[str, str]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _result(data: dict[str, str]) -> dict[str, Any]:
    """An execute_result; its cell gives it its execution count."""
    return {"output_type": "execute_result", "data": data, "metadata": {}, "execution_count": None}


def _cell(number: int, source: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    for output in outputs:
        if output["output_type"] == "execute_result":
            output["execution_count"] = number
    return {
        "cell_type": "code",
        "id": f"cell-{number}",
        "execution_count": number,
        "metadata": {},
        "source": source,
        "outputs": outputs,
    }


def outputs_cells() -> list[dict[str, Any]]:
    """30 code cells with 50 outputs: 20 printed (stdout), 10 pandas tables, 5 PNG plots,
    5 Markdown, 5 HTML snippets and 5 plain values; the first 20 cells print, then show one
    rich output each."""
    rich = [_result(_table(i)) for i in range(10)]
    for i in range(5):
        rich += [
            _display({"image/png": _png(i), "text/plain": "<Figure size 640x480 with 1 Axes>"}),
            _display({"text/markdown": _markdown(i), "text/plain": "<IPython.display.Markdown>"}),
            _display({"text/html": _html(i), "text/plain": "<IPython.display.HTML object>"}),
            _result({"text/plain": repr({"run": i, "loss": [0.5 / (k + 1) for k in range(8)]})}),
        ]
    cells = []
    for i, output in enumerate(rich):
        printed = "".join(f"epoch {e}/5 loss={1 / (e + i + 1):.4f}\n" for e in range(1, 6))
        outputs = [_stream(printed), output] if i < 20 else [output]
        cells.append(_cell(i + 1, f"step({i})", outputs))
    return cells


def plotly_cells() -> list[dict[str, Any]]:
    """One cell showing a small Plotly figure, with the bundle plotly's notebook renderer
    displays: the figure as JSON, and its HTML (without the MathJax script the renderer would
    take from a CDN: neither kernel's page renders this HTML, both pick the figure's JSON)."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]  # noqa: PLC0415
    import plotly.io as pio  # type: ignore[import-untyped]  # noqa: PLC0415

    figure = go.Figure()
    xs = list(range(60))
    figure.add_scatter(x=xs, y=[(x * x) % 37 for x in xs], mode="lines+markers", name="a")
    figure.add_bar(x=xs, y=[(x * 11) % 23 for x in xs], name="b")
    figure.update_layout(title="A small Plotly figure")
    bundle = dict(pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict()))
    bundle["text/html"] = pio.to_html(
        figure, include_plotlyjs=False, include_mathjax=False, full_html=False
    )
    bundle["text/plain"] = "Figure({...})"
    return [_cell(1, "figure", [_display(bundle)])]


def write_notebooks(root: Path, data_dir: Path) -> list[RenderCase]:
    """Both notebooks, saved for each kernel and signed (`jupyter trust`) for the server's
    data directory: a notebook the user saved is trusted, its outputs render as they came."""
    kernelspec = {STOCK: STOCK_KERNELSPEC, HOPX: HOPX}
    cases = []
    # Outputs, table rows and figures, and how Hopx shows them: its tables, Markdown and HTML
    # are inert (the extension's inertContent.ts), so they are rebuilt in the page; the Plotly
    # figure runs plotly.js, in a frame; text and PNG images are JupyterLab's own renderers'.
    for metric, stem, cells, expected in (
        (OUTPUTS, "outputs", outputs_cells(), (50, 10 * TABLE_ROWS, 0, 0, 10 + 5 + 5)),
        (PLOTLY, "plotly", plotly_cells(), (1, 0, 1, 1, 0)),
    ):
        outputs, rows, plots, frames, inert = expected
        paths = {}
        for kernel, name in kernelspec.items():
            paths[kernel] = f"{stem}-{kernel}.ipynb"
            spec = {"name": name, "display_name": name, "language": "python"}
            nb = {
                "cells": cells,
                "metadata": {"kernelspec": spec, "language_info": {"name": "python"}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
            (root / paths[kernel]).write_text(json.dumps(nb, indent=1))
        cases.append(
            RenderCase(
                metric,
                paths,
                {
                    STOCK: Expected(outputs, rows, plots, 0, 0, 0, 0),
                    # What the frames show is looked at off the clock: here, the figure.
                    HOPX: Expected(outputs, rows, 0, frames, inert, 0, plots),
                },
            )
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbformat.sign",
            *(str(root / p) for c in cases for p in c.paths.values()),
        ],
        env={**os.environ, "JUPYTER_DATA_DIR": str(data_dir)},
        capture_output=True,
        check=True,
        timeout=TIMEOUT,
    )
    return cases


# --- The server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    url: str
    token: str


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own server
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def lab_server(root: Path, data_dir: Path, kernels_path: str, log: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a token, serving `root`: no news, every cell rendered (no
    windowing), fresh settings, workspaces and configuration, `window.jupyterapp` exposed for
    the page to open notebooks with. Stopped with SIGTERM, then SIGKILL."""
    home = root.parent
    settings = home / "lab-settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"})
    )
    for folder in ("config", "runtime"):
        (home / folder).mkdir()
    token = secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(data_dir),
        "JUPYTER_PATH": kernels_path,
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--allow-root",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not _answers(f"{url}/api/status?token={token}"):
            if process.poll() is not None or time.monotonic() > deadline:
                msg = f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            time.sleep(0.1)
        yield Lab(url, token)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- The browser ---------------------------------------------------------------------------------

# Installed in a JupyterLab page before it opens a notebook (nothing is added to any output
# frame): `hopxBench.open(path, expected)` opens the notebook and starts the clock; `firstPass`
# is when the page first shows everything, `done()` is that or, if later, when the last size
# report of an output frame of the notebook reached the page.
BENCH = """() => {
  const bench = (window.hopxBench = { started: null, firstPass: null, lastMessage: 0 });
  const sizes = new Map(); // inner frame window -> { height, at }: its latest size report
  let expected = null;

  // An output's inner frame window (the one that reports sizes), once there is one.
  function innerWindow(iframe) {
    const outer = iframe.contentWindow;
    return outer && outer.length > 0 ? outer[0] : null;
  }

  // What the notebook still lacks, '' once everything is shown.
  function missing() {
    const panel = document.querySelector('.jp-NotebookPanel');
    if (!panel) { return 'no notebook panel'; }
    const outputs = panel.querySelectorAll('.jp-OutputArea-output');
    if (outputs.length !== expected.outputs) { return `${outputs.length} outputs`; }
    for (const output of outputs) {
      // A renderer fills its node once it has rendered.
      if (!output.hasChildNodes()) { return 'an empty output'; }
    }
    for (const img of panel.querySelectorAll('img[src]:not([src=""])')) {
      if (!img.complete || img.naturalWidth === 0) { return 'an image loading'; }
    }
    // The page itself, and the shadow roots Hopx's inert outputs are rebuilt in.
    const inert = Array.from(panel.querySelectorAll('.hopx-InertOutput'));
    if (inert.length !== expected.inert) { return `${inert.length} inert outputs`; }
    const roots = [panel];
    for (const output of inert) {
      if (!output.shadowRoot?.hasChildNodes()) { return 'an empty inert output'; }
      roots.push(output.shadowRoot);
    }
    const all = selector => roots.flatMap(root => Array.from(root.querySelectorAll(selector)));
    const rows = all('table.dataframe tbody tr').length;
    if (rows !== expected.rows) { return `${rows} table rows`; }
    const drawn = all('.js-plotly-plot').filter(plot => plot.querySelector('.main-svg')).length;
    if (drawn !== expected.plots) { return `${drawn} figures drawn`; }
    const iframes = panel.querySelectorAll('iframe.hopx-OutputFrame-frame');
    if (iframes.length !== expected.frames) { return `${iframes.length} output frames`; }
    for (const [index, iframe] of iframes.entries()) {
      const size = sizes.get(innerWindow(iframe));
      if (!size) { return `frame ${index} has reported no size`; }
      if (iframe.style.height !== size.height + 'px') {
        return `frame ${index} reported ${size.height} px, has ${iframe.style.height}`;
      }
    }
    void panel.offsetHeight; // laid out
    return '';
  }

  function tick() {
    if (missing() === '') {
      bench.firstPass = performance.now();
    } else {
      requestAnimationFrame(tick);
    }
  }

  bench.missing = () => (expected === null ? 'not opened' : missing());
  bench.done = () => {
    let done = bench.firstPass;
    const panel = document.querySelector('.jp-NotebookPanel');
    for (const iframe of panel.querySelectorAll('iframe.hopx-OutputFrame-frame')) {
      done = Math.max(done, sizes.get(innerWindow(iframe)).at);
    }
    return done;
  };
  bench.open = (path, what) => {
    expected = what;
    // After JupyterLab's own listener, which sets the frame's height from the same message.
    window.addEventListener('message', event => {
      const data = event.data;
      if (event.source && data && data.hopx === 'size' && typeof data.height === 'number') {
        const at = performance.now();
        sizes.set(event.source, { height: Math.ceil(data.height), at });
        bench.lastMessage = at;
      }
    });
    bench.started = performance.now();
    performance.mark('hopx-bench-start'); // where a performance trace finds the start
    window.jupyterapp.commands.execute('docmanager:open', {
      path,
      factory: 'Notebook',
      kernelPreference: { shouldStart: false, canStart: false }
    });
    requestAnimationFrame(tick);
  };
}"""

# What each inner output frame shows, looked at by Playwright off the clock.
FRAME_CONTENT = """({
  rows: document.querySelectorAll('table.dataframe tbody tr').length,
  plots: document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 ? 1 : 0,
  empty: !document.body.innerText.trim() && !document.querySelector('svg, img'),
  height: Math.ceil(document.body.getBoundingClientRect().height),
})"""
# A quiet spell after which no more size reports are expected from a notebook's frames (ms).
QUIET = 500


def _new_lab_page(browser: Chromium, lab: Lab) -> Page:
    """A fresh page with JupyterLab loaded, restored and settled, and no document open."""
    page = browser.new_page()
    page.navigate(f"{lab.url}/lab?reset&token={lab.token}")
    page.wait_for("window.jupyterapp !== undefined")
    page.evaluate("window.jupyterapp.restored.then(() => true)")
    time.sleep(SETTLE)
    page.evaluate(f"({BENCH})()")
    return page


def _inner_frames(page: Page) -> list[Frame]:
    """The inner frames of Hopx outputs: those two levels below the page."""
    return [f for f in page.frames() if f.parent is not None and f.parent.parent is None]


def _shown(page: Page, path: str, expected: Expected) -> None:
    """Off the clock, for a Hopx notebook: waits until every output frame shows its content
    (the tables' rows, the figure), then checks that the page gave each the height its content
    has."""
    if expected.frames == 0:
        return
    inner = _inner_frames(page)
    if len(inner) != expected.frames:
        msg = f"{path}: {len(inner)} inner output frames, expected {expected.frames}"
        raise RuntimeError(msg)
    deadline = time.monotonic() + TIMEOUT
    while True:
        shown = [frame.evaluate(FRAME_CONTENT) for frame in inner]
        rows, plots = sum(s["rows"] for s in shown), sum(s["plots"] for s in shown)
        empty = sum(s["empty"] for s in shown)
        if (rows, plots, empty) == (expected.framed_rows, expected.framed_plots, 0):
            break
        if time.monotonic() > deadline:
            msg = (
                f"{path}: the frames show {rows} table rows and {plots} figures "
                f"({empty} frames empty), expected {expected.framed_rows} and "
                f"{expected.framed_plots}"
            )
            raise RuntimeError(msg)
        time.sleep(0.05)
    page.wait_for(f"performance.now() - window.hopxBench.lastMessage > {QUIET}")
    for frame in inner:
        height = frame.evaluate(FRAME_CONTENT)["height"]
        assert frame.parent is not None
        given = frame.parent.evaluate("innerHeight")  # the outer frame fills its iframe
        if given != height:
            msg = f"{path}: an output frame is {given} px high for {height} px of content"
            raise RuntimeError(msg)


def time_rendering(browser: Chromium, lab: Lab, path: str, expected: Expected) -> float:
    """Seconds from asking a fresh JupyterLab page to open `path` to all its outputs rendered."""
    page = _new_lab_page(browser, lab)
    try:
        page.evaluate(f"window.hopxBench.open({json.dumps(path)}, {json.dumps(asdict(expected))})")
        try:
            page.wait_for("window.hopxBench.firstPass !== null")
        except TimeoutError as e:
            lacking = page.evaluate("window.hopxBench.missing()")
            msg = f"{path} did not render within {TIMEOUT:.0f} s: {lacking}"
            raise RuntimeError(msg) from e
        _shown(page, path, expected)
        done = page.evaluate("window.hopxBench.done() - window.hopxBench.started")
        return float(done) / 1000
    finally:
        page.close()


def labextension_build(browser: Chromium, lab: Lab) -> str:
    """Which build of the Hopx labextension the server gives pages (its entry point's name
    carries a hash of the build)."""
    page = browser.new_page()
    try:
        page.navigate(f"{lab.url}/lab?token={lab.token}")
        page.wait_for("document.getElementById('jupyter-config-data') !== null")
        load = page.evaluate(
            "(JSON.parse(document.getElementById('jupyter-config-data').textContent)"
            ".federated_extensions.find(x => x.name === 'hopx-kernel-labextension') || {}).load"
        )
        if not load:
            msg = "JupyterLab has no Hopx labextension here (see `jupyter labextension list`)"
            raise RuntimeError(msg)
        return str(load)
    finally:
        page.close()


def measure(runs: int, samples: Samples) -> dict[str, Any]:
    """`runs` samples per notebook and kernel, interleaved, after one warm-up round; returns
    what each notebook is made of and which build of the labextension rendered them."""
    with (
        kernelspecs() as specs,
        tempfile.TemporaryDirectory(prefix="hopx-bench-render-") as home,
    ):
        root, data_dir = Path(home) / "root", Path(home) / "data"
        root.mkdir()
        data_dir.mkdir()
        cases = write_notebooks(root, data_dir)
        with (
            lab_server(root, data_dir, jupyter_path(specs), Path(home) / "lab.log") as lab,
            Chromium() as browser,
        ):
            build = labextension_build(browser, lab)
            for case in cases:  # warm-up: HTTP cache, compiled scripts, the server's files
                for kernel in KERNELS:
                    time_rendering(browser, lab, case.paths[kernel], case.expected[kernel])
            for _ in range(runs):
                for case in cases:
                    for kernel in KERNELS:
                        seconds = time_rendering(
                            browser, lab, case.paths[kernel], case.expected[kernel]
                        )
                        samples.add(case.metric, kernel, seconds)
        return {
            "labextension": build,
            "notebooks": {
                case.metric.name: {
                    "outputs": case.expected[HOPX].outputs,
                    "hopx_output_frames": case.expected[HOPX].frames,
                    "hopx_inert_outputs": case.expected[HOPX].inert,
                    "notebook_bytes": (root / case.paths[HOPX]).stat().st_size,
                }
                for case in cases
            },
        }
