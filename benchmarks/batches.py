"""Many kernels at once: a papermill batch run the way CI runs one, and a burst of starts.

Both return wall-clock seconds for the whole batch; the caller interleaves the two kernels.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from benchmarks.kernels import jupyter_path
from benchmarks.stats import Metric

TIMEOUT = 300.0

PAPERMILL = Metric("papermill batch, 2 notebooks at a time", "s")
PAPERMILL_RUN = Metric("papermill, one notebook of the batch", "s")
BURST = Metric("kernels started at once → all ready", "s")

# A small notebook of the kind a CI job runs: a computation, printed output, rich output.
CELLS = (
    "import math\ntotal = sum(math.sqrt(i) for i in range(200_000))",
    "print(f'total = {total:.3f}')",
    "from IPython.display import Markdown\nMarkdown(f'**{total:.1f}**')",
)


def notebook(path: Path) -> None:
    cell: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
    }
    nb = {
        "cells": [{**cell, "id": f"cell-{i}", "source": s} for i, s in enumerate(CELLS)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


# jupyter_client logs this when a kernel has not exited half a shutdown_wait_time after its
# shutdown_request and is sent SIGTERM. ipykernel does so now and then on both kernels: its
# control thread can wait for an IOPub flush that the exiting IOPub thread never runs.
SHUTDOWN_FALLBACK = "Kernel is taking too long to finish, terminating"


@dataclass(frozen=True)
class Batch:
    seconds: float  # the whole batch, wall clock
    runs: list[float]  # each notebook's papermill process, wall clock
    fallbacks: int  # runs whose kernel was sent SIGTERM after it did not exit on request


def papermill_batch(specs: KernelSpecManager, name: str, notebooks: int, parallel: int) -> Batch:
    """Run `notebooks` copies of the notebook through papermill (one process each, as a CI job
    does), `parallel` at a time, on kernel `name`; fails if any run fails."""
    with tempfile.TemporaryDirectory(prefix="hopx-bench-nb-") as folder:
        # As root, a sandbox runs as its own uid, which must be able to enter the notebook folder.
        os.chmod(folder, 0o755)  # noqa: S103
        source = Path(folder) / "source.ipynb"
        notebook(source)
        env = {**os.environ, "JUPYTER_PATH": jupyter_path(specs)}

        def run(number: int) -> tuple[float, bool]:
            began = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "papermill",
                    "--no-progress-bar",
                    # At DEBUG, papermill's log says when a shutdown needed SIGTERM.
                    "--log-level",
                    "DEBUG",
                    "--kernel",
                    name,
                    str(source),
                    str(Path(folder) / f"out-{number}.ipynb"),
                ],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            if result.returncode != 0:
                msg = f"papermill failed on the {name} kernel: {result.stderr[-2000:]}"
                raise RuntimeError(msg)
            return time.perf_counter() - began, SHUTDOWN_FALLBACK in result.stderr

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            runs = list(pool.map(run, range(notebooks)))
        return Batch(
            seconds=time.perf_counter() - started,
            runs=[seconds for seconds, _ in runs],
            fallbacks=sum(fallback for _, fallback in runs),
        )


def burst(specs: KernelSpecManager, name: str, kernels: int) -> float:
    """Start `kernels` kernels at once, as a server does when a class opens its notebooks; wait
    until every one answers; fails if any start fails."""
    return asyncio.run(asyncio.wait_for(_burst(specs, name, kernels), TIMEOUT))


async def _burst(specs: KernelSpecManager, name: str, kernels: int) -> float:
    managers = [
        AsyncKernelManager(kernel_name=name, kernel_spec_manager=specs) for _ in range(kernels)
    ]
    clients = []
    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(
            *(km.start_kernel() for km in managers), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            msg = f"{len(failures)} of {kernels} {name} kernels failed to start: {failures[0]}"
            raise RuntimeError(msg) from failures[0]
        clients = [km.client() for km in managers]
        for kc in clients:
            kc.start_channels()
        await asyncio.gather(*(kc.wait_for_ready(timeout=TIMEOUT) for kc in clients))
        return time.perf_counter() - started
    finally:
        for kc in clients:
            kc.stop_channels()
        await asyncio.gather(
            *(km.shutdown_kernel(now=True) for km in managers if km.has_kernel),
            return_exceptions=True,
        )
