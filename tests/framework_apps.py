"""A real web framework's app for the proxy tests: a Bokeh server app whose button asks the
kernel's side for an answer, and the cell that starts it as a notebook would."""

from __future__ import annotations

import textwrap

BOKEH_PORT = 5006

# A Bokeh app whose button asks the kernel's side for an answer.
BOKEH_APP = textwrap.dedent(
    """
    from bokeh.io import curdoc
    from bokeh.layouts import column
    from bokeh.models import Button, Div

    answer = Div(text="waiting", css_classes=["hopx-answer"])
    button = Button(label="Ask the kernel", css_classes=["hopx-ask"])

    def asked():
        answer.text = "answered in the sandbox"

    button.on_click(asked)
    curdoc().add_root(column(button, answer))
    """
)


def start_bokeh_cell(prefix: str) -> str:
    """A cell that starts `bokeh serve` under `prefix` on the sandbox's loopback and prints
    "serving" once it answers."""
    return textwrap.dedent(
        f"""
        import pathlib, subprocess, sys, tempfile, time, urllib.request
        app = pathlib.Path(tempfile.mkdtemp()) / "ask.py"
        app.write_text({BOKEH_APP!r})
        bokeh = subprocess.Popen(
            [sys.executable, "-m", "bokeh", "serve", str(app), "--port", "{BOKEH_PORT}",
             "--address", "127.0.0.1", "--prefix", {prefix!r}],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                urllib.request.urlopen("http://127.0.0.1:{BOKEH_PORT}{prefix}/ask", timeout=5)
                print("serving")
                break
            except OSError:
                time.sleep(0.1)
        """
    )
