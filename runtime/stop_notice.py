"""Telling the kernel why it is being stopped, so the cell it is running ends with that reason.

Without this a papermill run that reaches its max lifetime would only say "Kernel died". An
IPython kernel gets a startup file that turns one real-time signal per reason into an exception
in the running cell, whose message says what happened; papermill then writes it into the output
notebook, and JupyterLab shows it under the cell. The supervisor sends the signal, waits a moment
for the owner to shut the kernel down cleanly, and only then escalates.

The hook is a courtesy, not a control: code in the sandbox may remove it, and the stop goes ahead
regardless.
"""

from __future__ import annotations

import signal

from runtime.spec import SANDBOX_HOME

# Reasons a running cell can be told about, each with its own signal (SIGRTMIN+1, +2, ...).
NOTICE_REASONS = ("idle", "max_lifetime", "manual")
STARTUP_FILE = f"{SANDBOX_HOME}/.ipython/profile_default/startup/00-hopx-stop-notice.py"


def notice_signal(reason: str) -> int:
    return int(signal.SIGRTMIN) + 1 + NOTICE_REASONS.index(reason)


_HOOK = '''\
"""Hopx: turn a stop notice from the sandbox supervisor into an error in the running cell."""


def _hopx_install_stop_notices(messages):
    import signal

    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    running = [False]

    class SandboxStopped(Exception):
        """Hopx is stopping this kernel's sandbox."""

    def on_notice(signum, frame):
        if running[0]:
            running[0] = False  # one error per cell, however many notices arrive
            raise SandboxStopped(messages[signum])

    def cell_started(*args):
        running[0] = True

    def cell_finished(*args):
        running[0] = False

    shell.events.register("pre_run_cell", cell_started)
    shell.events.register("post_run_cell", cell_finished)
    for signum in messages:
        signal.signal(signum, on_notice)


_hopx_install_stop_notices({messages!r})
del _hopx_install_stop_notices
'''


def startup_file(messages: dict[str, str]) -> bytes:
    """The IPython startup file for these reason -> message notices."""
    by_signal = {notice_signal(reason): text for reason, text in messages.items()}
    return _HOOK.format(messages=by_signal).encode()
