"""A sandboxed kernel behaves like the stock Python kernel through jupyter_client's KernelManager,
and every way it ends leaves nothing behind."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from conftest import Kernel, assert_no_leaks, hopx_processes, leftovers, wait_until
from hopx_kernel.host import state_root
from hopx_kernel.provisioner import HopxProvisioner
from runtime.host_uids import DEFAULT_RANGE, parse_uid_range
from runtime.registry import sweep
from runtime.sandbox_address import ADDRESS_CLAIMS_DIR


def test_code_output_rich_display_and_errors(start_kernel: Callable[..., Kernel]) -> None:
    kernel = start_kernel()
    content, stdout = kernel.run("print(6 * 7)")
    assert content["status"] == "ok"
    assert stdout == "42\n"

    kernel.run("from IPython.display import HTML, display; display(HTML('<b>hi</b>'))")
    displays = [m for m in kernel.outputs if m["msg_type"] == "display_data"]
    assert displays[0]["content"]["data"]["text/html"] == "<b>hi</b>"

    content, _ = kernel.run("1/0")
    assert content["status"] == "error"
    assert content["ename"] == "ZeroDivisionError"

    content, _ = kernel.run("x = 3")
    kernel.run("x * 2")
    results = [m for m in kernel.outputs if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "6"


def test_runs_as_unprivileged_user_in_its_own_world(start_kernel: Callable[..., Kernel]) -> None:
    kernel = start_kernel()
    seen = kernel.value(
        textwrap.dedent(
            """
            import json, os, socket
            print(json.dumps({
                "uid": os.getuid(), "home": os.environ["HOME"], "pid1": open("/proc/1/comm").read(),
                "hostname": socket.gethostname(), "interfaces": os.listdir("/sys/class/net")
                if os.path.exists("/sys/class/net") else [],
                "nnp": [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0],
                "capeff": [l for l in open("/proc/self/status") if l.startswith("CapEff")][0],
                "seccomp": [l for l in open("/proc/self/status") if l.startswith("Seccomp:")][0],
            }))
            """
        )
    )
    assert seen["uid"] == 1000
    assert seen["home"] == "/home/sandbox"
    assert seen["hostname"] == "hopx"
    assert seen["pid1"].strip() == "bwrap"
    assert seen["nnp"].split() == ["NoNewPrivs:", "1"]
    assert seen["capeff"].split() == ["CapEff:", "0000000000000000"]
    assert seen["seccomp"].split() == ["Seccomp:", "2"]
    # From the host, the sandbox's processes run as a uid of its own from the default range,
    # not as root nor as a shared uid such as nobody.
    children = Path(f"/proc/{kernel.supervisor_pid}/task/{kernel.supervisor_pid}/children")
    uids = {Path(f"/proc/{pid}").stat().st_uid for pid in children.read_text().split()}
    assert len(uids) == 1
    assert uids.pop() in parse_uid_range("sandbox_uid_range", DEFAULT_RANGE)


def test_input_is_answered(start_kernel: Callable[..., Kernel]) -> None:
    kernel = start_kernel()
    msg_id = kernel.kc.execute("print('got', input('name? '))", allow_stdin=True)
    request = kernel.kc.get_stdin_msg(timeout=30)
    assert request["content"]["prompt"] == "name? "
    kernel.kc.input("sandbox")
    reply = kernel.kc._recv_reply(msg_id, timeout=30)
    assert reply["content"]["status"] == "ok"
    wait_until(lambda: any("got sandbox" in str(m) for m in _drain(kernel)), 10)


def _drain(kernel: Kernel) -> list[dict[str, object]]:
    messages = []
    while kernel.kc.iopub_channel.msg_ready():
        messages.append(kernel.kc.get_iopub_msg(timeout=1))
    kernel.outputs += messages  # type: ignore[arg-type]
    return kernel.outputs  # type: ignore[return-value]


def test_interrupt_reaches_the_kernel(start_kernel: Callable[..., Kernel]) -> None:
    kernel = start_kernel()
    msg_id = kernel.kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
    wait_until(
        lambda: any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "busy"
            for m in _drain(kernel)
        ),
        10,
    )
    kernel.km.interrupt_kernel()
    reply = kernel.kc._recv_reply(msg_id, timeout=30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    _, stdout = kernel.run("print('still here')")
    assert stdout == "still here\n"


def test_restart_gets_a_fresh_sandbox(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel()
    kernel.run("open('/tmp/marker', 'w').write('x'); state = 1")
    first_supervisor, first_cgroups = kernel.supervisor_pid, kernel.cgroups

    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    assert kernel.supervisor_pid != first_supervisor
    assert kernel.cgroups != first_cgroups
    assert not any(os.path.exists(c) for c in first_cgroups)
    fresh = kernel.value(
        "import json, os; print(json.dumps([os.path.exists('/tmp/marker'), 'state' in dir()]))"
    )
    assert fresh == [False, False]


def test_shutdown_leaves_nothing(start_kernel: Callable[..., Kernel], runtime_dir: Path) -> None:
    kernel = start_kernel()
    kernel.run("import subprocess; p = subprocess.Popen(['sleep', '600'])")
    assert leftovers(runtime_dir)
    connection_file = kernel.km.connection_file
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel()
    assert_no_leaks(runtime_dir)
    assert not os.path.exists(connection_file)


def test_kernel_crash_is_seen_and_cleaned_up(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel()
    kernel.kc.execute("import os; os._exit(3)")
    assert wait_until(lambda: not kernel.km.is_alive(), 15)
    # The supervisor removed its cgroup and sockets when the kernel ended.
    assert wait_until(lambda: not hopx_processes(), 10)
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_supervisor_kill_9_leaves_nothing(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel()
    cgroups = kernel.cgroups
    os.kill(kernel.supervisor_pid, signal.SIGKILL)
    # Nobody polls the kernel manager here: the cleanup must not depend on it.
    assert wait_until(lambda: not hopx_processes() and not any(map(os.path.exists, cgroups)), 10)
    assert not kernel.km.is_alive()
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


OWNER = """
import sys, time
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
km = KernelManager(kernel_name="hopx-test",
                   kernel_spec_manager=KernelSpecManager(kernel_dirs=[sys.argv[1]]))
km.start_kernel(cwd="/tmp")
kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def owner(
    make_kernelspec: Callable[..., str], kernels_dir: Path, runtime_dir: Path
) -> Iterator[subprocess.Popen[str]]:
    """A separate process (standing for a server or papermill) that owns one ready kernel."""
    make_kernelspec("hopx-test")
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(kernels_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    yield process
    process.kill()
    process.wait()
    process.stdout.close()


def test_owner_kill_9_leaves_nothing(owner: subprocess.Popen[str], runtime_dir: Path) -> None:
    """A Jupyter server or papermill process killed with SIGKILL takes its sandboxes with it."""
    assert hopx_processes()
    owner.kill()
    owner.wait()
    assert_no_leaks(runtime_dir)
    # The owner's connection file went too: the supervisor removes it for a dead owner.
    assert not list(runtime_dir.glob("kernel-*.json"))


def test_sweep_removes_what_a_crashed_host_left(
    owner: subprocess.Popen[str], runtime_dir: Path
) -> None:
    """Owner and supervisor SIGKILLed together (a host crash): the next start sweeps up."""
    (state_dir,) = (runtime_dir / "hopx").iterdir()
    record = json.loads((state_dir / "sandbox.json").read_text())
    # Freeze the owner so neither it nor the supervisor gets to clean up, as in a crash.
    owner.send_signal(signal.SIGSTOP)
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    owner.kill()
    owner.wait()
    wait_until(lambda: not hopx_processes(), 10)
    assert all(os.path.exists(c) for c in record["cgroups"])
    assert state_dir.exists()
    address_claim = f"{ADDRESS_CLAIMS_DIR}/{int(ipaddress.ip_address(record['address']))}"
    assert os.path.exists(address_claim)

    removed = sweep(state_root())
    assert str(state_dir) in removed
    assert address_claim in removed
    assert not os.path.exists(address_claim)
    assert_no_leaks(runtime_dir)


async def _reloaded_poll(km: KernelManager, info: dict[str, object]) -> int | None:
    """poll() of a fresh provisioner that knows the sandbox only from get_provisioner_info()."""
    reloaded = HopxProvisioner(kernel_id=km.kernel_id, kernel_spec=None, parent=km)
    await reloaded.load_provisioner_info(info)
    return await reloaded.poll()


def test_provisioner_info_finds_the_sandbox_again(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel()
    info = asyncio.run(kernel.km.provisioner.get_provisioner_info())
    assert asyncio.run(_reloaded_poll(kernel.km, info)) is None
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel()
    assert asyncio.run(_reloaded_poll(kernel.km, info)) == 0
    assert_no_leaks(runtime_dir)


def test_a_bubblewrap_kept_below_tmp_works(start_kernel: Callable[..., Kernel]) -> None:
    """bwrap_path may name a bubblewrap below /tmp, which a root supervisor's staging namespace
    covers with its own tmpfs: it is staged like the kernel's paths, and the kernel runs."""
    folder = Path(tempfile.mkdtemp(prefix="hx-bwrap-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        bwrap = folder / "bwrap"
        shutil.copy(shutil.which("bwrap") or "/usr/bin/bwrap", bwrap)
        kernel = start_kernel(bwrap_path=str(bwrap))
        assert kernel.value("import json, os; print(json.dumps(os.getuid()))") == 1000
    finally:
        shutil.rmtree(folder, ignore_errors=True)
