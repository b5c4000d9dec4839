"""`magicdistill bench`: the plan, the intervals, a 2-row micro-bench end to end, and resuming."""

import json
import math
import statistics

import pytest
import torch


def test_quick_plan_has_every_table_and_shares_units():
    from magicdistill.bench.plan import FULL, QUICK, Unit, make_plan

    plan = make_plan(QUICK)
    labels = [u.label for u in plan.table1]
    assert labels[:6] == [f"Euler {n}-step (CFG teacher)" for n in (1, 4, 8, 16, 28, 50)]
    for n in (1, 4):
        for name in (f"LCM {n}-step", f"DMD2 {n}-step", f"W2S {n}-step", f"W2S + L_reg (1) {n}-step"):
            assert name in labels
    assert all(u.iters == QUICK.iters for u in plan.table1 if u.trained)
    # alpha 0 is Table 1's DMD2 row, alpha 0.25 its W2S row: trained and measured once
    ids = {u.id for u in plan.table1}
    assert [u.alpha_weak for u in plan.alpha] == [0.0, 0.25, 0.5, 0.75]
    assert plan.alpha[0].id in ids and plan.alpha[1].id in ids and plan.alpha[2].id not in ids
    assert all(c[-1].id in ids for c in plan.curves.values())
    assert not plan.t2v and len(plan.curves) == 2
    units = plan.units()
    # 6 Euler + 8 distilled + DMD2 at W2S's w_eff + 2 extra alphas + 2 earlier snapshots of each of the 2 curves
    # + the collapse regime's DMD2 and W2S
    assert len(units) == len({u.id for u in units}) == 6 + 9 + 2 + 4 + 2
    assert [u.label for u in plan.collapse] == [f"{m} (paper lrs, real CFG 3× the teacher's) 4-step" for m in ("DMD2", "W2S")]
    # the collapse regime, then the alpha ablation's own runs last (a partial bench keeps the rows that decide the method)
    assert units[-4:-2] == plan.collapse and units[-2:] == plan.alpha[2:]
    assert "DMD2 (real CFG w_eff of alpha 0.25) 4-step" in labels
    assert units[0] == Unit("euler", 50)
    w2s4 = [u.iters for u in units if u.run_id == Unit("w2s", 4).run_id]
    assert w2s4 == [4, 8, 16]  # one run, continued snapshot to snapshot
    assert "W2S 4-step (T2V)" in make_plan(QUICK, t2v=True).curves
    assert make_plan(QUICK, t2v=True).units()[:2] == [Unit("euler", 50), Unit("euler", 50, teacher="t2v")]
    # every trained row is distilled with >= 2 seeds, in --quick (CI's bench) and in the full plan; the full plan
    # has >= 32 held-out clips and the 1/2/4-step regimes (Euler far from the teacher at 1 and 2 steps)
    assert QUICK.distill_seeds >= 2 and FULL.distill_seeds >= 2 and FULL.clips >= 32
    assert QUICK.clips // QUICK.clip_block >= 2  # the interval of an Euler row is over clip blocks
    full = make_plan(FULL)
    assert {u.steps for u in full.table1 if u.trained} == {1, 2, 4} and Unit("euler", 2) in full.table1


def test_settings_validation_and_overrides():
    from magicdistill.bench.plan import Settings, settings_for

    assert settings_for(True, iters=40).curve_iters == (5, 10, 20, 40)
    assert settings_for(False, clips=3).clips == 3 and settings_for(False).iters == 200
    assert settings_for(False, clips=3).clip_block == 3  # fewer clips than a block: one block of all of them
    assert settings_for(False, clips=64).clip_block == 8 and settings_for(True, distill_seeds=3).distill_seeds == 3
    with pytest.raises(ValueError, match="multiple of --clip-block"):
        Settings(clips=12, clip_block=5)
    with pytest.raises(ValueError, match="curve_iters"):
        Settings(iters=10, curve_iters=(5, 20))
    with pytest.raises(ValueError, match=">= 1"):
        Settings(seeds=0)


def test_what_would_decide_an_open_comparison_follows_the_page_s_own_sizes():
    """A quick page points at the full bench; the full bench's page at more distillation seeds and longer runs
    (not at itself)."""
    from magicdistill.bench.plan import settings_for
    from magicdistill.bench.report import decide

    assert decide(settings_for(True)).startswith("the full bench, `magicdistill bench --out runs/bench`")
    full = decide(settings_for(False))
    assert "--distill-seeds 4 --iters 1000" in full and "0.71×" in full and "the full bench" not in full
    assert "--distill-seeds 8 --iters 1000" in decide(settings_for(False, distill_seeds=4))


def test_mean_ci_student_t_on_known_numbers():
    from magicdistill.bench.stats import mean_ci, nested_ci, overlap

    # two distillation seeds with 3 and 3 cells: the interval is over the two seed means (2 and 5), df = 1
    ci = nested_ci([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert ci["mean"] == 3.5 and ci["groups"] == 2 and ci["n"] == 6
    assert ci["half_width"] == pytest.approx(12.706205 * statistics.stdev([2.0, 5.0]) / math.sqrt(2), rel=1e-6)
    # not the interval over the six cells as if independent (that would hide the seed-to-seed spread)
    assert ci["half_width"] > mean_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])["half_width"] * 2
    # one group (an Euler row: nothing distilled): over its cells, i.e. clip blocks x sampling seeds
    assert nested_ci([[1.0, 2.0, 3.0]]) == {**mean_ci([1.0, 2.0, 3.0]), "groups": 1}
    assert nested_ci([[None], [2.0, None]]) == {"mean": 2.0, "half_width": None, "n": 1, "groups": 1}

    ci = mean_ci([1.0, 2.0, 3.0])  # s = 1, t_{0.975, 2} = 4.302653
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    two = mean_ci([None, 1.0, 3.0])  # missing values are left out: t_{0.975, 1} = 12.706205, s = sqrt 2
    assert two["n"] == 2 and two["half_width"] == pytest.approx(12.706205, rel=1e-6)
    assert mean_ci([5.0]) == {"mean": 5.0, "half_width": None, "n": 1}
    from magicdistill.bench.report import fmt

    assert fmt({"mean": 298.2, "half_width": 268.94}) == "298.2 ± 268.9" and fmt(mean_ci([5.0])) == "5.000"
    assert fmt({"mean": 0.94537, "half_width": 0.02}) == "0.9454 ± 0.0200" and fmt(None) == "n/a"
    assert mean_ci([1.0, 1.0])["half_width"] == 0.0
    assert not overlap(mean_ci([1.0, 1.1, 0.9]), mean_ci([5.0, 5.1, 4.9]))
    assert overlap(mean_ci([1.0, 2.0, 3.0]), mean_ci([2.5, 3.0, 3.5]))


def test_nice_ticks_cover_the_range_in_round_steps():
    from magicdistill.bench.plot import nice_ticks

    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = nice_ticks(0.61, 0.83)
    assert t[0] >= 0.61 and t[-1] <= 0.83 and len(t) >= 3
    steps = {round(b - a, 9) for a, b in zip(t, t[1:])}
    assert steps == {0.05}


def _stand_in():
    """A deterministic metric function with the suite's signature, counting its calls."""
    calls = []

    def evaluate(videos, reference, *, cond_images=None, teacher=None):
        calls.append(videos.shape[0])
        evaluate.teachers.append(teacher)
        # the distance to the teacher's videos: exact, so a test can recompute it from the saved teacher videos
        own = {} if teacher is None else {"fvd_teacher": float((videos - teacher).abs().mean())}
        return {"average": float(videos.mean()), "fvd": None,
                "motion": float((videos[:, :, 1:] - videos[:, :, :-1]).abs().mean()), "extractor": "stand-in", **own}

    evaluate.teachers = []  # the teacher videos each call was given (None: none)
    return evaluate, calls


def _shipped_generator_as(cfg, teacher_dir, out, *, resume=False, cache_dir=None):
    """Stand-in for distill(): the shipped generator saved with the sampler record of ``cfg``."""
    from magicdistill.distill.trainer import sampler_record
    from magicdistill.models.dit import VideoDiT
    from magicdistill.pipeline import SHIPPED_DIR

    dit = VideoDiT.load(SHIPPED_DIR / "generator")
    dit.save(out / "generator", **{**dit.meta, "sampler": sampler_record(cfg)})
    return out / "generator"


@pytest.mark.parametrize("real", [False, True], ids=["stub-distill", "real-distill"])
def test_micro_bench_end_to_end_and_resume(tmp_path, monkeypatch, real):
    """2 rows + one earlier snapshot (~6 s each on 2 idle cores); the stub variant replaces distillation by the
    shipped generator; the real one distils and checks the run is continued, not restarted."""
    import magicdistill.bench.runner as runner
    from magicdistill.bench.plan import Plan, Settings, Unit
    from magicdistill.bench.runner import run_bench

    distills = []
    inner = runner.distill if real else _shipped_generator_as
    monkeypatch.setattr(runner, "distill",
                        lambda cfg, *a, **k: distills.append((cfg.iters, k["resume"], cfg.seed)) or inner(cfg, *a, **k))
    # an 8-step CFG teacher as the reference (the real bench: 50 steps) keeps the test fast
    s = Settings(iters=2, clips=1, clip_block=1, seeds=2, distill_seeds=2, num_clips=8, curve_iters=(1, 2),
                 distilled_steps=(1,), euler_steps=(8,), reference_steps=8)
    w2s = [Unit("w2s", 1, iters=1), Unit("w2s", 1, iters=2)]
    plan = Plan(table1=[Unit("euler", 8), w2s[1]], alpha=[], curves={"W2S 1-step": w2s}, reference=Unit("euler", 8))
    evaluate, calls = _stand_in()
    docs = tmp_path / "docs" / "RESULTS.md"
    run_bench(tmp_path / "bench", s, docs=docs, evaluate=evaluate, plan=plan, command="magicdistill bench --test")
    assert calls == [1] * 10  # Euler: 2 sampling seeds; each trained unit: 2 distillation seeds x 2 sampling seeds
    # one run per distillation seed, each continued from 1 to 2 iterations (from its checkpoint)
    assert distills == [(1, False, 0), (1, False, 1), (2, real, 0), (2, real, 1)]
    res = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "bench" / "results").glob("*.json")}
    ref, gen = res[Unit("euler", 8).id], res[w2s[1].id]
    assert ref["nfe"] == 16 and gen["nfe"] == 1
    assert [c["distill_seed"] for c in ref["cells"]] == [None, None] and ref["metrics"]["average"]["groups"] == 1
    assert ref["metrics"]["average"]["mean"] == pytest.approx(statistics.fmean(m["average"] for m in ref["cells"]))
    assert len(ref["seconds"]) == 2 and len(gen["seconds"]) == 4
    assert [(c["distill_seed"], c["seed"]) for c in gen["cells"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert gen["distill_seeds"] == [0, 1] and gen["metrics"]["average"]["groups"] == 2
    assert gen["metrics"]["average"]["n"] == 4 and gen["metrics"]["fvd"]["mean"] is None
    # the interval is over the two distillation seeds' means
    means = [statistics.fmean(c["average"] for c in gen["cells"] if c["distill_seed"] == d) for d in (0, 1)]
    assert gen["metrics"]["average"]["mean"] == pytest.approx(statistics.fmean(means))
    assert gen["metrics"]["average"]["half_width"] == pytest.approx(12.706205 * statistics.stdev(means) / math.sqrt(2),
                                                                   rel=1e-6)
    runs = [tmp_path / "bench" / "runs" / f"{w2s[1].run_id}-s{d}" / "snapshots" / "it2" for d in (0, 1)]
    if real:  # two distillation seeds are two different generators (seeds collapsed into one would be equal)
        from safetensors.torch import load_file

        w = [load_file(next((r / "transformer").glob("*.safetensors"))) for r in runs]
        assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])
        assert means[0] != means[1]
    # side by side: each ratio pairs a row's time with the reference's on the same clip (which is faster is a
    # benchmark question, not asserted here: at these millisecond sizes a loaded machine can flip it)
    assert ref["time_ratio"] == 1.0 and len(gen["time_ratios"]) == 2 and gen["time_ratio"] > 0
    assert gen["time_ratio"] == pytest.approx(statistics.median(gen["time_ratios"]))
    assert ref["cells"][0]["average"] != ref["cells"][1]["average"]  # the seeds draw different noise
    # FVD vs teacher: the reference's videos are kept, one set per sampling seed, and every other row's cell is
    # measured against the set of its own sampling seed (the stand-in's fvd_teacher: mean |video - teacher's|)
    teacher = torch.load(tmp_path / "bench" / "teacher_videos_ti2v.pt")
    assert teacher.shape[:3] == (2, 1, 3)
    assert [float(teacher[k].mean()) for k in (0, 1)] == pytest.approx([c["average"] for c in ref["cells"]])
    assert "fvd_teacher" not in ref["metrics"]
    # each of the two trained units' cells (distillation seed 0 then 1, sampling seed 0 then 1) got the teacher's
    # set of its own sampling seed; the reference's none
    given = evaluate.teachers
    assert given[:2] == [None, None] and all(torch.equal(g, teacher[k % 2]) for k, g in enumerate(given[2:10]))
    assert all(c["fvd_teacher"] > 0 for c in gen["cells"]) and gen["metrics"]["fvd_teacher"]["groups"] == 2
    # each trained row carries its runs' collapse signal (telemetry.collapse_signal), one entry per distillation seed
    assert [c["distill_seed"] for c in gen["collapse"]] == [0, 1] and "collapse" not in ref
    if real:  # a real run logs the latent signal from its first iteration and the pixel one at its last
        assert all(c["motion_drift"] > 0 and c["saturation_ratio"] > 0 for c in gen["collapse"])
    assert ref["measured"]["commit"] and ref["measured"]["threads"] >= 1  # each row records where it was measured
    text = docs.read_text()
    # (the exact line depends on the checkout: a tracked file edited mid-test adds a second, "uncommitted" entry)
    header = next(line for line in text.splitlines() if line.startswith("- Measured with git commit: "))
    assert ref["measured"]["commit"] in header
    assert "| Euler 8-step (CFG teacher) | 16 | 1.00 |" in text and "| W2S 1-step | 1 | 0.06 |" in text
    assert "T2V vs TI2V" in text and "not run" in text and "magicdistill bench --test" in text
    assert (docs.parent / "plots" / "bench_steps_average.png").stat().st_size > 1000
    assert (docs.parent / "plots" / "bench_iters_average.png").is_file()
    # resume: a finished unit is skipped; a deleted one is re-measured, without training again, to the same numbers
    (tmp_path / "bench" / "results" / f"{w2s[1].id}.json").unlink()
    (tmp_path / "bench" / "teacher_videos_ti2v.pt").unlink()  # sampled again, to the same videos
    run_bench(tmp_path / "bench", s, docs=docs, evaluate=evaluate, plan=plan)
    assert calls == [1] * 14 and len(distills) == 4
    again = json.loads((tmp_path / "bench" / "results" / f"{w2s[1].id}.json").read_text())
    assert [m["average"] for m in again["cells"]] == [m["average"] for m in gen["cells"]]
    assert [m["fvd_teacher"] for m in again["cells"]] == [m["fvd_teacher"] for m in gen["cells"]]
    assert again["distill_seconds"] == gen["distill_seconds"] > 0  # the training time is kept with the snapshot
    assert "2 of 3 units were measured by an earlier invocation" in docs.read_text()
    run_bench(tmp_path / "bench", s, docs=docs, evaluate=evaluate, plan=plan)
    assert len(calls) == 14 and "3 of 3 units" in docs.read_text()
    with pytest.raises(ValueError, match="different settings"):
        run_bench(tmp_path / "bench", Settings(iters=2, clips=2, clip_block=1, seeds=2, num_clips=8, curve_iters=(1, 2),
                                                euler_steps=(8,), reference_steps=8),
                  docs=docs, evaluate=evaluate, plan=plan)


def test_t2v_curve_distils_and_samples_a_text_to_video_teacher(tmp_path):
    """The T2V-vs-TI2V curve on tiny random teachers: the T2V unit distils its own teacher and samples without a
    first frame at the TI2V held-out size; the page shows the T2V curve instead of 'not run'."""
    from magicdistill.bench.plan import Plan, Settings, Unit
    from magicdistill.bench.runner import run_bench
    from toys import write_tiny_teacher

    ti2v, t2v = write_tiny_teacher(tmp_path / "i"), write_tiny_teacher(tmp_path / "t", "t2v")
    s = Settings(iters=1, clips=1, clip_block=1, seeds=1, distill_seeds=1, num_clips=8, curve_iters=(1,),
                 distilled_steps=(1,), euler_steps=(2,), reference_steps=2)
    unit = Unit("w2s", 1, iters=1, teacher="t2v")
    own = Unit("euler", 2, teacher="t2v")  # the T2V teacher's reference: what the T2V row is measured against
    plan = Plan(table1=[Unit("euler", 2)], alpha=[], curves={"W2S 1-step (T2V)": [unit], "T2V teacher": [own]},
                t2v=True, reference=Unit("euler", 2))
    assert plan.units()[:2] == [Unit("euler", 2), own]  # both teachers' references before any row
    evaluate, calls = _stand_in()
    docs = tmp_path / "RESULTS.md"
    run_bench(tmp_path / "bench", s, teacher_dir=ti2v, t2v_teacher=t2v, docs=docs, evaluate=evaluate, plan=plan)
    row = json.loads((tmp_path / "bench" / "results" / f"{unit.id}.json").read_text())
    assert unit.id.startswith("t2v-") and row["nfe"] == 1 and calls == [1, 1, 1]
    # FVD vs teacher of a T2V row: against the T2V teacher's samples, not the TI2V teacher's
    t2v_videos = torch.load(tmp_path / "bench" / "teacher_videos_t2v.pt")
    assert evaluate.teachers[:2] == [None, None] and torch.equal(evaluate.teachers[2], t2v_videos[0])
    assert not torch.equal(t2v_videos, torch.load(tmp_path / "bench" / "teacher_videos_ti2v.pt"))
    gen = json.loads((tmp_path / "bench" / "runs" / f"{unit.run_id}-s0" / "snapshots" / "it1" / "dit.json").read_text())
    assert gen["task"] == "t2v"
    text = docs.read_text()
    assert "| W2S 1-step (T2V) | 1 |" in text and "not run" not in text and f"T2V teacher: {t2v}" in text
    assert "T2V vs TI2V**: pending" in text  # this plan has no 4-step W2S curves to compare
    with pytest.raises(ValueError, match="image-to-video model"):  # an I2V folder given as the T2V teacher
        run_bench(tmp_path / "b2", s, teacher_dir=ti2v, t2v_teacher=ti2v, docs=docs, evaluate=evaluate, plan=plan)


def test_t2v_note_measures_each_curve_against_its_own_teacher():
    from magicdistill.bench.plan import Settings, Unit, make_plan
    from magicdistill.bench.report import t2v_note

    s = Settings(iters=4, curve_iters=(2, 4))
    plan = make_plan(s, t2v=True)
    assert [u.id for u in plan.curves["T2V teacher (Euler 50-step CFG)"]] == ["t2v-euler-50step"]
    assert "t2v-euler-50step" in {u.id for u in plan.units()}
    row = lambda m: {"metrics": {"fvd": {"mean": m, "half_width": 1.0, "n": 3}}}  # noqa: E731
    results = {"ti2v-euler-50step": row(200.0), "t2v-euler-50step": row(300.0),
               Unit("w2s", 4, iters=2).id: row(230.0), Unit("w2s", 4, iters=4).id: row(210.0),
               Unit("w2s", 4, iters=2, teacher="t2v").id: row(400.0)}
    assert "pending" in t2v_note(results, s)[0]
    results[Unit("w2s", 4, iters=4, teacher="t2v").id] = row(350.0)
    note = t2v_note(results, s)[0]
    assert ("at 2/4 iterations: TI2V +30.0, +10.0 (its 50-step teacher: 200.0 ± 1.0; 67% of the first point's gap "
            "closed by the last); T2V +100.0, +50.0 (its 50-step teacher: 300.0 ± 1.0; 50%") in note


def test_teacher_note_only_when_the_teacher_scores_worse_than_its_few_step_samples():
    from magicdistill.bench.plan import Settings, Unit
    from magicdistill.bench.report import teacher_note

    s = Settings(iters=4, curve_iters=(2, 4))
    row = lambda fvd, motion: {"metrics": {"fvd": {"mean": fvd, "half_width": 1.0, "n": 3},  # noqa: E731
                                           "motion_ratio": {"mean": motion, "half_width": 0.1, "n": 3}}}
    results = {Unit("euler", 50).id: row(150.0, 1.15), Unit("euler", 4).id: row(125.0, 0.67),
               Unit("w2s", 4, iters=2).id: row(124.0, 0.63), Unit("w2s", 4, iters=4).id: row(163.0, 0.89)}
    note = teacher_note(results, s)[0]
    assert "FVD (per clip) ↓ 150.0 ± 1.0 at 50 steps vs 125.0 ± 1.0 at 4" in note
    assert "FVD goes 124.0 → 163.0 from 2 to 4 iterations while motion / reference's rises 0.63 → 0.89 towards the " \
           "teacher's 1.15" in note
    results[Unit("euler", 50).id] = row(100.0, 1.15)  # a teacher better than its 4-step samples: nothing to say
    assert teacher_note(results, s) == []


def test_partial_results_page_marks_pending_rows(tmp_path):
    """The page is rewritten after every unit: a killed bench leaves it current, with the rest pending."""
    from magicdistill.bench.plan import Plan, Settings, Unit
    from magicdistill.bench.report import write_results

    s = Settings(iters=2, clips=1, clip_block=1, seeds=2, curve_iters=(2,), euler_steps=(8,), reference_steps=8,
                 distilled_steps=(1,))
    ref, w2s, dmd = Unit("euler", 8), Unit("w2s", 1, iters=2), Unit("dmd", 1, alpha_weak=0.0, iters=2)
    plan = Plan(table1=[ref, w2s, dmd], alpha=[], curves={}, reference=ref)
    render = lambda: write_results(tmp_path / "R.md", plan, done, s, command="c",  # noqa: E731
                                   teachers={"ti2v": tmp_path}, seconds=1.0, out=tmp_path).read_text()
    done = {ref.id: {"id": ref.id, "label": ref.label, "nfe": 16, "seconds_per_video": 2.0,
                     "metrics": {"average": {"mean": 0.5, "half_width": 0.1, "n": 2}}}}
    text = render()
    assert "Partial: 2 of 3 units not measured yet" in text
    assert "1 row measured before rows recorded this" not in text  # no row records it: no header line
    done[ref.id].update(seconds=[30.0, 90.0], distill_seconds=None)
    text = render()
    assert "distillation 0.0 min, sampling 2.0 min" in text
    assert "| Euler 8-step (CFG teacher) | 16 | 1.00 | 2.00 | 1.000 | 0.5000 ± 0.1000 |" in text
    assert "| W2S 1-step | pending | pending | pending | pending | pending |" in text
    assert "W2S vs DMD2**: pending" in text
    # both measured: the verdict follows the intervals (W2S clearly lower here)
    done[w2s.id] = {**done[ref.id], "id": w2s.id, "label": w2s.label, "nfe": 1,
                    "metrics": {"average": {"mean": 0.2, "half_width": 0.05, "n": 2}}}
    done[dmd.id] = {**done[w2s.id], "id": dmd.id, "label": dmd.label, "metrics": {"average": {"mean": 0.4, "half_width": 0.05, "n": 2}}}
    text = render()
    assert "Partial" not in text and "DMD2 beat W2S here" in text and "Did W2S beat DMD2 here? No" in text
    # the header reports the rows' own provenance, not the writing process's
    machine = {"commit": "abc1234", "date": "2026-01-02 03:04 UTC", "machine": "Box, 2 CPU cores", "threads": 2,
               "torch": "9.9", "load": 0.5}
    done[ref.id]["measured"] = machine
    done[w2s.id] = {**done[w2s.id], "measured": {**machine, "commit": "def5678", "load": 3.0}}
    text = render()
    assert "- Measured with git commit: abc1234 (1 of 2 rows); def5678 (1 of 2 rows)" in text
    assert "- Measured with machine: Box, 2 CPU cores, 2 torch threads, torch 9.9\n" in text
    assert "load average when each row finished: 0.5–3.0" in text
    assert "1 row measured before rows recorded this" in text


@pytest.mark.parametrize("args,needle", [
    (["--seeds", "0"], "--seeds and --distill-seeds must be >= 1"),
    (["--distill-seeds", "0"], "--seeds and --distill-seeds must be >= 1"),
    (["--clips", "12", "--clip-block", "5"], "--clips (12) must be a multiple of --clip-block (5)"),
    (["--iters", "0"], ">= 1"),
    (["--t2v-teacher", "TI2V"], "is an image-to-video model"),
    (["--teacher", "nowhere"], "no TI2V teacher at nowhere"),
    (["--probe", "nowhere"], "no probe at nowhere"),
])
def test_bench_cli_bad_input_is_one_line_error_before_any_work(tmp_path, args, needle):
    from typer.testing import CliRunner

    from magicdistill.cli import app
    from magicdistill.pipeline import SHIPPED_DIR

    args = [str(SHIPPED_DIR / "teacher") if a == "TI2V" else a for a in args]
    r = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), "--docs", str(tmp_path / "R.md"), *args])
    assert r.exit_code == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # (torchao prints at import)
    assert len(err) == 1 and needle in err[0], r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "R.md").exists()


def test_weff_row_distils_dmd2_with_the_first_order_equivalent_real_cfg(tmp_path):
    from magicdistill.bench.plan import QUICK, Unit
    from magicdistill.bench.runner import distill_config
    from magicdistill.distill.w2s import equivalent_dmd_guidance

    (tmp_path / "dit.json").write_text(json.dumps({"sampler": {"kind": "euler", "steps": 50, "guidance": 2.0,
                                                                "shift": 5.0}}))
    cfg = distill_config(Unit("dmd", 4, alpha_weak=0.0, iters=16, weff_alpha=0.25), QUICK, tmp_path, "cpu")
    assert cfg.method == "dmd" and cfg.real_guidance == pytest.approx(1 + 1 / 0.75)
    assert distill_config(Unit("dmd", 4, alpha_weak=0.0, iters=16), QUICK, tmp_path, "cpu").real_guidance is None
    assert equivalent_dmd_guidance(2.0, 0.25) == pytest.approx(7 / 3)
    assert equivalent_dmd_guidance(3.0, 0.5, 2.0) == pytest.approx(1 + 2 / 0.75)
    assert equivalent_dmd_guidance(2.0, 0.0) == 2.0


def test_collapse_units_distil_with_the_papers_lrs_and_a_high_real_cfg_and_leave_other_runs_unchanged(tmp_path):
    from magicdistill.bench.plan import FULL, QUICK, Unit, make_plan
    from magicdistill.bench.runner import distill_config
    from magicdistill.config import DistillConfig

    (tmp_path / "dit.json").write_text(json.dumps({"sampler": {"kind": "euler", "steps": 50, "guidance": 2.0,
                                                                "shift": 5.0}}))
    dmd, w2s = make_plan(FULL).collapse
    default = DistillConfig()
    for u, method in ((dmd, "dmd"), (w2s, "w2s")):
        cfg = distill_config(u, FULL, tmp_path, "cpu")
        assert cfg.method == method and cfg.real_guidance == pytest.approx(6.0) and cfg.iters == FULL.iters
        assert (cfg.lr_generator, cfg.lr_fake, cfg.lr_disc) == (2e-6, 2e-6, 2e-6)
        assert cfg.batch_size == default.batch_size  # only the learning rates are the preset's
    assert dmd.run_id == "ti2v-dmd-4step-lrpaper-cfgx3" and w2s.run_id == "ti2v-w2s-4step-a0.25-reg0-lrpaper-cfgx3"
    # every other unit keeps its run (the folder a bench resumes from) and distill's learning rates
    plan = make_plan(FULL, t2v=True)
    others = {u.run_id for u in plan.units() if u.trained and u not in plan.collapse}
    assert others == {"ti2v-lcm-1step", "ti2v-lcm-2step", "ti2v-lcm-4step", "ti2v-dmd-1step", "ti2v-dmd-2step",
                      "ti2v-dmd-4step", "ti2v-dmd-4step-weff0.25", "t2v-w2s-4step-a0.25-reg0",
                      *(f"ti2v-w2s-{n}step-a0.25-reg{r}" for n in (1, 2, 4) for r in (0, 1)),
                      *(f"ti2v-w2s-4step-a{a}-reg0" for a in (0.5, 0.75))}
    quick = make_plan(QUICK)
    for u in (u for u in quick.units() if u.trained and u not in quick.collapse):
        cfg = distill_config(u, QUICK, tmp_path, "cpu")
        assert (cfg.lr_generator, cfg.lr_fake, cfg.lr_disc) == (default.lr_generator, default.lr_fake, default.lr_disc)
        assert cfg.real_guidance is None or u.weff_alpha


def test_report_names_the_shipped_teacher_by_its_place_in_the_repository():
    from magicdistill.bench.report import _shown
    from magicdistill.pipeline import SHIPPED_DIR

    assert _shown(SHIPPED_DIR / "teacher") == "src/magicdistill/checkpoints/tiny/teacher"
    assert _shown("runs/t2v/teacher") == "runs/t2v/teacher"


def test_gap_share_and_findings_lead_with_measured_comparisons():
    from magicdistill.bench.findings import findings, gap_share, gap_table
    from magicdistill.bench.plan import Plan, Settings, Unit

    s = Settings(iters=2, clips=8, curve_iters=(2,), euler_steps=(1, 50), distilled_steps=(1,))
    ci = lambda m, h: {"mean": m, "half_width": h, "n": 2}  # noqa: E731
    row = lambda u, fvd, fid, nfe: {"id": u.id, "label": u.label, "nfe": nfe, "time_ratio": nfe / 100,  # noqa: E731
                                    "metrics": {"fvd": fvd, "fid": fid}}
    e1, t, w2s, dmd = Unit("euler", 1), Unit("euler", 50), Unit("w2s", 1, iters=2), Unit("dmd", 1, alpha_weak=0.0, iters=2)
    results = {e1.id: row(e1, ci(200.0, 5.0), ci(8.0, 0.5), 2), t.id: row(t, ci(100.0, 5.0), ci(4.0, 0.5), 100),
               w2s.id: row(w2s, ci(120.0, 5.0), ci(8.2, 0.5), 1), dmd.id: row(dmd, ci(150.0, 5.0), ci(6.8, 0.5), 1)}
    # (Euler_1 - row) / (Euler_1 - teacher): FVD (200 - 120) / (200 - 100) = 0.8; FID (8 - 6.8) / (8 - 4) = 0.3
    assert gap_share(results, w2s, 50, "fvd") == pytest.approx(0.8)
    assert gap_share(results, dmd, 50, "fid") == pytest.approx(0.3)
    assert gap_share(results, w2s, 50, "fid") == pytest.approx(-0.05)
    plan = Plan(table1=[e1, t, w2s, dmd], alpha=[], curves={}, reference=t)
    table = "\n".join(gap_table(plan, results, s))
    assert "| W2S 1-step | +80% | -5% |" in table and "| DMD2 1-step | +50% | +30% |" in table
    lines = findings(plan, results, s, "RUN IT")
    assert any("1 step, FVD**: the best distilled row, W2S 1-step (120.0 ± 5.0), **beats** 1-step Euler (200.0 ± 5.0)"
               in line and "+80% of the Euler-to-teacher gap closed; 1 NFE against the teacher's 100" in line
               for line in lines)
    assert not any("Not decided" in line for line in lines)  # every interval here separates
    assert any("W2S vs DMD2 at 1 steps**: W2S's FVD is lower" in line for line in lines)
    # a gap inside the noise is no gap: Euler_1 within the teacher's interval gives no share, and the open
    # comparisons are listed with the run that would decide them
    results[e1.id]["metrics"]["fvd"] = ci(104.0, 5.0)
    results[dmd.id]["metrics"]["fvd"] = ci(118.0, 5.0)
    assert gap_share(results, w2s, 50, "fvd") is None
    assert "| W2S 1-step | no measured gap | -5% |" in "\n".join(gap_table(plan, results, s))
    lines = findings(plan, results, s, "RUN IT")
    assert any("Not decided at this sample size" in line and "W2S vs DMD2 at 1 step" in line and "RUN IT" in line
               for line in lines)
    assert any("Did not reproduce: W2S ahead of DMD2" in line for line in lines)


def test_collapse_regime_table_findings_and_l_reg_motion_on_the_page(tmp_path):
    from magicdistill.bench.findings import collapse_table, findings
    from magicdistill.bench.plan import Plan, Settings, Unit
    from magicdistill.bench.report import write_results

    s = Settings(iters=2, clips=1, clip_block=1, seeds=1, curve_iters=(2,), euler_steps=(1, 50), distilled_steps=(1,))
    ci = lambda m, h=0.01: {"mean": m, "half_width": h, "n": 2}  # noqa: E731
    ref, w2s, reg = Unit("euler", 50), Unit("w2s", 1, iters=2), Unit("w2s", 1, lambda_reg=1.0, iters=2)
    cdmd = Unit("dmd", 4, alpha_weak=0.0, iters=2, lrs="paper", real_cfg_x=3.0)
    cw2s = Unit("w2s", 4, iters=2, lrs="paper", real_cfg_x=3.0)
    plan = Plan(table1=[ref, w2s, reg], alpha=[], curves={}, reference=ref, collapse=[cdmd, cw2s])

    def row(u, motion, fvd_teacher=None, collapse=None):
        metrics = {"fvd": ci(100.0, 1.0), "motion_ratio": ci(motion), "average": ci(0.5)}
        if fvd_teacher is not None:
            metrics["fvd_teacher"] = ci(fvd_teacher, 1.0)
        return {"id": u.id, "label": u.label, "nfe": 1, "seconds_per_video": 1.0, "metrics": metrics,
                **({"collapse": collapse} if collapse else {})}

    sig = lambda d, flagged, rms: {"distill_seed": d, "flagged_at": flagged, "motion_drift": 0.9,  # noqa: E731
                                   "rms_drift": rms, "saturation_ratio": rms, "motion_ratio": 0.5}
    results = {ref.id: row(ref, 1.1), w2s.id: row(w2s, 0.9, 20.0), reg.id: row(reg, 0.6, 30.0),
               cdmd.id: row(cdmd, 0.3, 80.0, [sig(0, 40, 2.0), sig(1, 60, 2.2)]),
               cw2s.id: row(cw2s, 0.8, 25.0, [sig(0, None, 1.0), sig(1, None, 1.1)])}
    lines = findings(plan, results, s, "RUN IT")
    assert any("L_reg and motion at 1 step**" in x and "0.6000 ± 0.0100 with L_reg vs 0.9000 ± 0.0100 without" in x
               and "**reduces motion**" in x for x in lines)
    collapse = next(x for x in lines if x.startswith("- **Collapse regime**"))
    assert "flagged as collapsing in 2 of 2 distillation seeds, W2S's in 0 of 2" in collapse
    assert "W2S collapsed in fewer runs" in collapse and "W2S 25.00 ± 1.00 vs DMD2 80.00 ± 1.00, W2S lower" in collapse
    table = "\n".join(collapse_table(plan, results, s))
    assert "| DMD2 (paper lrs, real CFG 3× the teacher's) 4-step | 100.0 ± 1.0 | 80.00 ± 1.00 | 0.5000 ± 0.0100 | " \
           "0.3000 ± 0.0100 | 40 / 60 | 0.9000 ± 0.0000 | 2.100 ± 1.271 |" in table
    assert "| W2S (paper lrs, real CFG 3× the teacher's) 4-step |" in table and "| none / none |" in table
    # no DMD2 collapse: W2S's prevention is not tested, and said so; equal motion: L_reg's effect is undecided
    for c in results[cdmd.id]["collapse"]:
        c["flagged_at"] = None
    results[reg.id]["metrics"]["motion_ratio"] = ci(0.9)
    lines = findings(plan, results, s, "RUN IT")
    assert any("**DMD2 did not collapse here**" in x for x in lines)
    assert any("Not decided" in x and "L_reg's effect on motion at 1 step" in x for x in lines)
    # the page: Table 1 has the FVD vs teacher and motion columns, the collapse section its table
    text = write_results(tmp_path / "R.md", plan, results, s, command="c", teachers={"ti2v": tmp_path}, seconds=1.0,
                         out=tmp_path).read_text()
    header = next(x for x in text.splitlines() if x.startswith("| row | NFE |"))
    assert "| FVD (per clip) ↓ | FVD vs teacher ↓ |" in header and "motion / reference's (1 = same)" in header
    assert "| W2S 1-step | 1 | 1.00 | 1.00 |" in text and "| 20.00 ± 1.00 |" in text
    assert "## Collapse regime (MagicDistillation Fig. 2)" in text and "| 80.00 ± 1.00 | 0.5000 ± 0.0100 | 0.3000 ± 0.0100 | none / none |" in text
