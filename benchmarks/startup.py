"""Start → first kernel_info_reply: the Hopx kernel against the stock local kernel, same run.

Runs the two interleaved (A B A B ...) so machine noise hits both alike, prints medians, p95 and
the ratio Hopx/stock, and writes the same as JSON.

    python benchmarks/startup.py [--runs 15] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from jupyter_client.manager import KernelManager

KERNELS = {"stock": "python3", "hopx": "hopx-python"}


def time_start(kernel_name: str) -> dict[str, float]:
    """Seconds from start_kernel() to the first kernel_info_reply, and to shutdown complete."""
    km = KernelManager(kernel_name=kernel_name)
    started = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        msg_id = kc.kernel_info()
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        first_reply = time.perf_counter() - started
    finally:
        kc.stop_channels()
        stopping = time.perf_counter()
        km.shutdown_kernel()
    return {"first_reply": first_reply, "shutdown": time.perf_counter() - stopping}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    samples: dict[str, dict[str, list[float]]] = {k: {} for k in KERNELS}
    for kernel in KERNELS.values():  # one warm-up each: file caches, imports
        time_start(kernel)
    for _ in range(args.runs):
        for name, kernel in KERNELS.items():
            for metric, value in time_start(kernel).items():
                samples[name].setdefault(metric, []).append(value)

    results: dict[str, Any] = {"runs": args.runs, "metrics": {}}
    print(
        f"{'metric':<14} {'stock med':>10} {'hopx med':>10} {'stock p95':>10} "
        f"{'hopx p95':>10} {'ratio':>6}"
    )
    for metric in samples["stock"]:
        stock, hopx = samples["stock"][metric], samples["hopx"][metric]
        row = {
            "stock_median": statistics.median(stock),
            "hopx_median": statistics.median(hopx),
            "stock_p95": percentile(stock, 0.95),
            "hopx_p95": percentile(hopx, 0.95),
        }
        row["ratio"] = row["hopx_median"] / row["stock_median"]
        results["metrics"][metric] = row
        print(
            f"{metric:<14} {row['stock_median'] * 1000:>8.0f}ms "
            f"{row['hopx_median'] * 1000:>8.0f}ms "
            f"{row['stock_p95'] * 1000:>8.0f}ms {row['hopx_p95'] * 1000:>8.0f}ms "
            f"{row['ratio']:>6.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
