"""Mean and 95% confidence interval over seeds: a Student-t interval (few seeds, unknown variance)."""

from __future__ import annotations

import math
import statistics


def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def mean_ci(values: list[float | None], level: float = 0.95) -> dict:
    """{"mean", "half_width", "n"} of the finite values: mean ± t_{(1+level)/2, n-1} · s / sqrt(n).

    One value has no spread: half_width is None (not 0, which would claim certainty). None values
    (a metric not computable for that seed, e.g. FVD of a single video) are left out and counted."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    out = {"mean": statistics.fmean(xs) if xs else None, "half_width": None, "n": len(xs)}
    if len(xs) >= 2:
        out["half_width"] = t_quantile((1 + level) / 2, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return out


def overlap(a: dict, b: dict) -> bool:
    """Whether two mean_ci intervals overlap (a missing half-width counts as overlapping: unknown)."""
    if a["half_width"] is None or b["half_width"] is None:
        return True
    return abs(a["mean"] - b["mean"]) <= a["half_width"] + b["half_width"]
