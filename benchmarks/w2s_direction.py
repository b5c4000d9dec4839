"""Why weak-to-strong matching and vanilla DMD2 tie here: the gradient each one gives the generator.

DMD's generator gradient is g = (x0_fake - x0_real) / mean|x_gen - x0_real| (distill/losses.py). Vanilla DMD2 takes
x0_real from the frozen teacher (the shared LoRA at scale 0), W2S from the same LoRA at alpha_weak, both with the
teacher's CFG. If the LoRA acts linearly in its scale, v(a) = v(0) + a D, W2S's x0_fake - x0_real is DMD2's minus
alpha_weak times the CFG-combined D: when the LoRA has moved the scores little, nearly the same direction, somewhat
shorter. Adam is invariant to a gradient's overall scale, so the generator then makes nearly the same update.

This script rebuilds a distillation run's method from its config and checkpoint (generator, LoRA), makes x_gen as
training does (noised held-out data through the generator), noises it to each --sigmas, and prints:
- |x0_fake - x0_teacher| over |x0_teacher - x_gen|: how far the trained LoRA moved the fake score;
- the cosine and length ratio of the W2S gradient (real score at alpha_weak, 0.25 for a --method dmd run too) to the
  DMD2 gradient (real score = the teacher), averaged over the held-out batches.
A cosine near 1 means the two methods differ, to first order, only by a step size (docs/DECISIONS.md, "W2S and DMD2 tie"; docs/research/LOG.md, "Stop 13").

    OMP_NUM_THREADS=2 python benchmarks/w2s_direction.py RUN_DIR [RUN_DIR ...] [--batches 4] [--sigmas 0.3 0.6 0.9]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from magicdistill.config import DataConfig, DistillConfig
from magicdistill.distill import losses
from magicdistill.distill.trainer import build_method, make_batch
from magicdistill.flow import add_noise
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEncoder
from magicdistill.models.vae import load_vae
from magicdistill.pipeline import SHIPPED_DIR, read_record, resolve_vae_dir
from magicdistill.train.checkpoint import load_checkpoint
from magicdistill.train.teacher import latent_set_for

BATCH = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="`magicdistill distill` run folders (--method w2s or dmd, shared LoRA)")
    ap.add_argument("--teacher", default=str(SHIPPED_DIR / "teacher"), help="the teacher the runs distilled")
    ap.add_argument("--batches", type=int, default=4, help=f"held-out batches of {BATCH} clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    ap.add_argument("--cache", default="runs/distill_cache", help="latent cache (the runs' --cache-dir, if any)")
    a = ap.parse_args()
    meta = read_record(Path(a.teacher))
    vae_dir = resolve_vae_dir(Path(a.teacher))
    enc = TextEncoder(max_tokens=meta.get("max_text_tokens", 64))
    test = latent_set_for(DataConfig.of_model(meta), str(vae_dir), "test", BATCH * a.batches, load_vae(vae_dir), enc,
                          Path(a.cache))
    null_text = enc([""])
    for run in a.runs:
        cfg = DistillConfig.model_validate(json.loads((Path(run) / "config.json").read_text()))
        if cfg.method not in ("w2s", "dmd") or cfg.scores != "shared_lora" or cfg.generator != "full":
            raise SystemExit(f"error: {run} is not a shared-LoRA w2s/dmd run with a full generator")
        weak = cfg.alpha_weak or 0.25  # a dmd run's LoRA, asked what W2S's real score would say
        method = build_method(VideoDiT.load(a.teacher), DistillConfig.strict_update(cfg, alpha_weak=weak))
        load_checkpoint(Path(run) / "checkpoint", modules={k: m for k, m in method.modules().items() if k != "ema"})
        print(f"{run} ({cfg.method}, {cfg.iters} iterations; W2S real score at alpha {weak}, CFG {cfg.real_guidance})")
        moved, cos, ratio = ({sigma: [] for sigma in a.sigmas} for _ in range(3))
        for b in range(a.batches):
            g = torch.Generator().manual_seed(b)
            batch = make_batch(test, torch.arange(b * BATCH, (b + 1) * BATCH), null_text, "cpu")
            with torch.no_grad():
                cond, uncond = method.conditions(batch)
                x_gen = method.generate(batch, g, grad=False)
            for sigma in a.sigmas:
                s = torch.full((BATCH,), sigma)
                with torch.no_grad():
                    x_t = add_noise(x_gen, torch.randn(x_gen.shape, generator=g), s)
                    fake = method._score_x0(x_t, s, cond, None, "fake", 1.0)
                    teacher = method._score_x0(x_t, s, cond, uncond, "teacher", cfg.real_guidance)
                    weak_real = method._score_x0(x_t, s, cond, uncond, "real", cfg.real_guidance)
                g_dmd = losses.dmd_loss(x_gen, teacher, fake).grad.flatten()
                g_w2s = losses.dmd_loss(x_gen, weak_real, fake).grad.flatten()
                moved[sigma].append(((fake - teacher).norm() / (teacher - x_gen).norm()).item())
                cos[sigma].append(torch.nn.functional.cosine_similarity(g_w2s, g_dmd, dim=0).item())
                ratio[sigma].append((g_w2s.norm() / g_dmd.norm()).item())
        for sigma in a.sigmas:
            n = a.batches
            print(f"  sigma {sigma}: |x0_fake - x0_teacher| / |x0_teacher - x_gen| {sum(moved[sigma]) / n:.3f}  "
                  f"W2S vs DMD2 gradient: cosine {sum(cos[sigma]) / n:.4f}, length ratio {sum(ratio[sigma]) / n:.3f}")


if __name__ == "__main__":
    main()
