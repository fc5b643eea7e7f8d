"""The benchmark harness's smoke run: it must work end to end, whatever the timings are.

Fails only when the harness breaks (a kernel that does not start, output that goes missing, a
figure without samples), never on a ratio.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_reports_every_figure_for_both_kernels(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(results)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(results.read_text())
    figures = {row["metric"]: row for row in report["rows"]}
    assert len(figures) == 10, sorted(figures)
    for name, row in figures.items():
        for key in ("stock_median", "hopx_median", "stock_p95", "hopx_p95", "ratio"):
            assert math.isfinite(row[key]), (name, key, row[key])
            assert row[key] > 0, (name, key, row[key])
        assert f"| {name} |" in run.stdout
    assert report["machine"]["cores"] >= 1
    memory = report["memory"]
    for key in ("stock_kernel_mib", "hopx_kernel_mib", "extra_per_sandbox_mib"):
        assert math.isfinite(memory[key]), (key, memory[key])
        assert memory[key] > 0, (key, memory[key])
    assert memory["hopx_fit_in_20_gib"] > 0
    assert "idle kernels that fit in 20 GiB" in run.stdout
    fallbacks = report["papermill_shutdown_fallbacks"]
    assert set(fallbacks) == {"stock", "hopx"}, fallbacks
    assert all(0 <= n <= 2 for n in fallbacks.values()), fallbacks


def quick_run(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`python -m benchmarks <args> --quick`: its JSON report, and its figures by name, each
    checked to be in the printed table with finite, positive medians, tails and ratio."""
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--quick", "--json", str(results)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report: dict[str, Any] = json.loads(results.read_text())
    figures = {row["metric"]: row for row in report["rows"]}
    for name, row in figures.items():
        for key in ("stock_median", "hopx_median", "stock_p95", "hopx_p95", "ratio"):
            assert math.isfinite(row[key]), (name, key, row[key])
            assert row[key] > 0, (name, key, row[key])
        assert f"| {name} |" in run.stdout
    return report, figures


def test_quick_render_benchmark_times_both_notebooks_on_both_kernels(tmp_path: Path) -> None:
    """The rendering benchmark in headless Chromium: each notebook opened once per kernel
    after the warm-up, every figure there and finite (its speed is not judged here)."""
    report, figures = quick_run(tmp_path, "--render")
    assert sorted(figures) == [
        "open a Plotly figure → rendered",
        "open a notebook of 50 outputs → rendered",
    ]
    for name, row in figures.items():
        assert row["samples"] == 1, (name, row)
    notebooks = report["render"]["notebooks"]
    # Its tables, Markdown and HTML are inert: rebuilt in the page, no frame made.
    assert notebooks["open a notebook of 50 outputs → rendered"]["hopx_output_frames"] == 0
    assert notebooks["open a notebook of 50 outputs → rendered"]["hopx_inert_outputs"] == 20
    assert report["render"]["labextension"].startswith("static/remoteEntry.")


def test_quick_network_benchmark_measures_both_sides(tmp_path: Path) -> None:
    """Downloads and one-byte connections, through a Hopx kernel's policy and from the host,
    every figure there and finite; the server's namespace is gone afterwards."""
    _, figures = quick_run(tmp_path, "--network")
    assert sorted(figures) == [
        "connect and get 1 byte (through the policy)",
        "download from a local server (through the policy) → MB/s",
    ]
    assert figures["connect and get 1 byte (through the policy)"]["samples"] == 20
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    namespaces = listed.stdout
    assert "hopx-inet-" not in namespaces


def test_quick_proxy_benchmark_measures_the_app_through_hopx_and_directly(tmp_path: Path) -> None:
    """A small answer from a notebook's app, through /hopx/proxy and straight from the same app
    in a stock kernel; without jupyter-server-proxy installed (the test environment), its
    comparison is left out and the report says how to add it."""
    report, figures = quick_run(tmp_path, "--proxy")
    assert sorted(figures) == [
        "GET of a small answer from a notebook's app",
        "GETs per second, 8 clients at once",
    ]
    assert figures["GET of a small answer from a notebook's app"]["samples"] == 40
    assert report["proxy"]["ways"] == ["hopx", "direct"]
    assert report["server_proxy_rows"] == []


def test_quick_secrets_benchmark_compares_a_kernel_with_secrets_to_both(tmp_path: Path) -> None:
    """Start, restart, round trips and output of a Hopx kernel with three secrets, against the
    stock kernel and the same Hopx kernel without them: every figure there and finite."""
    report, figures = quick_run(tmp_path, "--secrets")
    assert sorted(figures) == sorted(
        [
            "start → first kernel_info_reply",
            "start → wait_for_ready()",
            "restart → wait_for_ready()",
            "execute round trip (1+1)",
            "IOPub: printed 1 MB chunks",
            "IOPub: 2 MB display_data",
        ]
    )
    against_hopx = {row["metric"]: row for row in report["against_hopx_rows"]}
    assert sorted(against_hopx) == sorted(figures)
    assert all(math.isfinite(row["ratio"]) for row in against_hopx.values())


def test_quick_gateway_benchmark_times_starts_through_a_kernel_gateway(tmp_path: Path) -> None:
    """Starts through a Kernel Gateway with the Hopx personality, the stock kernel (checked to
    be unsandboxed there) against the Hopx one (checked to be sandboxed)."""
    _, figures = quick_run(tmp_path, "--gateway")
    assert sorted(figures) == ["start through a Kernel Gateway → first kernel_info_reply"]
    assert figures["start through a Kernel Gateway → first kernel_info_reply"]["samples"] == 2
