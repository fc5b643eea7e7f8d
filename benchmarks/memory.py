"""What an idle kernel costs in memory, and what its sandbox adds on top of it.

Memory is counted as PSS (proportional set size): a page shared by n processes counts 1/n to each,
so figures taken while many kernels run at once add up to what they really use together. The
sandbox's extra is every host process it adds beyond the kernel itself: the supervisor with its
relay, and bubblewrap's two processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from jupyter_client.manager import KernelManager

from runtime.forkserver import PROCESS_NAME as FORK_SERVER_NAME

GIB = 1024**3
MIB = 1024**2


def pss_bytes(pid: int) -> int:
    """The process's PSS; 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def descendants(pid: int) -> Iterator[int]:
    """`pid` and every process below it."""
    yield pid
    for child in children(pid):
        yield from descendants(child)


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class KernelMemory:
    kernel: int  # bytes of PSS of the kernel's own processes
    extra: int  # bytes of PSS of what the sandbox adds (0 for a stock kernel)


def kernel_memory(km: KernelManager) -> KernelMemory:
    """Split a running kernel's process tree into the kernel itself and the sandbox around it.

    A stock kernel's tree is the kernel. A Hopx kernel's tree is supervisor → bubblewrap →
    bubblewrap (the sandbox's init) → kernel: everything above the kernel is the sandbox's cost.
    """
    provisioner = km.provisioner
    assert provisioner is not None
    supervisor = getattr(provisioner, "supervisor", None)
    if supervisor is None:
        root = int(getattr(provisioner, "pid", 0) or 0)
        return KernelMemory(kernel=sum(pss_bytes(p) for p in descendants(root)), extra=0)
    extra, pid = pss_bytes(supervisor.pid), _only_child(supervisor.pid)
    while pid and command_name(pid) == "bwrap":
        extra += pss_bytes(pid)
        pid = _only_child(pid)
    kernel = sum(pss_bytes(p) for p in descendants(pid)) if pid else 0
    return KernelMemory(kernel=kernel, extra=extra)


def _only_child(pid: int) -> int:
    below = children(pid)
    return below[0] if len(below) == 1 else 0


def fork_server_memory(km: KernelManager) -> int:
    """PSS of the fork server a Hopx kernel's supervisor was forked from: paid once per owner
    (a Jupyter server), not per sandbox."""
    supervisor = getattr(km.provisioner, "supervisor", None)
    if supervisor is None:
        return 0
    try:
        with open(f"/proc/{supervisor.pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pss_bytes(parent) if command_name(parent) == FORK_SERVER_NAME else 0


def fit(budget: int, per_kernel: float) -> int:
    """How many kernels of `per_kernel` bytes fit in `budget` bytes."""
    return int(budget // per_kernel) if per_kernel > 0 else 0
