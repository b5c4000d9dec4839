"""What a reader of docs/RESULTS.md can use, computed from the measured rows: the short list that leads the page
(which method, how many steps, at what cost, what did not separate) and the share of the Euler-to-teacher gap each
distilled row closes.

Every statement is a comparison of two rows' 95% intervals (stats.overlap): "better" only where they do not
overlap, otherwise "not decided at this sample size".
"""

from __future__ import annotations

from .plan import Plan, Settings, Unit
from .stats import fmt, mean_ci, overlap

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
    for n in sorted({u.steps for u in plan.table1 if u.trained}):
        w2s, reg = Unit("w2s", n, iters=settings.iters), Unit("w2s", n, lambda_reg=settings.lambda_reg, iters=settings.iters)
        if w2s.id not in results or reg.id not in results:
            continue
        verdict, cr, cw = compare(results, reg, w2s, "motion_ratio")
        step = f"{n} step{'s' if n > 1 else ''}"
        if verdict == "no clear difference":
            undecided.append(f"L_reg's effect on motion at {step}")
        elif verdict != "not comparable":
            out.append(f"- **L_reg and motion at {step}** (MagicDistillation: L_reg kills motion, dynamic degree 0.04): "
                       f"motion / the truth's is {fmt(cr)} with L_reg vs {fmt(cw)} without: L_reg "
                       + ("**reduces motion** here" if verdict == "lower" else "**adds motion** here (not the paper's effect)")
                       + " (the intervals do not overlap; dynamic degree, a count over a threshold, saturates on this data).")
    out += collapse_findings(plan, results, undecided)
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


COLLAPSE_KEYS = ("motion_drift", "rms_drift", "saturation_ratio")  # telemetry.collapse_signal's, per distillation seed


def collapse_stats(result: dict) -> dict:
    """A trained row's collapse signal over its distillation seeds: ``flagged`` (the iteration each seed's run was
    flagged at, None = never) and a mean_ci of each of COLLAPSE_KEYS."""
    runs = result.get("collapse") or []
    return {"flagged": [c["flagged_at"] for c in runs], **{k: mean_ci([c.get(k) for c in runs]) for k in COLLAPSE_KEYS}}


def collapse_table(plan: Plan, results: dict, settings: Settings) -> list[str]:
    """The collapse regime's table: metrics and the distillation runs' collapse signal."""
    if not plan.collapse:
        return []
    rows = []
    for u in plan.collapse:
        r = results.get(u.id)
        if r is None or r.get("pending"):
            rows.append(f"| {u.label} |" + " pending |" * 8)
            continue
        c, m = collapse_stats(r), r["metrics"]
        flagged = " / ".join("none" if f is None else str(f) for f in c["flagged"]) or "n/a"
        rows.append(f"| {r['label']} | " + " | ".join([fmt(m.get("fvd")), fmt(m.get("fvd_teacher")), fmt(m.get("average")),
                                                      fmt(m.get("motion_ratio")), flagged,
                                                      *(fmt(c[k]) for k in COLLAPSE_KEYS)]) + " |")
    from ..distill.telemetry import COLLAPSE_MOTION_DROP, COLLAPSE_RMS_FACTOR

    return ["## Collapse regime (MagicDistillation Fig. 2)", "",
            "MagicDistillation shows vanilla DMD2 collapsing (over-saturated, frozen samples) under a high real-score "
            "CFG at its learning rates, and W2S not. These rows are distilled like Table 1's 4-step rows but with the "
            "learning rates of `distill --preset paper` (2e-6 for generator, fake score and discriminator; batch, "
            "iterations and everything else as above) and the real score's CFG at "
            f"{plan.collapse[0].real_cfg_x:g}× the teacher's. Collapse signal (`distill/telemetry.py`, logged by "
            "every run in its metrics.jsonl): a run is flagged at the first logged iteration where the generated "
            f"latents' motion fell below {COLLAPSE_MOTION_DROP:g}× its value at the run's start, or their RMS moved "
            f"more than {COLLAPSE_RMS_FACTOR:g}× away from it (one entry per distillation seed); last / first: the "
            "last logged value over the first (1 = unchanged); saturation: the run's final samples' HSV saturation "
            "over the held-out truth's (≫ 1 = over-saturated). Intervals over the distillation seeds.", "",
            "| row | FVD (per clip) ↓ | FVD vs teacher ↓ | average ↑ | motion / reference's | collapse flagged at "
            "iteration | latent motion, last / first | latent RMS, last / first | sample saturation / truth's |",
            "|" + "---|" * 9, *rows, ""]


def collapse_findings(plan: Plan, results: dict, undecided: list[str]) -> list[str]:
    """Does DMD2 collapse in the collapse regime, and does W2S prevent it (MagicDistillation Fig. 2)?"""
    units = {u.method: u for u in plan.collapse}
    if set(units) != {"dmd", "w2s"} or any(u.id not in results or results[u.id].get("pending") for u in units.values()):
        return []
    dmd, w2s = (collapse_stats(results[units[m].id]) for m in ("dmd", "w2s"))
    n_dmd, n_w2s = (sum(f is not None for f in c["flagged"]) for c in (dmd, w2s))
    seeds = len(dmd["flagged"])
    line = (f"- **Collapse regime** (paper lrs, real CFG {units['dmd'].real_cfg_x:g}× the teacher's; MagicDistillation "
            f"Fig. 2): DMD2's runs were flagged as collapsing in {n_dmd} of {seeds} distillation seeds, W2S's in "
            f"{n_w2s} of {len(w2s['flagged'])}; latent RMS last / first {fmt(dmd['rms_drift'])} vs "
            f"{fmt(w2s['rms_drift'])}, sample saturation / truth's {fmt(dmd['saturation_ratio'])} vs "
            f"{fmt(w2s['saturation_ratio'])}. ")
    if not n_dmd:
        line += ("**DMD2 did not collapse here**, so whether W2S prevents it is not tested by this miniature "
                 "(at 2e-6 the generator moves little in these iterations).")
    elif n_w2s < n_dmd:
        line += "**DMD2 collapsed and W2S collapsed in fewer runs**: the paper's claim holds here."
    else:
        line += "**DMD2 collapsed and W2S did not prevent it here.**"
    verdict, cw, cd = compare(results, units["w2s"], units["dmd"], "fvd_teacher")
    if verdict == "no clear difference":
        undecided.append("W2S vs DMD2 in the collapse regime (FVD vs teacher)")
    elif verdict != "not comparable":
        line += f" FVD vs teacher: W2S {fmt(cw)} vs DMD2 {fmt(cd)}, W2S {verdict} (the intervals do not overlap)."
    return [line]
