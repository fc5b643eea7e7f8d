"""What is measured on one kernel: its life cycle, execute round trips and IOPub throughput.

Each function drives a real kernel through jupyter_client exactly as a notebook client does and
returns seconds (or MB/s); the caller interleaves the two kernels.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from benchmarks.kernels import manager
from benchmarks.stats import Metric, Samples

TIMEOUT = 120.0

FIRST_REPLY = Metric("start → first kernel_info_reply", "s")
READY = Metric("start → wait_for_ready()", "s")
RESTART = Metric("restart → wait_for_ready()", "s")
SHUTDOWN = Metric("shutdown", "s")
ROUND_TRIP = Metric("execute round trip (1+1)", "s")
PRINTED = Metric("IOPub: printed 1 MB chunks", "MB/s", higher_is_better=True)
DISPLAYED = Metric("IOPub: 2 MB display_data", "MB/s", higher_is_better=True)


def _reply_to(kc: BlockingKernelClient, msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return dict(reply)


def _iopub_until_idle(kc: BlockingKernelClient, msg_id: str, timeout: float = TIMEOUT) -> int:
    """Bytes of output the request produced (stream text and text/plain data), once idle."""
    received = 0
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            received += len(content["text"])
        elif kind == "display_data":
            received += len(content["data"].get("text/plain", ""))
        elif kind == "status" and content["execution_state"] == "idle":
            return received


def started_kernel(
    specs: KernelSpecManager, name: str
) -> tuple[KernelManager, BlockingKernelClient]:
    """A kernel started and a client with its channels open (the kernel may not be ready yet)."""
    km = manager(specs, name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    return km, kc


def life_cycle(specs: KernelSpecManager, name: str) -> dict[Metric, float]:
    """Two fresh starts (one timed to the first kernel_info_reply, one to wait_for_ready), a
    restart and a shutdown."""
    seconds: dict[Metric, float] = {}
    started = time.perf_counter()
    km, kc = started_kernel(specs, name)
    try:
        _reply_to(kc, kc.kernel_info())
        seconds[FIRST_REPLY] = time.perf_counter() - started
        kc.wait_for_ready(timeout=TIMEOUT)
        restarting = time.perf_counter()
        km.restart_kernel()
        kc.wait_for_ready(timeout=TIMEOUT)
        seconds[RESTART] = time.perf_counter() - restarting
    finally:
        kc.stop_channels()
        stopping = time.perf_counter()
        km.shutdown_kernel()
        seconds[SHUTDOWN] = time.perf_counter() - stopping

    started = time.perf_counter()
    km, kc = started_kernel(specs, name)
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        seconds[READY] = time.perf_counter() - started
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return seconds


def round_trip(kc: BlockingKernelClient, timeout: float = TIMEOUT) -> float:
    """`1+1`: until both its execute_reply and its idle status have arrived."""
    started = time.perf_counter()
    msg_id = kc.execute("1+1", store_history=False)
    _reply_to(kc, msg_id, timeout)
    _iopub_until_idle(kc, msg_id, timeout)
    return time.perf_counter() - started


MB = 1_000_000


def printing(chunks: int) -> tuple[str, int]:
    """Code printing `chunks` chunks of 1 MB, flushing each, and the bytes of output it makes."""
    code = (
        "import sys\n"
        f"for _ in range({chunks}):\n"
        f"    sys.stdout.write('x' * {MB})\n"
        "    sys.stdout.flush()\n"
    )
    return code, chunks * MB


def displaying(items: int) -> tuple[str, int]:
    """Code displaying `items` items of 2 MB of text/plain, and the bytes of output it makes."""
    code = (
        "from IPython.display import display\n"
        f"for _ in range({items}):\n"
        f"    display({{'text/plain': 'x' * {2 * MB}}}, raw=True)\n"
    )
    return code, items * 2 * MB


def throughput(kc: BlockingKernelClient, code: str, expected_bytes: int) -> float:
    """MB/s of output from execute request to idle; fails if output went missing."""
    started = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    received = _iopub_until_idle(kc, msg_id)
    elapsed = time.perf_counter() - started
    _reply_to(kc, msg_id)
    if received != expected_bytes:
        msg = f"expected {expected_bytes} bytes of output, received {received}"
        raise RuntimeError(msg)
    return received / elapsed / 1e6


def life_cycles(
    specs: KernelSpecManager, kernels: tuple[str, ...], runs: int, samples: Samples
) -> None:
    """`runs` life cycles of each of `kernels`, interleaved, after a warm-up of each (file
    caches, imports)."""
    for kernel in kernels:
        life_cycle(specs, kernel)
    for _ in range(runs):
        for kernel in kernels:
            for metric, value in life_cycle(specs, kernel).items():
                samples.add(metric, kernel, value)


def warm_kernels(
    specs: KernelSpecManager,
    kernels: tuple[str, ...],
    samples: Samples,
    *,
    round_trips: int,
    floods: int,
    sizes: tuple[int, int],
) -> None:
    """Round trips and IOPub throughput on one warm kernel of each of `kernels`, interleaved.

    sizes: (1 MB chunks printed, 2 MB items displayed) per flood."""
    printed, displayed = printing(sizes[0]), displaying(sizes[1])
    started: dict[str, tuple[KernelManager, BlockingKernelClient]] = {}
    try:
        for kernel in kernels:
            started[kernel] = started_kernel(specs, kernel)
            started[kernel][1].wait_for_ready(timeout=TIMEOUT)
        clients = {kernel: kc for kernel, (_, kc) in started.items()}
        for _ in range(20):  # warm-up: first executions import and compile
            for kc in clients.values():
                round_trip(kc)
        for _ in range(round_trips):
            for kernel, kc in clients.items():
                samples.add(ROUND_TRIP, kernel, round_trip(kc))
        for _ in range(floods):
            for kernel, kc in clients.items():
                samples.add(PRINTED, kernel, throughput(kc, *printed))
                samples.add(DISPLAYED, kernel, throughput(kc, *displayed))
    finally:
        for km, kc in started.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)
