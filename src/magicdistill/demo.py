"""``magicdistill demo``: the newcomer's main job, end to end on the embedded default.

1. a short weak-to-strong distillation of the shipped teacher (4 steps), resumable;
2. held-out first frames (identities never seen in training) sampled by the 50-step CFG teacher,
   the 4-step CFG Euler teacher, the generator distilled in step 1 and, when shipped, the
   fully-trained 4-step generator;
3. a report folder: side-by-side videos (ground truth | each sampler), a contact sheet, a
   metrics table (report.md, metrics.json) with NFE and wall time per video.

The metrics are honest small-sample statistics on the synthetic domain: PSNR against the
held-out ground truth (how much of the actual motion is reproduced; generative samples are not
expected to match it closely), PSNR against the 50-step teacher (how faithfully a few-step
sampler reproduces its teacher), and the collapse ratios of distill/telemetry.py.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DataConfig, DistillConfig
from .data.synthetic import SyntheticVideoConfig, SyntheticVideos
from .distill.telemetry import pixel_drift
from .distill.trainer import distill
from .models.dit import VideoDiT
from .pipeline import SHIPPED_DIR, I2VPipeline, model_sampler, read_record, sample_video
from .train.checkpoint import has_checkpoint
from .video import contact_sheet, frames_to_tensor, tensor_to_frames, write_mp4


@dataclass
class Sampler:
    name: str
    dit: VideoDiT
    steps: int
    guidance: float
    shift: float
    kind: str = "euler"
    eta: float = 0.0  # > 0: stochastic Euler (sampling.euler_sample)

    @property
    def nfe(self) -> int:
        cfg_branches = 2 if self.guidance != 1.0 and not self.dit.transformer.config.guidance_embeds else 1
        return self.steps * cfg_branches


def portrait_clips(meta: dict, n: int, seed: int, split: str = "test") -> list:
    """The first ``n`` portrait clips (``Clip``: frames, caption, labels) of ``split`` at a model's data size."""
    src = SyntheticVideos(SyntheticVideoConfig.of(DataConfig.of_model(meta)), split, seed=seed)
    return [src.clip(i, portrait_only=True) for i in range(n)]


def head_moves(clip) -> bool:
    """Whether a portrait clip's head sways or nods (where the known defect lives; docs/DECISIONS.md)."""
    return clip.labels["sway"] > 0 or clip.labels["nod"] > 0


def held_out_clips(meta: dict, n: int, seed: int):
    """The first ``n`` portrait clips of the test split (held-out identities): (video, captions)."""
    clips = portrait_clips(meta, n, seed)
    return torch.stack([frames_to_tensor(c.frames) for c in clips]), [c.caption for c in clips]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()


def samplers_for(pipe: I2VPipeline, generator_dir: Path, shipped_generator: Path | None) -> list[Sampler]:
    t = model_sampler(pipe.dit.meta)
    out = [Sampler("teacher 50-step CFG", pipe.dit, 50, t["guidance"], t["shift"], eta=t["eta"]),
           Sampler("teacher 4-step CFG (Euler)", pipe.dit, 4, t["guidance"], t["shift"], eta=t["eta"])]
    for name, folder in (("W2S 4-step (this demo)", generator_dir), ("W2S 4-step (shipped)", shipped_generator)):
        if folder is None or not (folder / "dit.json").is_file():
            continue
        dit = VideoDiT.load(folder)
        rec = model_sampler(dit.meta)
        out.append(Sampler(name, dit, rec["steps"], rec["guidance"], rec["shift"], rec["kind"], rec["eta"]))
    return out


def run_demo(out: str | Path, *, iters: int = 150, clips: int = 4, seed: int = 0, num_clips: int = 400,
             teacher_dir: str | Path | None = None, device: str = "cpu") -> Path:
    out = Path(out)
    teacher_dir = Path(teacher_dir) if teacher_dir else SHIPPED_DIR / "teacher"
    meta = read_record(teacher_dir)
    if not meta:
        raise ValueError(f"no teacher at {teacher_dir} (expected dit.json)")
    if iters < 1 or clips < 1:
        raise ValueError("--iters and --clips must be >= 1")
    # 1. distil (resumes a killed demo from its last checkpoint)
    run_dir = out / "distill"
    cfg = DistillConfig(iters=iters, num_clips=num_clips, seed=seed, device=device, sample_every=iters,
                        checkpoint_every=max(10, iters // 5))
    t0 = time.time()
    resume = has_checkpoint(run_dir / "checkpoint")
    gen_dir = distill(cfg, teacher_dir, run_dir, resume=resume, cache_dir=out / "cache")
    distill_seconds = time.time() - t0
    # 2. sample held-out first frames with every sampler, timed
    pipe = I2VPipeline.from_dir(teacher_dir, device=device)
    video, captions = held_out_clips(meta, clips, seed)
    truth = pipe.vae.decode(pipe.vae.encode(video))  # what the VAE can show at best
    text = pipe.text_encoder(captions)
    shipped = SHIPPED_DIR / "generator"
    results, videos = [], {}
    for s in samplers_for(pipe, gen_dir, shipped if shipped.resolve() != gen_dir.resolve() else None):
        seconds = []
        outs = []
        for i in range(clips):  # one video at a time, as a user would run it
            t = time.time()
            with torch.no_grad():
                v = sample_video(s.dit, pipe.vae, text.index(torch.tensor([i])), pipe.null_text, video[i:i + 1, :, 0],
                                 num_frames=meta["num_frames"], generator=torch.Generator().manual_seed(seed + i),
                                 steps=s.steps, guidance=s.guidance, shift=s.shift, sampler=s.kind, eta=s.eta)
            seconds.append(time.time() - t)
            outs.append(v)
        videos[s.name] = torch.cat(outs)
        results.append({"sampler": s.name, "nfe": s.nfe, "seconds_per_video": statistics.median(seconds)})
    reference = videos["teacher 50-step CFG"]
    for r in results:
        v = videos[r["sampler"]]
        later = slice(1, None)  # frame 0 is the conditioning image for every sampler
        r["psnr_vs_truth"] = psnr(v[:, :, later], truth[:, :, later])
        r["psnr_vs_teacher50"] = psnr(v[:, :, later], reference[:, :, later]) if v is not reference else None
        drift = pixel_drift(v, truth)
        r["motion_ratio"], r["saturation_ratio"] = drift["motion_ratio"], drift["saturation_ratio"]
        r["speedup_vs_teacher50"] = results[0]["seconds_per_video"] / r["seconds_per_video"]
    # 3. report
    return write_report(out / "report", results, videos, truth, captions, meta, distill_seconds, cfg)


def write_report(report: Path, results: list[dict], videos: dict[str, torch.Tensor], truth: torch.Tensor,
                 captions: list[str], meta: dict, distill_seconds: float, cfg: DistillConfig) -> Path:
    report.mkdir(parents=True, exist_ok=True)
    names = list(videos)
    sheets = []
    for i in range(len(captions)):
        row = tensor_to_frames(torch.cat([truth[i]] + [videos[n][i] for n in names], dim=-1))  # side by side
        write_mp4(report / f"clip_{i:02d}.mp4", row, meta["fps"])
        sheets.append(row)
    contact_sheet(sheets, every=4, zoom=2).save(report / "overview.png")
    (report / "metrics.json").write_text(json.dumps(
        {"distill_iters": cfg.iters, "distill_seconds": distill_seconds, "columns": ["ground truth"] + names,
         "captions": captions, "rows": results}, indent=1))
    lines = [
        "# magicdistill demo report", "",
        f"Teacher: the shipped tiny TI2V teacher. Distillation: W2S (alpha_weak {cfg.alpha_weak}, alpha_strong "
        f"{cfg.alpha_strong}), {cfg.iters} iterations in {distill_seconds:.0f} s. {len(captions)} held-out clips "
        "(identities never seen in training), one seed each.", "",
        "Videos `clip_XX.mp4`, left to right: " + " | ".join(["ground truth (VAE round trip)"] + names) + ".", "",
        "| sampler | NFE | s / video | speed-up vs 50-step | PSNR vs truth (dB) | PSNR vs 50-step teacher (dB) "
        "| motion ratio | saturation ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['seconds_per_video']:.2f} | {r['speedup_vs_teacher50']:.1f}x "
                     f"| {r['psnr_vs_truth']:.2f} | {_fmt(r['psnr_vs_teacher50'])} | {r['motion_ratio']:.2f} "
                     f"| {r['saturation_ratio']:.2f} |")
    lines += ["", "PSNR over frames after the first (frame 0 is the conditioning image). Ratios compare each "
              "sampler's videos with the ground truth (1 = like the data): motion = mean squared frame "
              "difference, saturation = mean HSV saturation.", "",
              "Captions:", *[f"{i}. {c}" for i, c in enumerate(captions)]]
    (report / "report.md").write_text("\n".join(lines) + "\n")
    return report


def _fmt(x: float | None) -> str:
    return "(itself)" if x is None else f"{x:.2f}"
