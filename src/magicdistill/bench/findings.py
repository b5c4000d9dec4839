"""What a reader of docs/RESULTS.md can use, computed from the measured rows: the short list that leads the page
(which method, how many steps, at what cost, what did not separate) and the share of the Euler-to-teacher gap each
distilled row closes.

Every statement is a comparison of two rows' 95% intervals (stats.overlap): "better" only where they do not
overlap, otherwise "not decided at this sample size".
"""

from __future__ import annotations

from .plan import Plan, Settings, Unit
from .stats import fmt, overlap

GAP_METRICS = ("fvd", "fid")  # lower is better on both


def compare(results: dict, a: Unit, b: Unit, key: str = "average") -> tuple[str, dict, dict]:
    """'higher' / 'lower' / 'no clear difference' (95% intervals overlap) of a vs b on ``key``."""
    ca, cb = results[a.id]["metrics"].get(key), results[b.id]["metrics"].get(key)
    if not ca or not cb or ca["mean"] is None or cb["mean"] is None:
        return "not comparable", ca or {}, cb or {}
    if overlap(ca, cb):
        return "no clear difference", ca, cb
    return ("higher" if ca["mean"] > cb["mean"] else "lower"), ca, cb


def _mean(results: dict, unit: Unit, key: str) -> float | None:
    ci = results.get(unit.id, {}).get("metrics", {}).get(key) or {}
    return ci.get("mean")


def gap_share(results: dict, unit: Unit, reference_steps: int, key: str) -> float | None:
    """(Euler_N − row) / (Euler_N − teacher at reference_steps) on a lower-is-better metric, N = the row's steps:
    the share of the gap between the teacher sampled in N Euler steps and the teacher at its full steps that the
    row closes (1 = as good as the teacher, 0 = no better than N-step Euler, < 0 = worse). None when a row is
    missing or there is no measured gap to close: N-step Euler at or below the teacher, or their 95% intervals
    overlap (a gap within the noise would make the share any number at all)."""
    euler, teacher = (results.get(Unit("euler", n, teacher=unit.teacher).id, {}).get("metrics", {}).get(key)
                      for n in (unit.steps, reference_steps))
    m = _mean(results, unit, key)
    if not euler or not teacher or euler.get("mean") is None or teacher.get("mean") is None or m is None:
        return None
    e, t = euler["mean"], teacher["mean"]
    if e - t <= 0 or overlap(euler, teacher):
        return None
    return (e - m) / (e - t)


def _distilled(plan: Plan, steps: int) -> list[Unit]:
    return [u for u in plan.table1 if u.trained and u.steps == steps]


def gap_table(plan: Plan, results: dict, settings: Settings) -> list[str]:
    """The gap-share table: one line per distilled Table 1 row whose N-step Euler row is in the plan."""
    euler = {u.steps for u in plan.table1 if not u.trained}
    rows = []
    for n in sorted({u.steps for u in plan.table1 if u.trained} & euler):
        for u in _distilled(plan, n):
            cells = []
            for key in GAP_METRICS:
                share = gap_share(results, u, settings.reference_steps, key)
                e = _mean(results, Unit("euler", n), key)
                t = _mean(results, Unit("euler", settings.reference_steps), key)
                cells.append("pending" if u.id not in results or results[u.id].get("pending") or e is None or t is None
                              else "no measured gap" if share is None else f"{share:+.0%}")
            rows.append(f"| {results.get(u.id, {}).get('label', u.label)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Share of the gap closed: (Euler_N − row) / (Euler_N − Euler "
            f"{settings.reference_steps}-step), N = the row's steps, on the means (1 = the teacher's level, 0 = no "
            "better than sampling the teacher in N Euler steps, negative = worse). \"no measured gap\": N-step Euler "
            "scores at or better than the teacher on that metric, or within the 95% intervals of it, so there is "
            "no measured gap to close.", "",
            "| row | FVD gap closed | FID gap closed |", "|---|---|---|", *rows, ""]


def findings(plan: Plan, results: dict, settings: Settings, decide: str) -> list[str]:
    """The page's leading list. ``decide``: the command whose run would settle what is left undecided."""
    out, undecided = [], []
    ref = results.get(plan.reference.id, {})
    out += _cheapest(plan, results)
    for n in sorted({u.steps for u in plan.table1 if u.trained}):
        euler = Unit("euler", n)
        rows = [u for u in _distilled(plan, n) if u.id in results and not results[u.id].get("pending")]
        if euler.id not in results or results[euler.id].get("pending") or not rows:
            continue
        for key in ("fvd", "fid"):
            best = min(rows, key=lambda u: _mean(results, u, key) if _mean(results, u, key) is not None else float("inf"))
            verdict, cb, ce = compare(results, best, euler, key)
            if verdict == "not comparable":
                continue
            share = gap_share(results, best, settings.reference_steps, key)
            gap = ("no measured Euler-to-teacher gap to close" if share is None
                   else f"{share:+.0%} of the Euler-to-teacher gap closed")
            what = {"lower": f"**beats** {n}-step Euler ({fmt(ce)})", "higher": f"is **worse than** {n}-step Euler ({fmt(ce)})",
                    "no clear difference": f"does not separate from {n}-step Euler ({fmt(ce)}; the intervals overlap)"}[verdict]
            cost = ""
            if not ref.get("pending") and ref.get("nfe") and results[best.id].get("nfe"):
                cost = (f"; {results[best.id]['nfe']} NFE against the teacher's {ref['nfe']}, "
                        f"time / teacher {results[best.id].get('time_ratio', 0):.3f}")
            out.append(f"- **{n} step{'s' if n > 1 else ''}, {key.upper()}**: the best distilled row, "
                       f"{results[best.id]['label']} ({fmt(cb)}), {what}; {gap}{cost}.")
            if verdict == "no clear difference":
                undecided.append(f"distillation vs {n}-step Euler on {key.upper()}")
        for other, name in ((Unit("dmd", n, alpha_weak=0.0, iters=settings.iters), "DMD2"),
                            (Unit("dmd", n, alpha_weak=0.0, iters=settings.iters, weff_alpha=0.25), "DMD2 at w_eff")):
            w2s = Unit("w2s", n, iters=settings.iters)
            if w2s.id in results and other.id in results and not results[other.id].get("pending"):
                verdict = compare(results, w2s, other, "fvd")[0]
                if verdict == "no clear difference":
                    undecided.append(f"W2S vs {name} at {n} step{'s' if n > 1 else ''}")
                elif verdict != "not comparable":
                    out.append(f"- **W2S vs {name} at {n} steps**: W2S's FVD is {verdict} (intervals do not overlap).")
    if any(u.startswith("W2S vs DMD2 at") for u in undecided):
        out.append("- **Did not reproduce: W2S ahead of DMD2** (MagicDistillation Table 1: 0.8219 vs 0.8063 at 4 steps). "
                   "Why: to first order in the LoRA, W2S's generator gradient is DMD2's with a stronger real-score CFG "
                   "(docs/METHOD.md, \"W2S and DMD2 to first order\"), and a short run's LoRA is near that first order; "
                   "the row \"DMD2 (real CFG w_eff ...)\" is that twin.")
    if undecided:
        out.append("- **Not decided at this sample size** (95% intervals overlap): " + "; ".join(undecided)
                   + f". What would decide it: {decide}.")
    return out


def _cheapest(plan: Plan, results: dict) -> list[str]:
    """The fewest-NFE Table 1 row whose FVD and FID are not measurably worse than the reference teacher's."""
    ref = plan.reference
    if ref.id not in results or results[ref.id].get("pending"):
        return []
    done = [u for u in plan.table1 if u.id in results and not results[u.id].get("pending") and u != ref]
    for u in sorted(done, key=lambda u: (results[u.id]["nfe"], results[u.id].get("time_ratio", 1.0))):
        verdicts = {k: compare(results, u, ref, k) for k in ("fvd", "fid")}
        if all(v[0] in ("lower", "no clear difference") for v in verdicts.values()):
            r = results[u.id]
            return [f"- **Cheapest row not measurably worse than the teacher** ({results[ref.id]['label']}, NFE "
                    f"{results[ref.id]['nfe']}) on FVD and FID: {r['label']}, NFE {r['nfe']}, time / teacher "
                    f"{r.get('time_ratio', 0):.3f}; FVD {fmt(verdicts['fvd'][1])} vs {fmt(verdicts['fvd'][2])}, "
                    f"FID {fmt(verdicts['fid'][1])} vs {fmt(verdicts['fid'][2])}. \"Not measurably worse\" means the "
                    "95% intervals overlap, not that the means are equal."]
    return ["- **No row is within the teacher's intervals** on both FVD and FID."]
