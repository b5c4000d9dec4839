"""docs/RESULTS.md and its plots, written from the unit results of one bench folder."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..atomic import write_text_atomic
from ..config import DistillConfig
from .plan import Plan, Settings, Unit
from .plot import Series, line_plot
from .provenance import git_commit, summarise
from .findings import collapse_table, compare, findings, gap_table
from .stats import fmt, overlap


def decide(settings: Settings) -> str:
    """What settles a comparison this page leaves open: below the full bench's sizes, the full bench; at them (or
    beyond), more of what a trained row's interval is over (distillation seeds: it narrows with their square root)
    and longer runs (short ones barely move a generator from the teacher it starts as)."""
    full = Settings()
    if settings.iters < full.iters or settings.clips < full.clips or settings.distill_seeds < full.distill_seeds:
        return ("the full bench, `magicdistill bench --out runs/bench` (1, 2 and 4 steps, 32 clips, 2 distillation "
                "seeds per row), and if its intervals still overlap, more distillation seeds (`--distill-seeds`)")
    seeds, iters = 2 * settings.distill_seeds, 5 * settings.iters
    return (f"more distillation seeds and longer runs, e.g. `magicdistill bench --out runs/bench_long --distill-seeds "
            f"{seeds} --iters {iters}` ({seeds} seeds narrow a trained row's interval by about "
            f"{1 / math.sqrt(seeds / settings.distill_seeds):.2f}×; {iters} iterations move the generators further "
            f"from the teacher they start as)")


# the first table's metrics; the rest go to the second
SUMMARY = ("average", "fvd", "fvd_teacher", "fid", "fid_teacher", "perceptual", "motion_ratio")
LOWER_IS_BETTER = {"fid", "fvd", "kid", "perceptual", "fvd_teacher", "fid_teacher"}
PLOTTED = ("average", "fvd")


def metric_label(key: str) -> str:
    try:
        from ..eval.suite import LABELS
    except ImportError:  # pragma: no cover - the eval module is part of the package
        LABELS = {}
    return LABELS.get(key, key + (" ↓" if key in LOWER_IS_BETTER else ""))


def write_results(docs: Path, plan: Plan, results: dict[str, dict], settings: Settings, *, command: str,
                  teachers: dict[str, Path], seconds: float, out: Path, reused: int = 0,
                  data_note: str | None = None, data_clips: str | None = None) -> Path:
    """``reused``: units whose results were measured by an earlier invocation in the same bench folder;
    ``data_note``, ``data_clips``: the held-out line and the clips' description of a bench on a user's cache
    (``bench --data``)."""
    done = results
    missing = [u for u in plan.units() if u.id not in done]
    results = {**{u.id: {"id": u.id, "label": u.label, "pending": True, "metrics": {}} for u in missing}, **done}
    ref = results[plan.reference.id]
    metrics = _metric_keys(results)
    rest = [k for k in metrics if k not in SUMMARY]
    summary = [k for k in SUMMARY if k in metrics]
    plots = write_plots(docs.parent / "plots", plan, results)
    extractor = ref.get("extractor") or "the given evaluate function"
    lines = [
        "# Results: the papers' tables in miniature", "",
        "Written by `magicdistill bench` (do not edit by hand: re-run the command). Every number below was "
        "measured in the bench folder named here; the results stand whatever they are.", "",
        *([f"**Partial: {len(missing)} of {len(plan.units())} units not measured yet (marked pending); re-run the "
           "same command to continue.**", ""] if missing else []),
        f"- Command: `{command or 'magicdistill bench'}` (bench folder `{out}`)",
        *summarise(list(done.values())),
        f"- Page written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with git commit "
        f"{git_commit(Path(__file__).parent.parent)}",
        f"- Teacher: {_shown(teachers['ti2v'])} (TI2V)" + (f"; T2V teacher: {_shown(teachers['t2v'])}" if "t2v" in teachers else ""),
        (data_note or f"- Held-out set: the first {settings.clips} portrait clips of the test split (identities never "
         f"seen in training), ground truth through the VAE") + f"; {settings.seeds} sampling "
        f"seed{'s' if settings.seeds > 1 else ''} (noise seed = {settings.seed} + 1000·seed + clip, the same for every "
        "row, so rows differ by the model only)",
        f"- Distillation: {settings.iters} iterations per generator (batch {DistillConfig().batch_size}, "
        + (f"{settings.num_clips} training clips, " if data_note is None else "the cache's other clips, ") +
        f"one shared latent cache), each trained row distilled "
        f"{settings.distill_seeds}× with distillation seeds {', '.join(map(str, settings.distill_seed_values))}; "
        f"L_reg weight {settings.lambda_reg:g} where used",
        f"- Metrics: `eval.suite.evaluate_videos` with feature extractor `{extractor}`, computed per cell: a block of "
        f"{settings.clip_block} clips × one sampling seed × one distillation seed (FVD and FID are set metrics, so "
        f"over {settings.clip_block} clips at a time). Shown as mean ± half-width of a 95% Student-t interval: for a "
        f"trained row over its {settings.distill_seeds} distillation seeds, each the mean of its "
        f"{settings.clips // settings.clip_block * settings.seeds} cells, so the interval holds the clip-to-clip and the "
        "seed-to-seed variation (`bench/stats.py`, nested_ci); for an Euler row (nothing distilled) over its cells, "
        "i.e. clips and sampling noise. No ± where only one value exists.",
        f"- FVD / FID vs teacher: the same distances, per cell, to the samples of the row's own teacher at "
        f"{settings.reference_steps} Euler steps with CFG (the reference row; a T2V row's: the T2V teacher's) of the "
        "same clips with the same noise: how far a generator is from what distillation makes it match. n/a for "
        "the teacher itself. Motion / reference's: the un-thresholded motion that dynamic degree counts over a "
        "threshold (mean top-5% |frame difference|, `eval/vbench.py`) over the truth's: 1 = the truth's motion, "
        "below = stiller; dynamic degree saturates on this data, this does not.",
        f"- Time in the measured units (all invocations): distillation {_total(done, 'distill_seconds') / 60:.1f} min, "
        f"sampling {_total(done, 'seconds') / 60:.1f} min. Wall time of this invocation: {seconds / 60:.1f} min"
        + (f" ({reused} of {len(plan.units())} units were measured by an earlier invocation in the same folder)"
           if reused else f" ({len(plan.units())} units)"), "",
        "## Findings", "",
        *(findings(plan, done, settings, decide(settings)) or ["- None yet: the rows they compare are pending."]), "",
        "## Table 1 (MagicDistillation Table 1 in miniature)", "",
        "Paper (customised VBench average, 540×960×129): 28-step Euler 0.8107 · 4-step Euler 0.6768 · 4-step LCM "
        "0.6915 · 4-step DMD2 0.8063 · 4-step W2S 0.8219 (with L_reg 0.7474) · 1-step Euler 0.6169, LCM 0.6817, "
        "DMD2 0.7189, W2S 0.7448. The miniature's metrics are on another scale: compare rows, not numbers.", "",
        "NFE = network evaluations per video (CFG doubles them); ratios are to the reference, "
        + (f"{ref['label']} (pending)." if ref.get("pending") else
           f"{ref['label']} (NFE {ref['nfe']}, {ref['seconds_per_video']:.2f} s per video). s / video: median over "
           "the row's videos, sampled one at a time. time / teacher: measured side by side, the reference then the "
           "row on the same clip, twice, median of the two ratios (the machine's load changes between rows)."), "",
        _table(["row", "NFE", "NFE / teacher", "s / video", "time / teacher", *map(metric_label, summary)],
               [_speed_cells(results[u.id], ref) + [_cell(results[u.id], k) for k in summary]
                for u in plan.table1]),
        "",
    ]
    lines += gap_table(plan, results, settings)
    if rest:
        lines += ["Table 1, the other metrics:", "",
                  _table(["row", *map(metric_label, rest)],
                         [[results[u.id]["label"]] + [_cell(results[u.id], k) for k in rest] for u in plan.table1]),
                  ""]
    if plan.alpha:
        lines += ["## alpha_weak ablation (W2S, 4 steps, no L_reg)", "",
                  "alpha_weak = 0 is vanilla DMD2 (the same generator as Table 1's DMD2 row). Paper (average): "
                  "0 → 0.806, 0.25 → 0.822, 0.5 → 0.815, 0.75 → 0.742.", "",
                  _table(["alpha_weak", "row", *map(metric_label, metrics)],
                         [[f"{u.alpha_weak:g}", results[u.id]["label"]] + [_cell(results[u.id], k) for k in metrics]
                          for u in plan.alpha]), ""]
    lines += collapse_table(plan, results, settings)
    lines += ["## Metric vs distillation iterations", ""]
    if not plan.t2v:
        lines += ["**T2V vs TI2V (Magic 1-For-1: TI2V distils faster than T2V): not run.** The project ships only "
                  "the TI2V teacher, and this comparison needs a text-to-video teacher of the same size trained on the "
                  "same data. Train one (`magicdistill train --task t2v --out runs/t2v`) and re-run with "
                  "`--t2v-teacher runs/t2v/teacher`. No T2V numbers are shown or imputed.", ""]
    lines += ["The EMA generator of one distillation run, evaluated at several iteration counts (the run is "
              "continued from snapshot to snapshot).", "",
              _table(["curve", "iterations", "distillation s (this segment)", *map(metric_label, summary)],
                     [[name, str(u.iters), _secs(results[u.id].get("distill_seconds"))]
                      + [_cell(results[u.id], k) for k in summary]
                      for name, units in plan.curves.items() for u in units]),
              "", "## Plots", ""]
    lines += [f"![{title}]({p.relative_to(docs.parent).as_posix()})" for title, p in plots]
    lines += ["", "## Long video: quality at window seams", "",
              "Measured by `python benchmarks/long_video.py` (flicker and jerk at seams vs inside windows, FVD of "
              "clips straddling a seam vs inside a window, drift per window, cost vs length); the tables and the "
              "commands are in [LONG_VIDEO.md](LONG_VIDEO.md#benchmarks).", ""]
    lines += ["", "## Notes", "", *notes(plan, done, settings, **({"clips": data_clips} if data_clips else {})), ""]
    return write_text_atomic(docs, "\n".join(lines))


def _metric_keys(results: dict[str, dict]) -> list[str]:
    keys: list[str] = []
    for r in results.values():
        keys += [k for k in r["metrics"] if k not in keys]
    return [k for k in SUMMARY if k in keys] + [k for k in keys if k not in SUMMARY]


def _total(results: dict[str, dict], key: str) -> float:
    """Sum of a per-unit time (a number, or a list of per-video times) over the measured units."""
    vals = [r.get(key) for r in results.values()]
    return sum(sum(v) if isinstance(v, list) else (v or 0.0) for v in vals)


def _cell(r: dict, key: str) -> str:
    return "pending" if r.get("pending") else fmt(r["metrics"].get(key))


def _speed_cells(r: dict, ref: dict) -> list[str]:
    if r.get("pending"):
        return [r["label"], *["pending"] * 4]
    if ref.get("pending"):  # the row is measured, its ratios wait for the reference
        return [r["label"], str(r["nfe"]), "pending", f"{r['seconds_per_video']:.2f}", "pending"]
    # side by side with the reference (runner.measure); bench folders from before that: the two medians
    ratio = r.get("time_ratio", r["seconds_per_video"] / ref["seconds_per_video"])
    return [r["label"], str(r["nfe"]), f"{r['nfe'] / ref['nfe']:.2f}", f"{r['seconds_per_video']:.2f}", f"{ratio:.3f}"]


def _secs(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_plots(folder: Path, plan: Plan, results: dict[str, dict]) -> list[tuple[str, Path]]:
    """Metric vs sampling steps (Table 1) and metric vs distillation iterations (the curves)."""
    made = []
    keys = [k for k in _metric_keys(results)
            if any(r["metrics"].get(k, {}).get("mean") is not None for r in results.values())]  # skip all-n/a
    for key in (k for k in PLOTTED if k in keys):
        groups: dict[str, list[Unit]] = {}
        for u in plan.table1:
            groups.setdefault(results[u.id]["label"].rsplit(" ", 1)[0] if u.trained else "Euler (CFG teacher)", []).append(u)
        series = [_series(name, us, results, key, x=lambda u: u.steps) for name, us in groups.items()]
        title = f"{metric_label(key)} vs sampling steps"
        made.append((title, line_plot(folder / f"bench_steps_{key}.png", series, title=title, x_label="sampling steps",
                                      y_label=metric_label(key), log_x=True)))
        series = [_series(name, us, results, key, x=lambda u: u.iters) for name, us in plan.curves.items()]
        title = f"{metric_label(key)} vs distillation iterations"
        made.append((title, line_plot(folder / f"bench_iters_{key}.png", series, title=title,
                                      x_label="distillation iterations", y_label=metric_label(key))))
    return made


def _series(name: str, units: list[Unit], results: dict, key: str, x) -> Series:
    cis = [results[u.id]["metrics"].get(key) or {"mean": None, "half_width": None} for u in units]
    return Series(name, [x(u) for u in units], [c["mean"] for c in cis], [c["half_width"] for c in cis])


def notes(plan: Plan, results: dict, settings: Settings, clips: str = "64×64×17 synthetic portrait clips") -> list[str]:
    out = []
    verdicts = []
    for n in settings.distilled_steps:
        w2s, dmd = Unit("w2s", n, iters=settings.iters), Unit("dmd", n, alpha_weak=0.0, iters=settings.iters)
        if w2s.id not in results or dmd.id not in results:
            continue
        verdict, cw, cd = compare(results, w2s, dmd)
        verdicts.append(verdict)
        out.append(f"- **W2S vs DMD2 at {n} step{'s' if n > 1 else ''}** (average): W2S {fmt(cw)} vs DMD2 {fmt(cd)}: "
                   + {"higher": "W2S is higher (the intervals do not overlap).",
                      "lower": "W2S is **lower** (the intervals do not overlap): DMD2 beat W2S here.",
                      "no clear difference": "the 95% intervals overlap: no clear difference at this sample size.",
                      "not comparable": "not comparable (a metric is missing)."}[verdict])
    if not verdicts:
        out.append("- **W2S vs DMD2**: pending (their rows are not measured yet).")
    else:
        beat = all(v == "higher" for v in verdicts)
        out.append("- **Did W2S beat DMD2 here? " + ("Yes" if beat else "No") + ".** "
                   + ("" if beat else "The paper reports W2S ahead at 1 and 4 steps (0.7448 vs 0.7189, 0.8219 vs "
                      "0.8063); this miniature does not show it (see the notes on the teacher and on how far the generators "
                      "moved, below)."))
    reg, w2s4 = Unit("w2s", 4, lambda_reg=settings.lambda_reg, iters=settings.iters), Unit("w2s", 4, iters=settings.iters)
    if reg.id in results and w2s4.id in results:
        dd = "dynamic_degree"
        out.append(f"- **L_reg** (paper: raises image quality, kills motion, dynamic degree 0.04): dynamic degree "
                   f"W2S {fmt(results[w2s4.id]['metrics'].get(dd))} vs W2S + L_reg {fmt(results[reg.id]['metrics'].get(dd))}; "
                   f"motion / reference's {fmt(results[w2s4.id]['metrics'].get('motion_ratio'))} vs "
                   f"{fmt(results[reg.id]['metrics'].get('motion_ratio'))}; "
                   f"imaging quality {fmt(results[w2s4.id]['metrics'].get('imaging_quality'))} vs "
                   f"{fmt(results[reg.id]['metrics'].get('imaging_quality'))}.")
    cis = [(results[u.id]["metrics"].get("average") or {}, u.alpha_weak) for u in plan.alpha if u.id in results]
    cis = [(c, a) for c, a in cis if c.get("mean") is not None]
    if len(cis) == len(plan.alpha) and cis:
        best, best_alpha = max(cis, key=lambda ca: ca[0]["mean"])
        lo, hi = min(c["mean"] for c, _ in cis), max(c["mean"] for c, _ in cis)
        separated = [a for c, a in cis if not overlap(c, best)]
        out.append(f"- **alpha_weak** (paper's best 0.25): averages span {lo:.4f}–{hi:.4f}, highest at alpha_weak = "
                   f"{best_alpha:g}; " + (f"its 95% interval separates from alpha_weak = {', '.join(f'{a:g}' for a in separated)}."
                                          if separated else "all intervals overlap it: no alpha is measurably best here."))
    out += teacher_note(results, settings)
    out += t2v_note(results, settings) if plan.t2v else []
    d = DistillConfig()
    updates = math.ceil(settings.iters / d.generator_every)
    share = 1 - settings.ema_decay ** updates
    out.append(f"- **How far the distilled generators moved.** DMD2/W2S update the generator every {d.generator_every}th "
               f"iteration ({updates} updates in {settings.iters} iterations) and save its EMA (decay {settings.ema_decay:g}, "
               f"updated with the generator), so the evaluated weights are {share:.0%} the trained generator and "
               f"{1 - share:.0%} its initialisation, the teacher. And alpha_weak only acts once the shared LoRA has "
               "moved from zero (its B matrix starts at zero): at the first generator update W2S and DMD2 are the same "
               "update. Short benches therefore give nearly identical W2S, DMD2 and alpha rows.")
    out += [
        "- **What was tried, and why this may differ from the paper.** The methods are implemented as "
        "docs/METHOD.md describes (one frozen backbone, one shared LoRA at scale alpha_weak for the real score and "
        "1.0 for the fake score, 5 fake updates per generator update, DMD2's GAN weights) and run here with the "
        f"defaults of `magicdistill distill` at {settings.iters} iterations. The setting is a miniature: a DiT of a few "
        f"million parameters (checkpoints/tiny/RECORD.md) on {clips} instead of a 13 B model at 540×960×129; metrics from the project's "
        "probe network, not VBench's models; "
        f"{settings.clips} clips × {settings.seeds} sampling seeds × {settings.distill_seeds} distillation seeds per "
        "trained row. The shipped teacher "
        "has a known defect (faces break where the head moves; docs/DECISIONS.md, 'Known defect'), and a distilled "
        "generator can only be as good as the score it matches. Short runs barely move a generator away from its initialisation (the teacher), "
        "so differences between distilled rows at --quick sizes are mostly noise.",
    ]
    return out


def teacher_note(results: dict, settings: Settings, key: str = "fvd") -> list[str]:
    """When the reference teacher scores worse than its own 4-step samples, distribution matching (which moves
    a generator towards the teacher) moves it away from the truth: say so, with the W2S curve's numbers."""
    ref = results.get(Unit("euler", settings.reference_steps).id, {}).get("metrics", {})
    few = results.get(Unit("euler", 4).id, {}).get("metrics", {})
    curve = [results.get(Unit("w2s", 4, iters=k).id, {}).get("metrics", {}) for k in settings.curve_iters]
    if not (ref.get(key) and few.get(key)) or ref[key]["mean"] <= few[key]["mean"]:
        return []
    line = (f"- **The teacher scores worse than its own few-step samples** ({metric_label(key)} {fmt(ref[key])} at "
            f"{settings.reference_steps} steps vs {fmt(few[key])} at 4): its faces break where the head moves (docs/DECISIONS.md, "
            "'Known defect'), and few-step samples are stiller and blurrier, which the probe finds closer to the truth. "
            "Distribution matching moves a generator towards the teacher, so here it moves away from the truth")
    m = "motion_ratio"
    if all(c.get(key) and c.get(m) for c in curve) and ref.get(m):
        line += (f": along the 4-step W2S curve {key.upper()} goes {curve[0][key]['mean']:.1f} → {curve[-1][key]['mean']:.1f} "
                 f"from {settings.curve_iters[0]} to {settings.curve_iters[-1]} iterations while motion / reference's "
                 f"rises {curve[0][m]['mean']:.2f} → {curve[-1][m]['mean']:.2f} towards the teacher's {ref[m]['mean']:.2f}")
    return [line + ". Rows that beat the teacher here are closer to the truth, not better distilled."]


def t2v_note(results: dict, settings: Settings, key: str = "fvd") -> list[str]:
    """Magic 1-For-1's convergence comparison: each W2S curve's FVD above its own teacher's, per iteration count
    (a T2V model never sees the first frame, so its FVD to the truth is higher whatever the distillation)."""
    parts = []
    for teacher in ("ti2v", "t2v"):
        ref = results.get(Unit("euler", settings.reference_steps, teacher=teacher).id, {}).get("metrics", {}).get(key)
        pts = [(k, results.get(Unit("w2s", 4, iters=k, teacher=teacher).id, {}).get("metrics", {}).get(key))
               for k in settings.curve_iters]
        if not ref or ref.get("mean") is None or any(not c or c.get("mean") is None for _, c in pts):
            return ["- **T2V vs TI2V**: pending (a curve point or a teacher row is not measured yet)."]
        gaps = [c["mean"] - ref["mean"] for _, c in pts]
        closed = (1 - gaps[-1] / gaps[0]) if gaps[0] else float("nan")
        parts.append(f"{teacher.upper()} " + ", ".join(f"{g:+.1f}" for g in gaps)
                     + f" (its {settings.reference_steps}-step teacher: {fmt(ref)}; {closed:.0%} of the first point's gap "
                     "closed by the last)")
    return [f"- **T2V vs TI2V** (Magic 1-For-1 Fig. 5: TI2V converges within ~100 iterations, T2V not after 1,000): "
            f"4-step W2S {key.upper()} to the truth minus its own teacher's, at {'/'.join(map(str, settings.curve_iters))} "
            "iterations: " + "; ".join(parts) + ". A generator starts as its teacher sampled in 4 steps without CFG, "
            "which this probe scores closer to the truth than the teacher (a negative gap); distillation moves it "
            "towards the teacher's distribution, so reaching 0 = having converged to the teacher's level, faster "
            "= sooner. This measures convergence only through each model's distance to the truth; a direct measure "
            "would be FVD between each generator's samples and its own teacher's."]


def _shown(path) -> str:
    """A teacher path as the page shows it: the shipped one by its place in the repository (an absolute path
    names one machine's checkout), others as given."""
    p = Path(path).resolve()
    package = Path(__file__).resolve().parents[1]
    try:
        return "src/magicdistill/" + str(p.relative_to(package))
    except ValueError:
        return str(path)
