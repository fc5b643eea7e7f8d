"""What secrets cost a kernel: the same Hopx kernel with and without three secrets (read from
files), interleaved, against the stock kernel. A kernel with secrets is run by a launcher in its
own interpreter and masks every message it sends, so its start and its output are measured."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from benchmarks import measures
from benchmarks.kernels import HOPX, STOCK, kernelspecs
from benchmarks.stats import Metric, Samples

HOPX_SECRETS = "hopx-secrets"
KERNELS = (STOCK, HOPX, HOPX_SECRETS)
METRICS: list[Metric] = [
    measures.FIRST_REPLY,
    measures.READY,
    measures.RESTART,
    measures.ROUND_TRIP,
    measures.PRINTED,
    measures.DISPLAYED,
]


@contextmanager
def secret_kernelspecs() -> Iterator[KernelSpecManager]:
    """STOCK, HOPX and HOPX_SECRETS: Hopx with three secrets of 40 characters."""
    with tempfile.TemporaryDirectory(prefix="hopx-bench-secrets-") as folder:
        refs = {}
        for name in ("OPENAI_API_KEY", "DB_PASSWORD", "GITHUB_TOKEN"):
            path = Path(folder) / name
            path.write_text(secrets.token_urlsafe(30))
            refs[name] = f"file:{path}"
        with kernelspecs(extra={HOPX_SECRETS: {"secrets": refs}}) as specs:
            yield specs


def measure(runs: int, round_trips: int, floods: int, samples: Samples) -> None:
    with secret_kernelspecs() as specs:
        measures.life_cycles(specs, KERNELS, runs, samples)
        measures.warm_kernels(
            specs, KERNELS, samples, round_trips=round_trips, floods=floods, sizes=(20, 10)
        )
