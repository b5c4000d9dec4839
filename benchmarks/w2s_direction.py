"""Why weak-to-strong matching and vanilla DMD2 nearly tie: the gradient each one gives the generator.

DMD's generator gradient is g = (x0_fake - x0_real) / mean|x_gen - x0_real| (distill/losses.py). Vanilla DMD2 takes
x0_real from the frozen teacher (the shared LoRA at scale 0), W2S from the same LoRA at alpha_weak, both with the
teacher's CFG w. To first order in the LoRA, W2S(alpha, w) is (1 - alpha) times DMD2 with the real CFG
w_eff = 1 + (w - 1) / (1 - alpha), plus a term alpha (w - 1) (D_c - D_u) from the LoRA's change to the CFG direction
(docs/METHOD.md, "W2S and DMD2 to first order"). Adam is invariant to a gradient's overall scale, so the factor
(1 - alpha) changes little.

This script rebuilds a distillation run's method from its config and checkpoint (generator, LoRA), makes x_gen as
training does (noised held-out data through the generator), noises it to each --sigmas, and prints per sigma:
- moved: |x0_fake - x0_teacher| / |x0_teacher - x_gen|, both WITHOUT CFG (the fake score has none): how far
  the trained LoRA moved the score (the CFG gap, |x0_teacher,CFG - x0_teacher|, is printed apart as cfg_gap);
- linearity: |x0(alpha) - x0(0) - alpha (x0(1) - x0(0))| / |alpha (x0(1) - x0(0))| of the LoRA's scale (conditional);
- cosines of the W2S gradient (real score at alpha_weak, 0.25 for a --method dmd run) with DMD2 at the teacher's
  w and with DMD2 at w_eff, and the W2S/DMD2(w_eff) length ratio (first order: 1 - alpha, up to the normaliser);
- resid: |alpha (w - 1) (D_c - D_u)| / |x0_fake - x0_real,W2S|, the part of W2S no real CFG of DMD2 reproduces.

    OMP_NUM_THREADS=2 python benchmarks/w2s_direction.py RUN_DIR [RUN_DIR ...] [--batches 4] [--sigmas 0.3 0.6 0.9]
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch

from magicdistill.config import DataConfig, DistillConfig
from magicdistill.distill import losses
from magicdistill.distill.trainer import build_method, make_batch
from magicdistill.flow import add_noise, x0_from_v
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEncoder
from magicdistill.models.vae import load_vae
from magicdistill.pipeline import SHIPPED_DIR, read_record, resolve_vae_dir
from magicdistill.train.checkpoint import load_checkpoint
from magicdistill.train.teacher import latent_set_for

BATCH = 4


def held_out(teacher: str, clips: int, cache: str):
    """The teacher's first ``clips`` held-out clips (its VAE's latents, its text encoder's embeddings) and the
    empty prompt's embedding, as a distillation run encodes them."""
    meta = read_record(Path(teacher))
    vae_dir = resolve_vae_dir(Path(teacher))
    enc = TextEncoder(max_tokens=meta.get("max_text_tokens", 64))
    test = latent_set_for(DataConfig.of_model(meta), str(vae_dir), "test", clips, load_vae(vae_dir), enc, Path(cache))
    return test, enc([""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="`magicdistill distill` run folders (--method w2s or dmd, shared LoRA)")
    ap.add_argument("--teacher", default=str(SHIPPED_DIR / "teacher"), help="the teacher the runs distilled")
    ap.add_argument("--batches", type=int, default=4, help=f"held-out batches of {BATCH} clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    ap.add_argument("--cache", default="runs/distill_cache", help="latent cache (the runs' --cache-dir, if any)")
    a = ap.parse_args()
    test, null_text = held_out(a.teacher, BATCH * a.batches, a.cache)
    for run in a.runs:
        cfg = DistillConfig.model_validate(json.loads((Path(run) / "config.json").read_text()))
        if cfg.method not in ("w2s", "dmd") or cfg.scores != "shared_lora" or cfg.generator != "full":
            raise SystemExit(f"error: {run} is not a shared-LoRA w2s/dmd run with a full generator")
        weak = cfg.alpha_weak or 0.25  # a dmd run's LoRA, asked what W2S's real score would say
        method = build_method(VideoDiT.load(a.teacher), DistillConfig.strict_update(cfg, alpha_weak=weak))
        load_checkpoint(Path(run) / "checkpoint", modules={k: m for k, m in method.modules().items() if k != "ema"})
        print(f"{run} ({cfg.method}, {cfg.iters} iterations; W2S real score at alpha {weak}, CFG {cfg.real_guidance})")
        w, alpha = cfg.real_guidance, weak
        w_eff = 1 + (w - 1) / (1 - alpha / cfg.alpha_strong)
        print(f"  w_eff = 1 + (w - 1) / (1 - alpha / alpha_strong) = {w_eff:.3f}")
        keys = ("moved", "cfg_gap", "linearity", "cos_dmd_w", "cos_dmd_weff", "ratio_weff", "resid")
        stats = {sigma: {k: [] for k in keys} for sigma in a.sigmas}
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
                    x0 = lambda role, c, scale=None: _x0(method, role, x_t, s, c, scale)  # noqa: E731
                    fake = method._score_x0(x_t, s, cond, None, "fake", 1.0)
                    base_c, base_u = x0("teacher", cond), x0("teacher", uncond)
                    fake_u = x0("fake", uncond)
                    weak_c = x0("fake", cond, alpha)
                    real_w2s = method._score_x0(x_t, s, cond, uncond, "real", w)
                    dmd_w = base_u + w * (base_c - base_u)
                    dmd_weff = base_u + w_eff * (base_c - base_u)
                g_w2s = losses.dmd_loss(x_gen, real_w2s, fake).grad.flatten()
                g_w = losses.dmd_loss(x_gen, dmd_w, fake).grad.flatten()
                g_weff = losses.dmd_loss(x_gen, dmd_weff, fake).grad.flatten()
                d_c, d_u = (fake - base_c) / cfg.alpha_strong, (fake_u - base_u) / cfg.alpha_strong
                st = stats[sigma]
                st["moved"].append(((fake - base_c).norm() / (base_c - x_gen).norm()).item())
                st["cfg_gap"].append(((dmd_w - base_c).norm() / (base_c - x_gen).norm()).item())
                st["linearity"].append(((weak_c - base_c - alpha * d_c).norm() / (alpha * d_c).norm()).item())
                st["cos_dmd_w"].append(torch.nn.functional.cosine_similarity(g_w2s, g_w, dim=0).item())
                st["cos_dmd_weff"].append(torch.nn.functional.cosine_similarity(g_w2s, g_weff, dim=0).item())
                st["ratio_weff"].append((g_w2s.norm() / g_weff.norm()).item())
                st["resid"].append((alpha * (w - 1) * (d_c - d_u)).norm().item() / (fake - real_w2s).norm().item())
        for sigma in a.sigmas:
            m = {k: sum(v) / len(v) for k, v in stats[sigma].items()}
            print(f"  sigma {sigma}: moved {m['moved']:.3f} (cfg_gap {m['cfg_gap']:.3f}), linearity {m['linearity']:.3f}; "
                  f"cos(W2S, DMD2 w={w:g}) {m['cos_dmd_w']:.4f}, cos(W2S, DMD2 w_eff={w_eff:.2f}) {m['cos_dmd_weff']:.4f}, "
                  f"|W2S|/|DMD2 w_eff| {m['ratio_weff']:.3f}, resid {m['resid']:.3f}")


def _x0(method, role: str, x_t, sigma, cond, scale: float | None = None) -> torch.Tensor:
    """x0 of one (unguided) branch in a role, optionally with the shared LoRA at another scale."""
    with method.scores.use(role) as model, (method.lora.scaled(scale) if scale is not None else nullcontext()):
        return x0_from_v(x_t, model(x_t, sigma, cond), sigma)

if __name__ == "__main__":
    main()
