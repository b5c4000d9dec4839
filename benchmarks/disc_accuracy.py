"""How well a distillation run's discriminator tells generated from real latents, on held-out clips.

Training logs d_acc on one batch of 4 per logged iteration, which is noisy. This script rebuilds the run's method
from its config and checkpoint (generator, LoRA, head), makes x_gen as training does (noised held-out data through
the generator), noises the generated and the real latents each with its own noise and sigma from the run's
discriminator range (as the fake turn does), and prints the head's accuracy (logit > 0 means real; chance 0.5)
and AUC (P(logit_real > logit_generated); chance 0.5), beside the same for a freshly initialised head (the control).

    OMP_NUM_THREADS=2 python benchmarks/disc_accuracy.py RUN_DIR [--batches 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from magicdistill.config import DistillConfig
from magicdistill.distill.trainer import build_method, make_batch
from magicdistill.models.discriminator import DiscriminatorHead
from magicdistill.models.dit import VideoDiT
from magicdistill.pipeline import SHIPPED_DIR
from magicdistill.train.checkpoint import load_checkpoint
from w2s_direction import held_out  # the same held-out clips as the direction benchmark

BATCH = 4


def auc(real: torch.Tensor, fake: torch.Tensor) -> float:
    """P(a real logit > a generated one) over all pairs, ties counted half."""
    diff = real[:, None] - fake[None, :]
    return ((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a `magicdistill distill` run folder (--method w2s or dmd, shared LoRA, full generator)")
    ap.add_argument("--teacher", default=str(SHIPPED_DIR / "teacher"), help="the teacher the run distilled")
    ap.add_argument("--batches", type=int, default=16, help=f"held-out batches of {BATCH} clips")
    ap.add_argument("--cache", default="runs/distill_cache", help="latent cache (the run's --cache-dir, if any)")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    test, null_text = held_out(a.teacher, BATCH * a.batches, a.cache)
    cfg = DistillConfig.model_validate(json.loads((Path(a.run) / "config.json").read_text()))
    if cfg.method not in ("w2s", "dmd") or cfg.scores != "shared_lora" or cfg.generator != "full":
        raise SystemExit(f"error: {a.run} is not a shared-LoRA w2s/dmd run with a full generator")
    method = build_method(VideoDiT.load(a.teacher), cfg)
    step = load_checkpoint(Path(a.run) / "checkpoint",
                           modules={k: m for k, m in method.modules().items() if k != "ema"})["step"]
    trained = method.head
    torch.manual_seed(1)
    fresh = DiscriminatorHead(trained.heads[0][0].normalized_shape[0], len(cfg.disc_layers))
    logits = {name: {"real": [], "fake": []} for name in ("trained", "fresh")}
    for b in range(a.batches):
        g = torch.Generator().manual_seed(b)
        batch = make_batch(test, torch.arange(b * BATCH, (b + 1) * BATCH), null_text, "cpu")
        cond, _ = method.conditions(batch)
        x_gen = method.generate(batch, g, grad=False)
        for side, x0 in (("fake", x_gen), ("real", batch.x_gt)):
            x_t, sigma = method._disc_input(x0, g)
            for name, head in (("trained", trained), ("fresh", fresh)):
                method.head = head
                logits[name][side].append(method._features_logits(x_t, sigma, cond))
        method.head = trained
    print(f"{a.run} (checkpoint at iteration {step}; {a.batches * BATCH} held-out clips, each side noised on its own, "
          f"sigma ~ U[{cfg.disc_sigma_min}, {cfg.disc_sigma_max}])")
    for name, d in logits.items():
        real, fake = torch.cat(d["real"]), torch.cat(d["fake"])
        acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item()
        print(f"  {name} head: accuracy {acc:.3f}, AUC {auc(real, fake):.3f}, mean logit real {real.mean():.3f} "
              f"vs generated {fake.mean():.3f}")


if __name__ == "__main__":
    main()
