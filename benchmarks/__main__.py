"""Benchmark the Hopx kernel against the stock local kernel on this machine, in the same run.

The two kernels run interleaved (stock, Hopx, stock, Hopx, ...) so that machine noise hits both
alike. Prints a table of medians, slow tails (p95) and Hopx/stock ratios, and writes the same as
JSON with a description of the machine.

    python -m benchmarks [--runs 20] [--round-trips 300] [--json results.json]
    python -m benchmarks --quick      # the smoke version CI runs: does the harness work?
    python -m benchmarks --render [--renders 10] [--quick]   # rendering in the browser
    python -m benchmarks --network [--quick]     # outbound traffic through a policy (root)
    python -m benchmarks --proxy [--quick]       # a notebook's web app through /hopx/proxy
    python -m benchmarks --secrets [--quick]     # a Hopx kernel with secrets, and without
    python -m benchmarks --gateway [--quick]     # kernel start through a Kernel Gateway
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from benchmarks import (
    batches,
    gateway,
    measures,
    memory,
    network,
    proxy,
    render,
    secret_costs,
)
from benchmarks.kernels import HOPX, STOCK, STOCK_CURVE, kernelspecs
from benchmarks.stats import Metric, Samples, breakdown, summary, table
from runtime.units import format_size

KERNELS = (STOCK, HOPX)
# Warm kernels: the stock kernel with CurveZMQ too, which splits Hopx's cost in two.
WARM_KERNELS = (STOCK, STOCK_CURVE, HOPX)
WARM_METRICS = [measures.ROUND_TRIP, measures.PRINTED, measures.DISPLAYED]
METRICS: list[Metric] = [
    measures.FIRST_REPLY,
    measures.READY,
    measures.RESTART,
    measures.SHUTDOWN,
    measures.ROUND_TRIP,
    measures.PRINTED,
    measures.DISPLAYED,
    batches.PAPERMILL,
    batches.PAPERMILL_RUN,
    batches.BURST,
]
# The memory budget the fit figure is given in.
BUDGET = 20 * memory.GIB


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        memory_kib = int(f.readline().split()[1])
    return {
        "cpu": model or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "root": os.geteuid() == 0,
    }


def describe(about: dict[str, Any]) -> str:
    user = "as root" if about["root"] else "unprivileged"
    return (
        f"{about['cpu']}, {about['cores']} cores, {about['memory_gib']} GiB, "
        f"Linux {about['kernel']}, Python {about['python']}, {user}"
    )


def measure_batches(
    specs: Any, repeats: int, notebooks: int, burst: int, samples: Samples
) -> dict[str, int]:
    """Papermill batches and bursts; returns, per kernel, how many papermill runs ended with
    jupyter_client's SIGTERM fallback, which costs such a run half a shutdown_wait_time."""
    fallbacks = dict.fromkeys(KERNELS, 0)
    for _ in range(repeats):
        for kernel in KERNELS:
            batch = batches.papermill_batch(specs, kernel, notebooks, 2)
            samples.add(batches.PAPERMILL, kernel, batch.seconds)
            for seconds in batch.runs:
                samples.add(batches.PAPERMILL_RUN, kernel, seconds)
            fallbacks[kernel] += batch.fallbacks
        for kernel in KERNELS:
            samples.add(batches.BURST, kernel, batches.burst(specs, kernel, burst))
    return fallbacks


def measure_memory(specs: Any, kernels: int) -> dict[str, float]:
    """PSS of `kernels` idle kernels of each kind running together, averaged per kernel."""
    started: dict[str, list[tuple[KernelManager, BlockingKernelClient]]] = {k: [] for k in KERNELS}
    try:
        for _ in range(kernels):
            for kernel in KERNELS:
                started[kernel].append(measures.started_kernel(specs, kernel))
        for _, kc in started[STOCK] + started[HOPX]:
            kc.wait_for_ready(timeout=measures.TIMEOUT)
        time.sleep(2.0)  # let start-up garbage settle: idle is what is measured
        stock = [memory.kernel_memory(km) for km, _ in started[STOCK]]
        hopx = [memory.kernel_memory(km) for km, _ in started[HOPX]]
        fork_server = memory.fork_server_memory(started[HOPX][0][0])
    finally:
        for km, kc in started[STOCK] + started[HOPX]:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    stock_kernel = sum(f.kernel for f in stock) / len(stock)
    hopx_kernel = sum(f.kernel for f in hopx) / len(hopx)
    extra = sum(f.extra for f in hopx) / len(hopx)
    return {
        "kernels": kernels,
        "stock_kernel_mib": stock_kernel / memory.MIB,
        "hopx_kernel_mib": hopx_kernel / memory.MIB,
        "extra_per_sandbox_mib": extra / memory.MIB,
        "fork_server_mib": fork_server / memory.MIB,
        "stock_fit_in_20_gib": memory.fit(BUDGET, stock_kernel),
        "hopx_fit_in_20_gib": memory.fit(BUDGET, hopx_kernel + extra),
    }


def memory_table(figures: dict[str, float]) -> str:
    n = int(figures["kernels"])
    return "\n".join(
        [
            f"| memory ({n} idle kernels of each, PSS) | stock | Hopx |",
            "|---|---:|---:|",
            f"| kernel | {figures['stock_kernel_mib']:.1f} MiB | "
            f"{figures['hopx_kernel_mib']:.1f} MiB |",
            f"| sandbox (supervisor, relay, bubblewrap) | — | "
            f"{figures['extra_per_sandbox_mib']:.1f} MiB |",
            f"| fork server (once per Jupyter server) | — | {figures['fork_server_mib']:.1f} MiB |",
            f"| idle kernels that fit in 20 GiB | {figures['stock_fit_in_20_gib']} | "
            f"{figures['hopx_fit_in_20_gib']} |",
        ]
    )


def write_json(path: str, report: dict[str, Any], samples: Samples) -> None:
    with open(path, "w") as f:
        json.dump(
            {**report, "samples": {f"{m}|{k}": v for (m, k), v in samples.values.items()}},
            f,
            indent=2,
            ensure_ascii=False,
        )


def main_render(renders: int, json_path: str) -> int:
    """The rendering benchmark alone: it needs Chromium and JupyterLab, not the kernels."""
    samples = Samples()
    began = time.time()
    rendered = render.measure(renders, samples)
    rows = summary(render.METRICS, samples, STOCK, HOPX)
    about = machine()
    print(describe(about))
    print(
        f"{renders} openings of each notebook per kernel, each in a fresh JupyterLab page of "
        f"headless Chromium; Hopx labextension build {rendered['labextension']}"
    )
    print(table(rows))
    if json_path:
        report = {
            "machine": about,
            "started": began,
            "settings": {"renders": renders},
            "rows": [asdict(r) for r in rows],
            "render": rendered,
        }
        write_json(json_path, report, samples)
    missing = [m.name for m in render.METRICS if m.name not in {r.metric for r in rows}]
    if missing:
        print(f"no samples for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def main_network(quick: bool, json_path: str) -> int:
    """The outbound network benchmark alone: a Hopx kernel's client against the host's own."""
    runs, size, setups = (1, 64 << 20, 20) if quick else (5, 1 << 30, 200)
    samples = Samples()
    began = time.time()
    measured = network.measure(runs, size, setups, samples)
    rows = summary(network.METRICS, samples, network.HOST, HOPX)
    about = machine()
    print(describe(about))
    print(
        f"{runs} rounds of a {format_size(size)} download and {setups} one-byte connections, "
        "alternating between a client on the host (the stock column) and the same client in a "
        "Hopx kernel whose network_allow names the server"
    )
    print(table(rows))
    if json_path:
        report = {
            "machine": about,
            "started": began,
            "settings": {"runs": runs, "size": size, "setups": setups},
            "rows": [asdict(r) for r in rows],
            "network": measured,
        }
        write_json(json_path, report, samples)
    return 0 if len(rows) == len(network.METRICS) else 1


def main_proxy(quick: bool, json_path: str) -> int:
    """A notebook's web app through /hopx/proxy, against jupyter-server-proxy and directly."""
    rounds, gets = (1, 40) if quick else (5, 400)
    samples = Samples()
    began = time.time()
    measured = proxy.measure(rounds, gets, samples)
    about = machine()
    print(describe(about))
    print(f"{rounds} rounds: {proxy.describe(measured)}")
    tables = {}
    for other in (proxy.PROXY, proxy.DIRECT):
        rows = summary(proxy.METRICS, samples, other, HOPX)
        if rows:
            tables[other] = rows
            print(f"\nHopx (/hopx/proxy to a Hopx kernel) against {other} (a stock kernel):")
            print(table(rows))
    if proxy.PROXY not in tables:
        print("\njupyter-server-proxy is not installed: `pip install -e .[bench]` adds it.")
    if json_path:
        report = {
            "machine": about,
            "started": began,
            "settings": {"rounds": rounds, "gets": gets},
            # Against the app reached directly; against jupyter-server-proxy when installed.
            "rows": [asdict(r) for r in tables.get(proxy.DIRECT, [])],
            "server_proxy_rows": [asdict(r) for r in tables.get(proxy.PROXY, [])],
            "proxy": measured,
        }
        write_json(json_path, report, samples)
    return 0 if tables.get(proxy.DIRECT) else 1


def main_gateway(quick: bool, json_path: str) -> int:
    """Kernel start through a Kernel Gateway with the Hopx personality, Hopx against stock."""
    runs = 2 if quick else 20
    samples = Samples()
    began = time.time()
    gateway.measure(runs, samples)
    rows = summary(gateway.METRICS, samples, STOCK, HOPX)
    about = machine()
    print(describe(about))
    print(f"{runs} starts of each kernel through one Kernel Gateway, interleaved")
    print(table(rows))
    if json_path:
        report = {"machine": about, "started": began, "settings": {"runs": runs}}
        write_json(json_path, {**report, "rows": [asdict(r) for r in rows]}, samples)
    return 0 if rows else 1


def main_secrets(quick: bool, json_path: str) -> int:
    """A Hopx kernel with three secrets against the same without, and against the stock one."""
    runs, round_trips, floods = (1, 10, 1) if quick else (20, 300, 5)
    samples = Samples()
    began = time.time()
    secret_costs.measure(runs, round_trips, floods, samples)
    with_secrets = secret_costs.HOPX_SECRETS
    against_hopx = summary(secret_costs.METRICS, samples, HOPX, with_secrets)
    against_stock = summary(secret_costs.METRICS, samples, STOCK, with_secrets)
    about = machine()
    print(describe(about))
    print(
        f"{runs} life cycles, {round_trips} round trips and {floods} output floods per kernel, "
        "interleaved: stock, Hopx, Hopx with three secrets (masked in all its output)"
    )
    print(table(against_hopx, ("Hopx", "with secrets")))
    print()
    print(table(against_stock, ("stock", "with secrets")))
    if json_path:
        report = {
            "machine": about,
            "started": began,
            "settings": {"runs": runs, "round_trips": round_trips, "floods": floods},
            "rows": [asdict(r) for r in against_stock],
            "against_hopx_rows": [asdict(r) for r in against_hopx],
        }
        write_json(json_path, report, samples)
    return 0 if len(against_hopx) == len(secret_costs.METRICS) else 1


# The benchmarks that run instead of the main one: flag -> (quick, json path) -> exit status.
ONE_MODE = {
    "gateway": main_gateway,
    "secrets": main_secrets,
    "proxy": main_proxy,
    "network": main_network,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=20, help="life cycles per kernel (default 20)")
    parser.add_argument("--round-trips", type=int, default=300, help="`1+1` executions per kernel")
    parser.add_argument("--floods", type=int, default=5, help="IOPub throughput runs per kernel")
    parser.add_argument("--batches", type=int, default=3, help="papermill batches and bursts")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few samples of each: checks the harness, not the speed",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="instead: the time JupyterLab takes to render a notebook's outputs in Chromium",
    )
    parser.add_argument(
        "--renders", type=int, default=10, help="openings of each notebook per kernel (--render)"
    )
    parser.add_argument(
        "--network",
        action="store_true",
        help="instead: downloads and connections through an outbound policy (needs root)",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="instead: a notebook's web app through /hopx/proxy and jupyter-server-proxy",
    )
    parser.add_argument(
        "--secrets",
        action="store_true",
        help="instead: what three secrets cost a Hopx kernel's start and output",
    )
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="instead: kernel start through a Kernel Gateway with the Hopx personality",
    )
    args = parser.parse_args(argv)
    if args.render:
        return main_render(1 if args.quick else args.renders, args.json)
    for mode, run_mode in ONE_MODE.items():
        if getattr(args, mode):
            return run_mode(args.quick, args.json)
    runs, round_trips, floods = args.runs, args.round_trips, args.floods
    sizes = (50, 20)  # 50 chunks of 1 MB printed, 20 items of 2 MB displayed
    notebooks, burst, idle = 20, 20, 10  # papermill batch, kernels started at once, idle kernels
    repeats = args.batches
    if args.quick:
        runs, round_trips, floods, sizes = 1, 10, 1, (5, 2)
        notebooks, burst, idle, repeats = 2, 2, 1, 1

    samples = Samples()
    began = time.time()
    with kernelspecs() as specs:
        measures.life_cycles(specs, KERNELS, runs, samples)
        measures.warm_kernels(
            specs, WARM_KERNELS, samples, round_trips=round_trips, floods=floods, sizes=sizes
        )
        fallbacks = measure_batches(specs, repeats, notebooks, burst, samples)
        memory_figures = measure_memory(specs, idle)
    rows = summary(METRICS, samples, STOCK, HOPX)
    about = machine()
    print(describe(about))
    print(
        f"{runs} life cycles, {round_trips} round trips and {floods} output floods per kernel; "
        f"{repeats} papermill batches of {notebooks} notebooks and bursts of {burst} starts"
    )
    print(table(rows))
    print(
        f"papermill runs whose kernel did not exit on its shutdown request and was sent SIGTERM: "
        f"stock {fallbacks[STOCK]}, Hopx {fallbacks[HOPX]} of {repeats * notebooks} each"
    )
    print()
    print(breakdown(WARM_METRICS, samples, STOCK, STOCK_CURVE, HOPX))
    print()
    print(memory_table(memory_figures))
    if args.json:
        report = {
            "machine": about,
            "started": began,
            "settings": {
                "runs": runs,
                "round_trips": round_trips,
                "floods": floods,
                "printed_mb": sizes[0],
                "displayed_items": sizes[1],
                "papermill_notebooks": notebooks,
                "burst_kernels": burst,
                "batches": repeats,
            },
            "rows": [asdict(r) for r in rows],
            "memory": memory_figures,
            "papermill_shutdown_fallbacks": fallbacks,
        }
        write_json(args.json, report, samples)
    missing = [m.name for m in METRICS if m.name not in {r.metric for r in rows}]
    if missing:
        print(f"no samples for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
