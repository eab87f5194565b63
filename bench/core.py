"""Rows, statistics, the table and the JSON results file."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements (same unit as the samples)."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        xs = sorted(samples)
        if not xs:
            raise ValueError("no samples")
        if len(xs) >= 4:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q1, q3 = xs[0], xs[-1]
        return cls(len(xs), statistics.median(xs), q1, q3, xs[0], xs[-1], tuple(samples))

    def spread(self) -> str:
        """IQR with 4+ samples, else min-max."""
        if self.n >= 4:
            return f"IQR {fmt(self.q1)}-{fmt(self.q3)}"
        if self.n == 1:
            return "n=1"
        return f"{fmt(self.min)}-{fmt(self.max)}"


def fmt(x: float) -> str:
    """A number with about three significant digits."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


@dataclass
class Row:
    """One line of the results table.

    ``value`` is vmanager's measurement, ``baseline`` the comparison measured in
    the same run; ``ratio`` is ``value/baseline`` (per-pair ratios when the
    samples were taken in pairs). ``goal`` is the issue's target in words and
    ``met`` whether it holds (``None``: no goal or not measured).
    """

    name: str
    unit: str
    value: Stats | None = None
    baseline: Stats | None = None
    baseline_name: str = ""
    ratio: Stats | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def pair(self, values: Sequence[float], baselines: Sequence[float]) -> None:
        """Set value, baseline and per-pair ratio from samples taken side by side."""
        self.value = Stats.of(values)
        self.baseline = Stats.of(baselines)
        self.ratio = Stats.of([v / b for v, b in zip(values, baselines, strict=True) if b > 0])

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("value", "baseline", "ratio"):
            if out[key] is not None:
                out[key]["samples"] = list(out[key]["samples"])
        return out


class Skip(Exception):
    """A benchmark cannot run here; the message says why (it becomes the row's note)."""


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as t: ...`` then ``t()`` is the elapsed seconds (frozen at exit)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def table(rows: Sequence[Row]) -> str:
    """The results as a plain-text table."""
    head = ("benchmark", "vmanager (median, spread)", "baseline (median, spread)",
            "ratio", "goal", "met")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        val = (f"{fmt(r.value.median)} {r.unit} ({r.value.spread()})" if r.value else "-")
        base = (f"{r.baseline_name}: {fmt(r.baseline.median)} {r.unit} "
                f"({r.baseline.spread()})" if r.baseline else (r.baseline_name or "-"))
        ratio = (f"{r.ratio.median:.2f}x ({r.ratio.spread()})" if r.ratio else "-")
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        lines.append((r.name, val, base, ratio, r.goal or "-", met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r.name}] {r.note}" for r in rows if r.note]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)
