"""Supervisors forked from the owner's fork server (runtime.forkserver): one fork server per owner,
a kernel's exit status still reaches the owner, and a fork server that dies is replaced while the
sandboxes it forked run on and still clean up after themselves.

Real kernels in real sandboxes; the owner is this test process.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Kernel, assert_no_leaks, hopx_processes, parent_pid, wait_until
from runtime.forkserver import PROCESS_NAME as FORK_SERVER_NAME
from runtime.forkserver import fork_supervisor
from runtime.supervisor import PROCESS_NAME as SUPERVISOR_NAME
from runtime.supervisor import STATE_RECORD


def name_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_supervisors_are_forked_from_one_fork_server_per_owner(
    start_kernel: Callable[..., Kernel],
) -> None:
    first, second = start_kernel(), start_kernel()
    fork_server = parent_pid(first.supervisor_pid)
    assert parent_pid(second.supervisor_pid) == fork_server
    assert name_of(fork_server) == FORK_SERVER_NAME
    assert parent_pid(fork_server) == os.getpid()
    for kernel in (first, second):
        assert name_of(kernel.supervisor_pid) == SUPERVISOR_NAME
        # The record names the real owner, not the fork server.
        record = json.loads((kernel.state_dir / STATE_RECORD).read_text())
        assert record["owner_pid"] == os.getpid()
        assert kernel.value("print(1 + 1)") == 2


def test_the_kernels_exit_status_reaches_the_owner(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    kernel = start_kernel()
    supervisor = kernel.km.provisioner.supervisor
    assert supervisor is not None
    kernel.kc.execute("import os; os._exit(3)")
    assert supervisor.wait(30) == 3
    assert supervisor.exit_reason == "exited"
    kernel.km.shutdown_kernel(now=True)
    assert_no_leaks(runtime_dir)


def test_a_dead_fork_server_is_replaced_and_its_sandboxes_live_on(
    start_kernel: Callable[..., Kernel], runtime_dir: Path
) -> None:
    before = start_kernel()
    fork_server = parent_pid(before.supervisor_pid)
    os.kill(fork_server, signal.SIGKILL)
    assert wait_until(lambda: parent_pid(before.supervisor_pid) != fork_server)

    # The orphaned sandbox works, and so does a new start, from a new fork server.
    assert before.value("print(6 * 7)") == 42
    after = start_kernel()
    assert parent_pid(after.supervisor_pid) not in (fork_server, os.getpid())
    assert name_of(parent_pid(after.supervisor_pid)) == FORK_SERVER_NAME
    assert after.value("print(6 * 7)") == 42

    # With nobody to report its status, the orphan's end is still seen and cleaned up after.
    before.kc.execute("import os; os._exit(3)")
    assert wait_until(lambda: not before.km.is_alive(), 30)
    cgroups = before.cgroups
    assert wait_until(lambda: not any(map(os.path.exists, cgroups)))
    before.km.shutdown_kernel(now=True)
    after.km.shutdown_kernel(now=True)
    assert wait_until(lambda: not hopx_processes())
    assert_no_leaks(runtime_dir)


def test_a_fork_server_that_cannot_start_fails_the_start_and_leaks_no_descriptor() -> None:
    # An interpreter that exits at once stands for a broken installation.
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="fork server"):
        fork_supervisor("/bin/false")
    assert wait_until(lambda: len(os.listdir("/proc/self/fd")) == open_before)
