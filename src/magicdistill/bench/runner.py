"""Run the plan: distil each unit's generator, sample the held-out first frames, measure, save.

Resumable at unit granularity: each finished unit is one JSON file in ``OUT/results/``; a re-run
skips it. Distillation runs are resumable too (``distill --resume``): a unit's run continues from
the previous snapshot of the same run, so the curve's snapshots cost one training run, and a kill
loses at most the work since the run's last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..atomic import atomic_file, atomic_folder, write_text_atomic
from ..config import DISTILL_PRESETS, DistillConfig
from ..demo import Sampler, held_out_clips
from ..distill.telemetry import collapse_signal
from ..distill.trainer import distill, sampler_record
from ..distill.w2s import equivalent_dmd_guidance, with_teacher_guidance
from ..models.dit import VideoDiT
from ..models.text import TextEmbedding
from ..pipeline import SHIPPED_DIR, I2VPipeline, model_sampler, read_record, sample_video
from .plan import Plan, Settings, Unit, make_plan
from .provenance import code_commit, provenance
from .stats import nested_ci
from .user_data import bench_data

Evaluate = Callable[..., dict]  # evaluate_videos(videos, reference, *, cond_images=..., teacher=...) -> metrics


@dataclass
class HeldOut:
    """The held-out clips every unit is measured on (test-split identities never seen in training)."""

    truth: torch.Tensor  # (N, 3, T, H, W): ground truth through the VAE, the best any model can show
    first: torch.Tensor  # (N, 3, H, W): the conditioning first frames
    texts: dict[str, TextEmbedding]  # the captions encoded by each teacher's text encoder


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def check_bench_folder(out: Path, record: dict) -> None:
    """A bench folder belongs to one set of settings: resuming with others would mix incomparable rows."""
    f = out / "bench.json"
    record = json.loads(json.dumps(record))  # as it reads back (tuples become lists)
    if f.is_file():
        saved = json.loads(f.read_text())
        changed = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
        if changed:
            raise ValueError(f"{out} holds a bench run with different {', '.join(changed)}; "
                             "use a new --out (or the same flags to continue it)")
    write_json_atomic(f, record)


def default_evaluate(probe: str | Path | None, device: str) -> Evaluate:
    from ..eval.probe import load_probe
    from ..eval.suite import evaluate_videos

    return partial(evaluate_videos, extractor=load_probe(probe, device=device))


def run_bench(out: str | Path, settings: Settings, *, teacher_dir: str | Path | None = None,
              t2v_teacher: str | Path | None = None, docs: str | Path = "docs/RESULTS.md", device: str = "cpu",
              probe: str | Path | None = None, evaluate: Evaluate | None = None, command: str = "",
              plan: Plan | None = None, data: str | Path | None = None) -> Path:
    """Run (or continue) the bench in ``out``; write ``docs`` (RESULTS.md) and its plots. -> the docs path.

    ``evaluate`` [default: eval.suite.evaluate_videos with the probe at ``probe``, default the shipped one].
    ``data``: a cache folder of the user's clips instead of the synthetic portraits (bench/user_data.py)."""
    from .report import write_results

    out = Path(out)
    teachers = {"ti2v": Path(teacher_dir) if teacher_dir else SHIPPED_DIR / "teacher"}
    if t2v_teacher:
        teachers["t2v"] = Path(t2v_teacher)
    for kind, d in teachers.items():
        if not read_record(d):
            raise ValueError(f"no {kind.upper()} teacher at {d} (expected dit.json)")
    if "t2v" in teachers and VideoDiT.load(teachers["t2v"]).is_i2v:
        raise ValueError(f"--t2v-teacher {teachers['t2v']} is an image-to-video model; give a T2V teacher "
                         "(magicdistill train --task t2v)")
    plan = plan or make_plan(settings, t2v="t2v" in teachers)
    evaluate = evaluate or default_evaluate(probe, device)  # (a missing probe fails before anything is written)
    user = bench_data(data, out, settings.clips, teachers) if data else None
    check_bench_folder(out, {"settings": settings.as_dict(), "teachers": {k: str(v.resolve()) for k, v in teachers.items()},
                             **({"data": user.record()} if user else {})})
    if user:
        user.write_train_split()
    t_start = time.time()
    code_commit()  # the commit rows record: read now, before hours of work during which HEAD may move

    # 1. the teachers and the held-out clips, loaded on first use (a finished bench only rewrites its page)
    @cache
    def loaded() -> tuple[dict[str, I2VPipeline], HeldOut]:
        pipes = {k: I2VPipeline.from_dir(d, device=device) for k, d in teachers.items()}
        if user:  # the cache's held-out clips; its text embeddings are every teacher's (checked: same encoder)
            truth, first, text = user.held_out(pipes["ti2v"].vae)
            return pipes, HeldOut(truth, first, {k: text for k in pipes})
        video, captions = held_out_clips(pipes["ti2v"].dit.meta, settings.clips, settings.seed)
        with torch.no_grad():
            truth = pipes["ti2v"].vae.decode(pipes["ti2v"].vae.encode(video.to(device))).cpu()
        return pipes, HeldOut(truth, video[:, :, 0], {k: p.text_encoder(captions) for k, p in pipes.items()})

    def num_frames() -> int:
        return user.num_frames if user else loaded()[0]["ti2v"].spec.num_frames

    refs = plan.teacher_references()

    @cache
    def teacher_samples(kind: str) -> torch.Tensor:
        """The samples of ``kind``'s reference (saved when it was measured; sampled again if the file is missing)."""
        pipes, held = loaded()
        f = teacher_videos_file(out, kind)
        if f.is_file():
            v = torch.load(f)
            if v.shape[:2] == (settings.seeds, held.truth.shape[0]):
                return v
        row = Timed(sampler_for(refs[kind], settings, teachers[kind], pipes[kind], out, device, data_cache=data_cache),
                    pipes[kind], held.texts[kind])
        return save_teacher_videos(f, sample_set(row, held, settings, num_frames())[0])

    # 2. every unit not yet done; the results page is rewritten after each, so a kill leaves it current
    results, reused = {}, 0
    units = plan.units()
    report = partial(write_results, Path(docs), plan, settings=settings, command=command, teachers=teachers, out=out,
                     data_note=user.note() if user else None, data_clips=user.describe() if user else None)
    data_cache = str(user.train_dir) if user else ""
    for unit in tqdm(units, desc="bench", unit="row"):
        path = out / "results" / f"{unit.id}.json"
        if path.is_file():
            results[unit.id] = json.loads(path.read_text())
            reused += 1
            continue
        pipes, held = loaded()
        # a trained row: one generator per distillation seed; a sampler of the teacher: one (nothing was distilled)
        dseeds = settings.distill_seed_values if unit.trained else (None,)
        rows = {d: Timed(sampler_for(unit, settings, teachers[unit.teacher], pipes[unit.teacher], out, device, d,
                                     data_cache), pipes[unit.teacher], held.texts[unit.teacher]) for d in dseeds}
        distill_seconds = snapshot_seconds(out, unit, settings) if unit.trained else None
        reference = None if unit == plan.reference else Timed(
            sampler_for(plan.reference, settings, teachers["ti2v"], pipes["ti2v"], out, device, data_cache=data_cache),
            pipes["ti2v"], held.texts["ti2v"])
        # FVD vs teacher: against the samples of the unit's own teacher at the reference steps (same clips and noise)
        is_ref = refs.get(unit.teacher) == unit
        own = teacher_samples(unit.teacher) if unit.teacher in refs and not is_ref else None
        keep = [] if is_ref else None
        res = measure(unit, rows, held, settings, evaluate, num_frames(), reference, teacher=own, keep=keep)
        if is_ref:  # before the result file: a resumed bench finds either both or resamples the videos
            save_teacher_videos(teacher_videos_file(out, unit.teacher), keep)
        res["distill_seconds"] = distill_seconds
        if unit.trained:  # what the run's telemetry says about collapse, per distillation seed
            res["collapse"] = [{"distill_seed": d, **run_collapse_signal(out, unit, d)} for d in dseeds]
        res["measured"] = provenance()
        write_json_atomic(path, res)
        results[unit.id] = res
        report(results, seconds=time.time() - t_start, reused=reused)
    # 3. the report
    return report(results, seconds=time.time() - t_start, reused=reused)


def sampler_for(unit: Unit, settings: Settings, teacher_dir: Path, pipe: I2VPipeline, out: Path, device: str,
                distill_seed: int | None = None, data_cache: str = "") -> Sampler:
    """The unit's model and sampler: the teacher at N Euler steps with its own CFG, or the generator distilled
    with ``distill_seed`` [default: settings.seed] sampled as its dit.json records."""
    if not unit.trained:  # what `distill --method euler` records, without copying the weights
        rec = sampler_record(with_teacher_guidance(DistillConfig(method="euler", steps=unit.steps), pipe.dit.meta))
        return Sampler(unit.label, pipe.dit, rec["steps"], rec["guidance"], rec["shift"], rec["kind"])
    folder = distilled_generator(unit, settings, teacher_dir, out, device, distill_seed, data_cache)
    dit = VideoDiT.load(folder, device=device)
    rec = model_sampler(dit.meta)
    return Sampler(unit.label, dit, rec["steps"], rec["guidance"], rec["shift"], rec["kind"], rec["eta"])


def distill_config(unit: Unit, settings: Settings, teacher_dir: Path, device: str,
                   distill_seed: int | None = None, data_cache: str = "") -> DistillConfig:
    """The distillation config of a trained unit, distilled with ``distill_seed`` [default: settings.seed]
    (``data_cache``: the training split of a user's cache)."""
    real_guidance = None  # the teacher's own, unless the unit asks for W2S's first-order equivalent or a multiple
    if unit.weff_alpha or unit.real_cfg_x:
        w = with_teacher_guidance(DistillConfig(), read_record(teacher_dir)).real_guidance
        real_guidance = equivalent_dmd_guidance(w, unit.weff_alpha) if unit.weff_alpha else unit.real_cfg_x * w
    # the collapse regime's learning rates: the preset's (every other unit keeps distill's defaults)
    lrs = {k: v for k, v in DISTILL_PRESETS[unit.lrs].items() if k.startswith("lr_")} if unit.lrs else {}
    return DistillConfig(**lrs, method=unit.method, steps=unit.steps, iters=unit.iters, alpha_weak=unit.alpha_weak,
                         lambda_reg=unit.lambda_reg, real_guidance=real_guidance, num_clips=settings.num_clips,
                         seed=settings.seed if distill_seed is None else distill_seed, device=device,
                         ema_decay=settings.ema_decay, data_cache=data_cache,
                         # fixed per bench (a resumed run must keep its config): a checkpoint ~5 times per run
                         checkpoint_every=max(1, settings.iters // 5), sample_every=settings.iters)


def run_collapse_signal(out: Path, unit: Unit, distill_seed: int) -> dict:
    """telemetry.collapse_signal of the run's metrics.jsonl up to this snapshot's iteration (the run may have
    been continued past it since)."""
    f = run_folder(out, unit, distill_seed) / "metrics.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []
    return collapse_signal(rows, up_to=unit.iters)


def run_folder(out: Path, unit: Unit, distill_seed: int) -> Path:
    """``OUT/runs/<run>-s<seed>``: one distillation run per (run, distillation seed)."""
    return out / "runs" / f"{unit.run_id}-s{distill_seed}"


def distilled_generator(unit: Unit, settings: Settings, teacher_dir: Path, out: Path, device: str,
                        distill_seed: int | None = None, data_cache: str = "") -> Path:
    """``OUT/runs/<run>-s<seed>/snapshots/it<K>``: the run's EMA generator after K iterations, made by
    continuing the run (``distill --resume`` with a larger --iters) from its last checkpoint."""
    distill_seed = settings.seed if distill_seed is None else distill_seed
    run = run_folder(out, unit, distill_seed)
    snap = run / "snapshots" / f"it{unit.iters}"
    if (snap / "dit.json").is_file():
        return snap
    cfg = distill_config(unit, settings, teacher_dir, device, distill_seed, data_cache)
    ckpt = run / "checkpoint" / "meta.json"
    if ckpt.is_file() and json.loads(ckpt.read_text())["step"] > unit.iters:
        # the run went past this snapshot (only if a snapshot was deleted by hand): start it over
        print(f"bench: {run} is past iteration {unit.iters}; restarting it")
        shutil.rmtree(run)
    t0 = time.time()
    gen = distill(cfg, teacher_dir, run, resume=ckpt.is_file(), cache_dir=out / "cache")
    with atomic_folder(snap) as tmp:
        shutil.copytree(gen, tmp, dirs_exist_ok=True)
        # kept with the snapshot: a row re-measured later (its result file deleted) still reports the training time
        (tmp / SNAPSHOT_RECORD).write_text(json.dumps({"distill_seconds": time.time() - t0}))
    return snap


SNAPSHOT_RECORD = "bench_snapshot.json"


def snapshot_seconds(out: Path, unit: Unit, settings: Settings) -> float | None:
    """Seconds of distillation that made this snapshot from the previous one, summed over the distillation
    seeds (None if any is not recorded)."""
    files = [run_folder(out, unit, d) / "snapshots" / f"it{unit.iters}" / SNAPSHOT_RECORD
             for d in settings.distill_seed_values]
    if not all(f.is_file() for f in files):
        return None
    return sum(json.loads(f.read_text())["distill_seconds"] for f in files)


@dataclass
class Timed:
    """A sampler with what it needs to sample held-out clip i (its teacher's VAE and text encodings)."""

    sampler: Sampler
    pipe: I2VPipeline
    text: TextEmbedding

    def sample(self, held: HeldOut, i: int, generator: torch.Generator, num_frames: int) -> tuple[torch.Tensor, float]:
        """-> (video (1, 3, T, H, W), seconds), one video as a user would run it."""
        dit, smp = self.sampler.dit, self.sampler
        t = time.perf_counter()
        v = sample_video(dit, self.pipe.vae, self.text.index(torch.tensor([i])), self.pipe.null_text,
                         held.first[i:i + 1] if dit.is_i2v or dit.vision is not None else None, num_frames=num_frames,
                         generator=generator, steps=smp.steps, guidance=smp.guidance, shift=smp.shift, sampler=smp.kind,
                         eta=smp.eta, size=tuple(held.truth.shape[-2:]))
        return v.cpu(), time.perf_counter() - t


def teacher_videos_file(out: Path, teacher: str) -> Path:
    """``OUT/teacher_videos_<teacher>.pt``: the reference sampler's videos, (sampling seeds, clips, 3, T, H, W)."""
    return out / f"teacher_videos_{teacher}.pt"


def save_teacher_videos(path: Path, sets: list[torch.Tensor]) -> torch.Tensor:
    videos = torch.stack(sets)
    with atomic_file(path) as tmp:
        torch.save(videos, tmp)
    return videos


def sample_set(row: Timed, held: HeldOut, settings: Settings, num_frames: int,
               bar: tqdm | None = None) -> tuple[list[torch.Tensor], list[float]]:
    """Every held-out clip with every sampling seed, one video at a time (timed) -> one (N, 3, T, H, W) tensor per
    sampling seed, and the seconds of each video."""
    sets, seconds = [], []
    for s in range(settings.seeds):
        videos = []
        for i in range(held.truth.shape[0]):
            v, sec = row.sample(held, i, torch.Generator().manual_seed(noise_seed(settings.seed, s, i)), num_frames)
            seconds.append(sec)
            videos.append(v)
            if bar is not None:
                bar.update()
        sets.append(torch.cat(videos))
    return sets, seconds


def measure(unit: Unit, rows: dict[int | None, Timed], held: HeldOut, settings: Settings, evaluate: Evaluate,
            num_frames: int, reference: Timed | None = None, pairs: int = 2, *, teacher: torch.Tensor | None = None,
            keep: list | None = None) -> dict:
    """Sample every held-out first frame with every sampling seed, for each distillation seed's generator
    (``rows``: distillation seed -> sampler; one entry, key None, for a sampler of the teacher), one video at a
    time (timed), and compute the metrics per cell: (distillation seed, sampling seed, block of
    ``settings.clip_block`` clips). The noise of (sampling seed s, clip i) is the same for every unit, so rows
    differ by the model only (paired comparison). Each metric's interval is over the distillation seeds with the
    cells nested in them (stats.nested_ci). The time ratio to the reference is measured side by side with the
    first generator: ``pairs`` times the reference then this row on the same clip, median of the ratios (the
    machine's load changes between rows; it changes much less within a pair).

    ``teacher`` (sampling seeds, N, 3, T, H, W): the teacher's videos of the same clips and noise; each cell is also
    measured against its block of them (``evaluate(..., teacher=)``: fvd_teacher, fid_teacher). ``keep``: a list
    that receives the first generator's videos, one tensor per sampling seed."""
    n, block = held.truth.shape[0], settings.clip_block
    seconds, cells, ratios = [], [], []
    bar = tqdm(total=n * settings.seeds * len(rows), desc=unit.label, unit="video", leave=False)
    for dseed, row in rows.items():
        sets, secs = sample_set(row, held, settings, num_frames, bar)
        seconds += secs
        if keep is not None and not keep:
            keep.extend(sets)
        for s, videos in enumerate(sets):
            for k in range(0, n, block):
                own = {} if teacher is None else {"teacher": teacher[s, k:k + block]}
                m = evaluate(videos[k:k + block], held.truth[k:k + block], cond_images=held.first[k:k + block], **own)
                cells.append({**m, "distill_seed": dseed, "seed": s, "block": k // block})
    bar.close()
    first = next(iter(rows.values()))
    for j in range(pairs if reference is not None else 0):
        i, g = j % n, lambda: torch.Generator().manual_seed(noise_seed(settings.seed, 0, j % n))
        ref_sec, row_sec = reference.sample(held, i, g(), num_frames)[1], first.sample(held, i, g(), num_frames)[1]
        ratios.append(row_sec / ref_sec)
    keys = [k for k, v in cells[0].items() if (isinstance(v, (int, float)) or v is None)
            and k not in ("distill_seed", "seed", "block")]
    metrics = {k: nested_ci([[c.get(k) for c in cells if c["distill_seed"] == d] for d in rows]) for k in keys}
    return {"id": unit.id, "unit": unit.as_dict(), "label": unit.label, "nfe": first.sampler.nfe,
            "seconds_per_video": statistics.median(seconds), "seconds": seconds,
            "time_ratio": statistics.median(ratios) if ratios else 1.0, "time_ratios": ratios,
            "distill_seeds": list(rows) if unit.trained else [], "cells": cells, "metrics": metrics,
            "extractor": cells[0].get("extractor", "")}


def noise_seed(base: int, seed_index: int, clip: int) -> int:
    return base + 1000 * seed_index + clip
