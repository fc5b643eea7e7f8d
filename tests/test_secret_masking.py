"""A secret's value does not leave the kernel in its output, nor reach the log: real kernels in
their sandboxes print, return, raise, display and echo their secrets in every way a notebook
would by accident, whole and in pieces, and what the kernel sends shows `[secret NAME]` instead;
what the kernel writes to the log, such as the traceback of a kernel that fails to start, is
masked by the supervisor. A value that is not a secret goes through untouched (the check can
see values)."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Kernel
from runtime.kernel_launcher import shown_forms


def odd_value(tag: str) -> str:
    """Unique, with regex metacharacters, HTML, quotes, unicode and a newline."""
    return f"{tag}-{secrets.token_hex(8)}.*+?^$[](){{}}|\\ <b>&'\" ünïcødé ✓\nsecond line"


def sent(kernel: Kernel, code: str) -> str:
    """Everything the kernel sent about running `code` (its output and its reply) as JSON, and
    its stream output joined, as a notebook saves it."""
    reply = kernel.run("import os\n" + code)[0]
    contents = [m["content"] for m in kernel.outputs]
    streams = "".join(c["text"] for c in contents if isinstance(c.get("text"), str))
    return json.dumps([*contents, reply, streams], ensure_ascii=False)


def edit_kernelspec(kernels_dir: Path, name: str, **changes: object) -> str:
    spec_file = kernels_dir / name / "kernel.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), **changes}))
    return name


# Each prints, returns or shows the variable KEY's value (and the same of PLAIN, not a secret).
CELLS = {
    "print": "import os\nprint(os.environ[{var!r}])",
    "result": "os.environ[{var!r}]",
    "repr in a list": "[os.environ[{var!r}]]",
    "to stderr": "import sys\nprint(os.environ[{var!r}], file=sys.stderr)",
    "in pieces": (
        "import sys, time\nvalue = os.environ[{var!r}]\n"
        "for i in range(0, len(value), 3):\n"
        "    sys.stdout.write(value[i : i + 3]); sys.stdout.flush(); time.sleep(0.02)\n"
    ),
    "error": "raise RuntimeError('failed with ' + os.environ[{var!r}])",
    "json": "import json\nprint(json.dumps({{'key': os.environ[{var!r}]}}))",
    "html": (
        "import html\nfrom IPython.display import HTML, display\n"
        "display(HTML('<td>' + html.escape(os.environ[{var!r}]) + '</td>'))"
    ),
    "shell": "!printenv {var}",
    "fd 1": "os.write(1, os.environ[{var!r}].encode())",
}


@pytest.mark.parametrize("cell", CELLS)
def test_a_secret_is_masked_in_everything_the_kernel_sends(
    start_kernel: Callable[..., Kernel],
    make_kernelspec: Callable[..., str],
    kernels_dir: Path,
    tmp_path: Path,
    cell: str,
) -> None:
    value, plain = odd_value("secret"), odd_value("plain")
    (tmp_path / "secret").write_text(value)
    name = make_kernelspec("masking", secrets={"KEY": f"file:{tmp_path / 'secret'}"})
    kernel = start_kernel(kernel_name=edit_kernelspec(kernels_dir, name, env={"PLAIN": plain}))

    # The same cell with a variable that is no secret: its value shows, so the check sees it.
    shown = sent(kernel, CELLS[cell].format(var="PLAIN"))
    assert any(form in shown for form in [*shown_forms(plain), *plain.splitlines()]), shown

    output = sent(kernel, CELLS[cell].format(var="KEY"))
    assert "[secret KEY]" in output, output
    for form in shown_forms(value):
        assert form not in output, output
    assert value.splitlines()[0] not in output  # not even its first line


def test_output_that_ends_with_the_start_of_a_secret_is_sent_at_the_cells_end(
    start_kernel: Callable[..., Kernel], tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("sk-live-0123456789")
    kernel = start_kernel(secrets={"KEY": f"file:{tmp_path / 'secret'}"})
    # Held back while it may be the start of the secret; sent before the cell ends.
    _, stdout = kernel.run("print('almost sk-live-01', end='')")
    assert stdout == "almost sk-live-01"
    # A secret split across two cells' output is not one text: each is sent as it is.
    _, stdout = kernel.run("print('23456789')")
    assert stdout == "23456789\n"


def test_a_secret_too_short_to_mask_is_given_with_a_warning(
    start_kernel: Callable[..., Kernel], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pin").write_text("4711")
    caplog.set_level(logging.WARNING)
    kernel = start_kernel(secrets={"PIN": f"file:{tmp_path / 'pin'}"})
    _, stdout = kernel.run("import os\nprint(os.environ['PIN'])")
    assert stdout == "4711\n"
    assert "the secrets PIN are shorter than 8 characters" in caplog.text
    assert "4711" not in caplog.text


def test_the_traceback_of_a_kernel_that_fails_to_start_is_masked_in_the_log(
    start_kernel: Callable[..., Kernel],
    make_kernelspec: Callable[..., str],
    kernels_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    value = odd_value("secret")
    (tmp_path / "secret").write_text(value)
    # A kernel command that writes its secret to stderr, which the supervisor passes to the
    # server's log, and dies before it answers.
    leaky = (
        "import os, sys; sys.stderr.write('leaking ' + os.environ['KEY'] + '\\n'); "
        "sys.stderr.flush(); sys.exit(3)"
    )
    name = make_kernelspec("leaky", secrets={"KEY": f"file:{tmp_path / 'secret'}"})
    edit_kernelspec(kernels_dir, name, argv=[sys.executable, "-c", leaky])
    with pytest.raises(RuntimeError, match="Kernel died"):
        start_kernel(kernel_name=name)
    log = capfd.readouterr().err
    assert "leaking [secret KEY]" in log, log
    for form in shown_forms(value):
        assert form not in log
    assert value.splitlines()[1] not in log
