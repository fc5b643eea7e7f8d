"""Medians, p95 and Hopx/stock ratios of interleaved samples, as a table and as JSON."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "s" or "MB/s"
    # Throughputs: larger is better, so their slow tail is the 5th percentile, not the 95th.
    higher_is_better: bool = False


@dataclass
class Samples:
    """Every sample of every metric, per kernel."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, metric: Metric, kernel: str, value: float) -> None:
        self.values.setdefault((metric.name, kernel), []).append(value)

    def of(self, metric: Metric, kernel: str) -> list[float]:
        return self.values.get((metric.name, kernel), [])


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    samples: int
    stock_median: float
    hopx_median: float
    stock_p95: float  # the slow tail: 95th percentile of times, 5th of throughputs
    hopx_p95: float
    ratio: float  # Hopx median / stock median


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(metrics: list[Metric], samples: Samples, stock: str, hopx: str) -> list[Row]:
    rows = []
    for metric in metrics:
        a, b = samples.of(metric, stock), samples.of(metric, hopx)
        if not a or not b:
            continue
        tail = 0.05 if metric.higher_is_better else 0.95
        a_median, b_median = statistics.median(a), statistics.median(b)
        rows.append(
            Row(
                metric=metric.name,
                unit=metric.unit,
                samples=min(len(a), len(b)),
                stock_median=a_median,
                hopx_median=b_median,
                stock_p95=percentile(a, tail),
                hopx_p95=percentile(b, tail),
                ratio=b_median / a_median if a_median else math.nan,
            )
        )
    return rows


def _show(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"
    return f"{value:.0f} {unit}"


def table(rows: list[Row], names: tuple[str, str] = ("stock", "Hopx")) -> str:
    """A Markdown table, also readable in a terminal; `names` head the two columns compared."""
    a, b = names
    lines = [
        f"| figure | {a} median | {b} median | {a} p95 | {b} p95 | {b}/{a} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        values = (row.stock_median, row.hopx_median, row.stock_p95, row.hopx_p95)
        cells = " | ".join(_show(v, row.unit) for v in values)
        lines.append(f"| {row.metric} | {cells} | {row.ratio:.2f} |")
    return "\n".join(lines)


def breakdown(metrics: list[Metric], samples: Samples, stock: str, curve: str, hopx: str) -> str:
    """Medians of the stock kernel, the stock kernel with CurveZMQ and Hopx, and the ratios
    that split Hopx's cost into the encryption's and the sandbox's (relay included)."""
    lines = [
        "| figure | stock | stock + CurveZMQ | Hopx | encryption | sandbox and relay |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric in metrics:
        a, b, c = (samples.of(metric, k) for k in (stock, curve, hopx))
        if not (a and b and c):
            continue
        medians = [statistics.median(v) for v in (a, b, c)]
        cells = " | ".join(_show(m, metric.unit) for m in medians)
        encryption, sandbox = medians[1] / medians[0], medians[2] / medians[1]
        lines.append(f"| {metric.name} | {cells} | {encryption:.2f} | {sandbox:.2f} |")
    return "\n".join(lines)
