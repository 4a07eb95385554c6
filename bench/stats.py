"""Percentiles, summaries and a least-squares slope, in plain Python (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PCTS = (50.0, 95.0, 99.0)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, mean and p50/p95/p99 (NaN-free: an empty series gives zeros and n=0)."""
    if not values:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    out: dict[str, float] = {"n": len(values), "mean": sum(values) / len(values)}
    for p in PCTS:
        out[f"p{p:g}"] = percentile(values, p)
    out["max"] = max(values)
    return out


def added(fleet: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    """Fleet minus direct, per percentile: what going through the fleet costs."""
    return {f"p{p:g}": fleet[f"p{p:g}"] - direct[f"p{p:g}"] for p in PCTS}


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 when there is nothing to fit)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
