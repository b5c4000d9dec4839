"""Mean and 95% confidence interval over seeds: a Student-t interval (few seeds, unknown variance); and over
distillation seeds with clips nested in each (nested_ci)."""

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


def nested_ci(groups: list[list[float | None]], level: float = 0.95) -> dict:
    """Mean and 95% interval of a row measured over distillation seeds (the groups) and, within each, over
    clip blocks x sampling seeds (the cells).

    With two or more groups the interval is Student-t over the group means (df = groups - 1): each group mean
    already averages its clips, so their spread holds the clip-to-clip and the seed-to-seed variation, and for
    a balanced design var(group means) / groups is the unbiased variance of the grand mean (a random seed effect
    plus clip noise). Treating every cell as independent would hide the seed effect. With one group (a sampler
    of the teacher: nothing was distilled) it is mean_ci over the cells, i.e. over clips and sampling seeds.
    Returns mean_ci's keys plus ``groups`` (groups with a finite value)."""
    kept = [[float(v) for v in g if v is not None and math.isfinite(float(v))] for g in groups]
    kept = [g for g in kept if g]
    if len(kept) < 2:
        return {**mean_ci(kept[0] if kept else [], level), "groups": len(kept)}
    means = [statistics.fmean(g) for g in kept]
    out = mean_ci(means, level)
    return {**out, "n": sum(len(g) for g in kept), "groups": len(kept)}


def fmt(ci: dict | None) -> str:
    """mean ± half-width with 4 significant digits of the mean, both at the same decimals."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    m = ci["mean"]
    d = max(0, min(4, 3 - math.floor(math.log10(abs(m))))) if m else 4
    return f"{m:.{d}f}" if ci["half_width"] is None else f"{m:.{d}f} ± {ci['half_width']:.{d}f}"
