"""Can any discriminator head tell a run's generated latents from real ones, given the features it sees?

A ceiling for the GAN term's head, cheaper than a distillation run per setting. The run's generator and LoRA are
frozen at its checkpoint; generated (x_gen, made as training makes it) and real latents of training clips are each
noised on their own (sigma ~ U[0.02, 0.5], recorded), passed once through the fake score (LoRA at alpha_strong)
with every transformer block tapped, and the token features are kept. Fresh heads (the shipped architecture,
models/discriminator.py) are then trained on those cached features for many epochs with each setting (block,
learning rate, Adam beta1, hidden width, sigma range) and scored on held-out clips (their own cached features):
accuracy (logit > 0 = real) and AUC. If no setting gets far above chance here, the features carry little of the
difference, and a real run's head with those settings is unlikely to do better (there the LoRA also trains, which
this probe does not model). Time: 368 s at the defaults on 2 CPU
cores shared at a load average of 11-15.

    OMP_NUM_THREADS=1 python benchmarks/experiments/disc_probe.py RUN_DIR [--train-clips 128] [--test-clips 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: w2s_direction, disc_accuracy
from disc_accuracy import auc  # noqa: E402
from w2s_direction import held_out  # noqa: E402

from magicdistill.config import DataConfig, DistillConfig  # noqa: E402
from magicdistill.distill.trainer import build_method, make_batch  # noqa: E402
from magicdistill.models.discriminator import DiscriminatorHead, FeatureTap  # noqa: E402
from magicdistill.models.dit import VideoDiT  # noqa: E402
from magicdistill.models.text import TextEncoder  # noqa: E402
from magicdistill.models.vae import load_vae  # noqa: E402
from magicdistill.pipeline import SHIPPED_DIR, read_record, resolve_vae_dir  # noqa: E402
from magicdistill.train.checkpoint import load_checkpoint  # noqa: E402
from magicdistill.train.teacher import latent_set_for  # noqa: E402

BATCH = 4
BLOCKS = ("double:0", "double:1", "single:0", "single:1", "single:2", "single:3")


def features(method, data, null_text, n: int, seed: int, tap: FeatureTap):
    """-> {block: (2n, N, D) float16}, labels (2n,) 1 = real, sigmas (2n,)."""
    feats = {b: [] for b in BLOCKS}
    labels, sigmas = [], []
    for b in range(n // BATCH):
        g = torch.Generator().manual_seed(seed + b)
        batch = make_batch(data, torch.arange(b * BATCH, (b + 1) * BATCH), null_text, "cpu")
        cond, _ = method.conditions(batch)
        x_gen = method.generate(batch, g, grad=False)
        for label, x0 in ((0.0, x_gen), (1.0, batch.x_gt)):
            x_t, sigma = method._disc_input(x0, g)
            with method.scores.use("fake") as model, tap.capture() as got:
                model(x_t, sigma, cond)
            for name, f in zip(BLOCKS, got):
                feats[name].append(f.half())
            labels.append(torch.full((BATCH,), label))
            sigmas.append(sigma)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), torch.cat(sigmas)


def train_head(f, y, lr: float, beta1: float, hidden: int | None, epochs: int, seed: int) -> DiscriminatorHead:
    torch.manual_seed(seed)
    head = DiscriminatorHead(f.shape[-1], 1, hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(beta1, 0.99), weight_decay=0.0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(2 * BATCH):  # 4 real + 4 generated per step, as a fake turn
            logits = head([f[idx].float()])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


@torch.no_grad()
def score(head, f, y) -> tuple[float, float]:
    logits = head([f.float()])
    real, fake = logits[y == 1], logits[y == 0]
    acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item()
    return acc, auc(real, fake)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--teacher", default=str(SHIPPED_DIR / "teacher"))
    ap.add_argument("--cache", default="runs/distill_cache")
    ap.add_argument("--train-clips", type=int, default=128)
    ap.add_argument("--test-clips", type=int, default=64)
    ap.add_argument("--num-clips", type=int, default=200, help="the run's --num-clips (its training cache)")
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    t0 = time.time()
    torch.set_grad_enabled(False)
    cfg = DistillConfig.model_validate(json.loads((Path(a.run) / "config.json").read_text()))
    method = build_method(VideoDiT.load(a.teacher), cfg)
    step = load_checkpoint(Path(a.run) / "checkpoint",
                           modules={k: m for k, m in method.modules().items() if k != "ema"})["step"]
    tap = FeatureTap(method.backbone.transformer, list(BLOCKS))
    meta = read_record(Path(a.teacher))
    vae_dir = resolve_vae_dir(Path(a.teacher))
    enc = TextEncoder(max_tokens=meta.get("max_text_tokens", 64))
    train = latent_set_for(DataConfig.of_model(meta), str(vae_dir), "train", a.num_clips, load_vae(vae_dir), enc,
                           Path(a.cache))
    test, null_text = held_out(a.teacher, a.test_clips, a.cache)
    ftr, ytr, str_ = features(method, train, null_text, a.train_clips, 10_000, tap)
    fte, yte, ste = features(method, test, null_text, a.test_clips, 20_000, tap)
    print(f"{a.run} at iteration {step}: {len(ytr)} train / {len(yte)} held-out inputs (half real), sigma ~ "
          f"U[{cfg.disc_sigma_min}, {cfg.disc_sigma_max}]; features cached in {time.time() - t0:.0f} s")
    torch.set_grad_enabled(True)
    rows = [("double:1", 1e-3, 0.0, None), ("double:1", 1e-3, 0.9, None), ("double:1", 3e-3, 0.0, None),
            ("double:1", 1e-2, 0.0, None), ("double:1", 1e-3, 0.9, 512)]
    rows += [(b, 1e-3, 0.9, None) for b in BLOCKS if b != "double:1"]
    for block, lr, beta1, hidden in rows:
        for smax in (0.5, 0.25):
            tr, te = str_ <= smax, ste <= smax
            head = train_head(ftr[block][tr], ytr[tr], lr, beta1, hidden, a.epochs, 0)
            acc_tr, auc_tr = score(head, ftr[block][tr], ytr[tr])
            acc, auc_te = score(head, fte[block][te], yte[te])
            print(f"  {block:9s} lr {lr:g} beta1 {beta1:g} hidden {hidden or 'dim'} sigma<={smax}: "
                  f"held-out accuracy {acc:.3f} AUC {auc_te:.3f} (n {int(te.sum())}) | train {acc_tr:.3f} / {auc_tr:.3f}",
                  flush=True)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
