"""Benchmark results and the one percentile helper every benchmark uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One figure: `ok` is None when the figure has no target."""

    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(
    name: str, samples: Sequence[float], unit: str, scale: float, p99_below: float | None = None
) -> list[Result]:
    """p50, p99 and max of `samples` (multiplied by `scale`), the target applying to p99."""
    p50, p99 = (percentile(samples, q) * scale for q in (50, 99))
    target = f"p99 < {p99_below:g}" if p99_below is not None else ""
    return [
        Result(f"{name}_p50", p50, unit),
        Result(f"{name}_p99", p99, unit, target, None if p99_below is None else p99 < p99_below),
        Result(f"{name}_max", max(samples) * scale, unit),
    ]
