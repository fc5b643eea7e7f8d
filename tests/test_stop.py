"""How a sandbox is stopped: the supervisor's escalation (stop notice, NOTICE_GRACE, SIGTERM,
TERMINATE_GRACE, SIGKILL) holds against a kernel that ignores each step, the reason is reported,
kernels that cannot show a notice get none, and a kernel stopped for its max lifetime is not
restarted, a restart not resetting that lifetime either.

Every kernel is a real ipykernel (or a plain program) in a real sandbox; bounds on time are
generous, and lower bounds only where the supervisor's own timers guarantee them.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_client.ioloop.manager import AsyncIOLoopKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from conftest import TEST_SETTINGS, Kernel, assert_no_leaks, wait_until
from hopx_kernel.kernelspec import kernelspec
from hopx_kernel.provisioner import HopxProvisioner
from hopx_kernel.restarter import PolicyAwareRestarter
from runtime.handle import SupervisorHandle
from runtime.stop_notice import NOTICE_REASONS, notice_signal
from runtime.supervisor import NOTICE_GRACE, TERMINATE_GRACE

StartKernel = Callable[..., Kernel]

# Room for the host to be slow, on top of what the supervisor's timers prescribe.
MARGIN = 10.0
STARTUP_FILE = "/home/sandbox/.ipython/profile_default/startup/00-hopx-stop-notice.py"

# A cell that shrugs off every step short of SIGKILL: it ignores SIGTERM and catches the stop
# notice's exception (printing it) to carry on.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
announced = False
while True:
    try:
        if not announced:
            announced = True
            print("stubborn", flush=True)
        time.sleep(0.05)
    except BaseException as e:
        print("caught", type(e).__name__, e, flush=True)
"""

# A cell that records, in the notebook folder, when the stop notice and SIGTERM arrive; it
# carries on after the notice and exits with status 7 on SIGTERM.
RECORDER = """
import os, signal, time
log = open("stop-log.txt", "a", buffering=1)
def on_sigterm(signum, frame):
    log.write("sigterm %r\\n" % time.time())
    os._exit(7)
signal.signal(signal.SIGTERM, on_sigterm)
try:
    print("recording", flush=True)
    while True:
        time.sleep(0.05)
except Exception as e:
    log.write("notice %r %s: %s\\n" % (time.time(), type(e).__name__, e))
while True:
    time.sleep(0.05)
"""


def provisioner_of(km: KernelManager) -> HopxProvisioner:
    provisioner = km.provisioner
    assert isinstance(provisioner, HopxProvisioner)
    return provisioner


def handle_of(kernel: Kernel) -> SupervisorHandle:
    supervisor = provisioner_of(kernel.km).supervisor
    assert supervisor is not None
    return supervisor


def stdout_until(kernel: Kernel, text: str, timeout: float) -> str:
    """Stdout the kernel prints (while a cell runs) until `text` appears or `timeout` passes;
    an error the cell ends with is added as a line "error: <ename>: <evalue>"."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream" and content["name"] == "stdout":
            seen += content["text"]
        elif msg["msg_type"] == "error":
            seen += f"error: {content['ename']}: {content['evalue']}\n"
    return seen


def sleep_until(when: float) -> None:
    """Sleep until the epoch time `when`."""
    time.sleep(max(0.0, when - time.time()))


def shut_down(kernel: Kernel, runtime_dir: Path) -> None:
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


@pytest.mark.parametrize(
    ("trigger", "reason", "notice"),
    [
        ("sigterm", "manual", "it was killed by hand"),
        ("max_lifetime", "max_lifetime", "it reached its maximum lifetime of 6s (max_lifetime)"),
        # The "terminate" command with a reason that has no notice goes straight to SIGTERM.
        ("terminate", "terminated", None),
    ],
)
def test_kernel_ignoring_notice_and_sigterm_is_still_stopped(
    trigger: str, reason: str, notice: str | None, start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """A kernel whose running cell catches the stop notice and ignores SIGTERM survives each of
    those steps (still running after the SIGTERM was due), yet is gone within NOTICE_GRACE +
    TERMINATE_GRACE + a margin of the stop: SIGKILL ends it. The reason is reported: "manual"
    for SIGTERM to the supervisor (`jupyter hopx kill`), "max_lifetime" for a 6s lifetime, the
    command's own reason for a "terminate" command (and no notice for it). The cell saw the
    notice's message when there was one, and nothing is left afterwards."""
    kernel = start_kernel(max_lifetime="6s" if trigger == "max_lifetime" else "1h")
    handle = handle_of(kernel)
    kernel.kc.execute(STUBBORN)
    assert "stubborn" in stdout_until(kernel, "stubborn", 30)

    if trigger == "max_lifetime":
        stop_at = handle.started_at + 6.0
        assert time.time() < stop_at, "the kernel took too long to start for this test"
    else:
        stop_at = time.time()
        if trigger == "sigterm":
            os.kill(handle.pid, signal.SIGTERM)
        else:
            handle.terminate()
    grace = (NOTICE_GRACE if notice else 0.0) + TERMINATE_GRACE

    # A notice comes at once; without one, watch for a second that nothing is caught.
    seen = stdout_until(kernel, "caught", max(0.0, stop_at - time.time()) + (3 if notice else 1))
    if notice:
        assert f"caught SandboxStopped Hopx stopped this kernel: {notice}" in seen, (
            seen,
            time.time() - stop_at,
            handle.exited,
        )
    else:
        assert "caught" not in seen
    # SIGTERM was due a while ago (right away, or after NOTICE_GRACE); the sandbox still runs.
    sleep_until(stop_at + grace - TERMINATE_GRACE + 1.5)
    assert handle.poll() is None, handle.exited
    assert kernel.km.is_alive()

    assert wait_until(lambda: handle.poll() is not None, stop_at + grace + MARGIN - time.time())
    ended = time.time()
    assert ended - stop_at >= grace - 0.05  # only SIGKILL ends it, and that comes this late
    assert ended - stop_at < grace + MARGIN
    assert handle.exit_reason == reason
    assert not kernel.km.is_alive()
    assert provisioner_of(kernel.km).last_exit_reason == reason
    assert provisioner_of(kernel.km).stopped_by_policy == (reason != "terminated")
    shut_down(kernel, runtime_dir)


def test_sigterm_follows_the_notice_only_after_notice_grace(
    start_kernel: StartKernel, workspace: Path, runtime_dir: Path
) -> None:
    """When nobody shuts the kernel down after the stop notice, its SIGTERM arrives no sooner
    than NOTICE_GRACE after the notice (and not much later). The kernel recorded both itself,
    in its read-write notebook folder: the notice as SandboxStopped with the reason's message,
    then SIGTERM, on which it exited with its own status 7, so no SIGKILL was needed."""
    kernel = start_kernel(workspace="rw")
    handle = handle_of(kernel)
    kernel.kc.execute(RECORDER)
    assert "recording" in stdout_until(kernel, "recording", 30)
    os.kill(handle.pid, signal.SIGTERM)
    assert wait_until(lambda: handle.poll() is not None, NOTICE_GRACE + TERMINATE_GRACE + MARGIN)

    lines = (workspace / "stop-log.txt").read_text().splitlines()
    assert len(lines) == 2, lines
    notice, sigterm = (line.split(" ", 2) for line in lines)
    assert notice[0] == "notice"
    assert notice[2] == "SandboxStopped: Hopx stopped this kernel: it was killed by hand."
    assert sigterm[0] == "sigterm"
    waited = float(sigterm[1]) - float(notice[1])
    assert waited >= NOTICE_GRACE - 0.1, waited
    assert waited < NOTICE_GRACE + 3.0, waited
    assert handle.exited["status"] == 7
    assert handle.exit_reason == "manual"
    shut_down(kernel, runtime_dir)


def test_a_bare_notice_ends_the_cell_but_not_the_kernel(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """The "notice" command alone (what the culler sends before its own shutdown) ends the
    running cell with SandboxStopped and the reason's message; no SIGTERM follows, the kernel
    keeps its state and runs the next cell. A second notice while no cell runs does nothing."""
    kernel = start_kernel(idle_timeout="20m")
    kernel.run("kept = 42")
    msg_id = kernel.kc.execute("import time\nprint('long', flush=True)\ntime.sleep(60)")
    assert "long" in stdout_until(kernel, "long", 30)
    provisioner_of(kernel.km).notify_kernel("idle")
    seen = stdout_until(kernel, "error", 30)
    assert seen == (
        "error: SandboxStopped: "
        "Hopx stopped this kernel: it was idle beyond its idle timeout of 20m.\n"
    )
    reply = kernel.kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "SandboxStopped"
    provisioner_of(kernel.km).notify_kernel("idle")
    time.sleep(NOTICE_GRACE + 1.0)
    assert kernel.km.is_alive()
    assert kernel.value("import json; print(json.dumps(kept))") == 42
    shut_down(kernel, runtime_dir)


def test_the_notice_hook_is_installed_in_ipykernels(start_kernel: StartKernel) -> None:
    """An ipykernel's sandbox has the stop-notice startup file, and the notice signals of all
    reasons have a Python handler in the kernel (not the default, which would kill it)."""
    kernel = start_kernel()
    assert set(handle_of(kernel).spec.stop_notices) == set(NOTICE_REASONS)
    signals = [notice_signal(reason) for reason in NOTICE_REASONS]
    seen = kernel.value(
        "import json, os, signal\n"
        f"print(json.dumps({{'file': os.path.exists({STARTUP_FILE!r}),\n"
        f"    'handled': [callable(signal.getsignal(s)) for s in {signals!r}]}}))"
    )
    assert seen == {"file": True, "handled": [True, True, True]}


# A kernel that is no ipykernel: it records whether the notice hook is there and when SIGTERM
# comes, in its read-write folder. A notice signal (real-time, default action: terminate) would
# kill it before it could record SIGTERM.
PLAIN_KERNEL = """
import os, signal, sys, time
log = open("plain-log.txt", "a", buffering=1)
log.write("startup-file %s\\n" % os.path.exists(sys.argv[1]))
def on_sigterm(signum, frame):
    log.write("sigterm\\n")
    os._exit(7)
signal.signal(signal.SIGTERM, on_sigterm)
log.write("ready\\n")
while True:
    time.sleep(0.05)
"""


def test_non_ipykernel_gets_no_notice_and_goes_straight_to_sigterm(
    kernels_dir: Path, workspace: Path, runtime_dir: Path
) -> None:
    """A kernelspec whose argv is not an ipykernel gets no stop notices: its spec carries none,
    its sandbox has no IPython startup file, and SIGTERM to the supervisor reaches it as SIGTERM
    (a notice signal would have killed it unrecorded); it exits on that with its own status."""
    spec = kernelspec({**TEST_SETTINGS, "workspace": "rw"}, python=sys.executable)
    spec["argv"] = [sys.executable, "-c", PLAIN_KERNEL, STARTUP_FILE, "{connection_file}"]
    (kernels_dir / "hopx-plain").mkdir()
    (kernels_dir / "hopx-plain" / "kernel.json").write_text(json.dumps(spec))
    km = KernelManager(
        kernel_name="hopx-plain",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
    )
    km.start_kernel(cwd=str(workspace))
    log = workspace / "plain-log.txt"
    try:
        handle = provisioner_of(km).supervisor
        assert handle is not None
        assert handle.spec.stop_notices == {}
        assert wait_until(lambda: log.exists() and "ready" in log.read_text(), 30)
        os.kill(handle.pid, signal.SIGTERM)
        assert wait_until(lambda: handle.poll() is not None, NOTICE_GRACE + TERMINATE_GRACE + 5)
        assert log.read_text().splitlines() == ["startup-file False", "ready", "sigterm"]
        assert handle.exited["status"] == 7
        assert handle.exit_reason == "manual"
    finally:
        km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


@pytest.mark.parametrize(
    "argv",
    [
        ["/opt/R/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
        ["/usr/bin/node", "/srv/ijavascript/kernel.js", "{connection_file}"],
        [sys.executable, "-c", "print(1)"],
    ],
)
def test_stop_notices_only_for_ipykernel_argv(argv: list[str]) -> None:
    """Unit check of the provisioner: only a command line mentioning ipykernel gets stop notices
    (for every reason a stop can have); any other kernel gets none."""
    provisioner = HopxProvisioner(kernel_id="k", kernel_spec=None)
    assert provisioner._stop_notices(argv) == {}
    notices = provisioner._stop_notices([sys.executable, "-m", "ipykernel_launcher", "-f", "c"])
    assert set(notices) == set(NOTICE_REASONS)


@pytest.mark.parametrize(
    ("settings", "lifetime", "idle"),
    [
        ({}, "maximum lifetime of 24h (max_lifetime)", "idle timeout of 1h."),
        ({"max_lifetime": "90s", "idle_timeout": "30m"}, "of 1m30s (max_lifetime)", "of 30m."),
        ({"max_lifetime": 0, "idle_timeout": 0}, "maximum lifetime (max_lifetime)", "timeout."),
    ],
)
def test_stop_notice_messages_name_the_setting_and_its_value(
    settings: dict[str, object], lifetime: str, idle: str
) -> None:
    """The messages a running cell ends with name the limit and its value (none when it is
    disabled) and say what to do after a max_lifetime stop."""
    provisioner = HopxProvisioner(kernel_id="k", kernel_spec=None, **settings)
    notices = provisioner._stop_notices([sys.executable, "-m", "ipykernel_launcher"])
    assert lifetime in notices["max_lifetime"]
    assert notices["max_lifetime"].endswith("Start a new kernel to continue.")
    assert notices["idle"].endswith(idle)
    assert notices["manual"] == "Hopx stopped this kernel: it was killed by hand."


def test_restart_after_max_lifetime_is_refused(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """Once max_lifetime '4s' has stopped the kernel, restart_kernel and start_kernel both fail
    with a RuntimeError naming max_lifetime and saying to start a new kernel; no sandbox is
    started for them."""
    kernel = start_kernel(max_lifetime="4s")
    first = handle_of(kernel)
    assert wait_until(lambda: not kernel.km.is_alive(), 4 + NOTICE_GRACE + TERMINATE_GRACE + 10)
    assert first.exit_reason == "max_lifetime"
    for attempt in (kernel.km.restart_kernel, kernel.km.start_kernel):
        with pytest.raises(RuntimeError, match=r"\(max_lifetime\)") as raised:
            attempt()
        assert str(raised.value).startswith("Start a new kernel: ")
        assert kernel.km.kernel_id in str(raised.value)
        assert provisioner_of(kernel.km).supervisor is None
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_restart_after_a_crash_past_max_lifetime_is_refused(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """A kernel that died by itself (not a policy stop) is restartable within its lifetime,
    but not once its max lifetime from the first start has passed: the restart fails naming
    max_lifetime."""
    kernel = start_kernel(max_lifetime="6s")
    first_started = provisioner_of(kernel.km).first_started
    assert first_started is not None
    for attempt in range(2):
        kernel.kc.execute("import os; os._exit(3)")
        assert wait_until(lambda: not kernel.km.is_alive(), 10)
        assert provisioner_of(kernel.km).last_exit_reason == "exited"
        assert not provisioner_of(kernel.km).stopped_by_policy
        if attempt == 0:  # within the lifetime: the restart works
            kernel.km.restart_kernel(now=True)
            kernel.kc.wait_for_ready(timeout=60)
            assert kernel.value("import json; print(json.dumps(1))") == 1
    sleep_until(first_started + 6.5)
    with pytest.raises(RuntimeError, match=r"^Start a new kernel: .*\(max_lifetime\)"):
        kernel.km.restart_kernel(now=True)
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_max_lifetime_counts_from_the_first_start_across_a_restart(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """With max_lifetime '8s', a restart about 4 s in gives a sandbox whose lifetime is what is
    left (its deadline is the first start + 8 s, not the restart + 8 s); the restarted kernel
    works, and it is stopped for max_lifetime after about 8 s from the first start, well before
    the restart + 8 s."""
    kernel = start_kernel(max_lifetime="8s")
    first_started = provisioner_of(kernel.km).first_started
    assert first_started is not None
    assert first_started == handle_of(kernel).started_at
    sleep_until(first_started + 4.0)
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    second = handle_of(kernel)
    restarted = second.started_at
    assert restarted >= first_started + 4.0
    assert provisioner_of(kernel.km).first_started == first_started
    assert second.spec.max_lifetime < 8.0 - 3.5
    assert abs(restarted + second.spec.max_lifetime - (first_started + 8.0)) < 1.0
    assert kernel.value("import json; print(json.dumps('again'))") == "again"

    assert wait_until(lambda: not kernel.km.is_alive(), first_started + 8 + MARGIN - time.time())
    ended = time.time()
    assert second.exit_reason == "max_lifetime"
    assert ended >= first_started + 8.0 - 0.05
    assert ended < restarted + 8.0, (ended - first_started, restarted - first_started)
    shut_down(kernel, runtime_dir)


# A cell that leaves a daemon behind: a grandchild in its own session, reparented to the
# sandbox's init, ignoring SIGTERM and SIGHUP, that outlives the kernel unless the sandbox goes.
ESCAPING_DAEMON = """
import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    os._exit(0)
os.wait()
print("daemon started", flush=True)
"""


def test_a_daemon_the_kernel_leaves_behind_ends_with_the_sandbox(
    start_kernel: StartKernel, runtime_dir: Path
) -> None:
    """A notebook cannot outlive its max lifetime by leaving a daemon behind (double fork, own
    session, SIGTERM and SIGHUP ignored): when the lifetime ends, every process of the sandbox
    goes, the daemon included, and nothing is left."""
    kernel = start_kernel(max_lifetime="5s")
    handle = handle_of(kernel)
    kernel.kc.execute(ESCAPING_DAEMON)
    assert "daemon started" in stdout_until(kernel, "daemon started", 30)
    cgroup_procs = [Path(d, "cgroup.procs") for d in handle.started["cgroups"]]
    assert len(cgroup_procs[0].read_text().split()) >= 3  # bwrap's init, the kernel, the daemon

    assert wait_until(lambda: handle.poll() is not None, 5 + NOTICE_GRACE + TERMINATE_GRACE + 10)
    assert handle.exit_reason == "max_lifetime"
    assert not any(p.exists() for p in cgroup_procs)
    shut_down(kernel, runtime_dir)


async def test_a_plain_auto_restarting_manager_leaves_a_killed_kernel_down(
    runtime_dir: Path, workspace: Path, kernels_dir: Path, make_kernelspec: Callable[..., str]
) -> None:
    """Outside a Jupyter server, an asyncio KernelManager with auto-restart (as a custom app
    would use) whose kernel is killed by hand (SIGTERM to the supervisor, as `jupyter hopx
    kill` does) does not restart it: the restarter shuts the kernel down for good, reports it
    dead, and nothing is left."""
    name = make_kernelspec("hopx-auto")
    km = AsyncIOLoopKernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)])
    )
    await km.start_kernel(cwd=str(workspace))
    dead: list[bool] = []
    km.add_restart_callback(lambda: dead.append(True), "dead")
    restarts: list[bool] = []
    km.add_restart_callback(lambda: restarts.append(True), "restart")
    try:
        assert isinstance(km._restarter, PolicyAwareRestarter)
        supervisor = provisioner_of(km).supervisor
        assert supervisor is not None
        os.kill(supervisor.pid, signal.SIGTERM)
        deadline = time.monotonic() + NOTICE_GRACE + TERMINATE_GRACE + 3 * 3.0 + MARGIN
        while not dead and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert dead, "the restarter never reported the kernel dead"
        assert restarts == []
        assert provisioner_of(km).last_exit_reason == "manual"
        assert not km.has_kernel
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)
