"""Experiment (docs/DECISIONS.md "Stop 9"): can the tiny DiT alone move content between its tokens?

No VAE and no faces: latents (16 channels, 5 latent frames, 16x16) hold one of 4 fixed random 6x6 textures
on a zero background; the first frame places it at random, and every later frame shifts it by --shift latent
pixels in one of 8 directions, named by the conditioning text (a fixed random embedding per direction). With
patch size 2, --shift 2 moves whole tokens and --shift 1 half tokens. A fresh DiT of the embedded default's
size is trained as an I2V teacher (flow matching, shifted logit-normal sigma, x0-residual prediction) and
then samples held-out placements (50 Euler steps, no CFG). Printed: sample error over the later frames
relative to the error of the "still" answer (the first frame repeated): near 0 = the texture moves as told;
near 1 or above = it does not.

    OMP_NUM_THREADS=1 python benchmarks/experiments/toy_translation.py [--shift 2] [--steps 1000]
"""
import argparse
import time

import torch

from magicdistill.config import DiTConfig
from magicdistill.distill.losses import flow_matching_loss
from magicdistill.flow import add_noise, sample_training_sigma
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEmbedding
from magicdistill.sampling import euler_sample

ap = argparse.ArgumentParser()
ap.add_argument("--shift", type=int, default=2, help="latent pixels per latent frame")
ap.add_argument("--steps", type=int, default=1000)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
g = torch.Generator().manual_seed(a.seed)
C, T, H, S = 16, 5, 16, 6
textures = torch.randn(4, C, S, S, generator=g)
dirs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
dir_tokens = torch.randn(len(dirs), 4, 384, generator=g)


def batch(n: int, gen: torch.Generator):
    x = torch.zeros(n, C, T, H, H)
    d = torch.randint(len(dirs), (n,), generator=gen)
    tex = torch.randint(len(textures), (n,), generator=gen)
    span = (T - 1) * a.shift
    for i in range(n):
        dy, dx = dirs[d[i]]
        lo_y, hi_y = (span if dy < 0 else 0), H - S - (span if dy > 0 else 0)
        lo_x, hi_x = (span if dx < 0 else 0), H - S - (span if dx > 0 else 0)
        y0 = int(torch.randint(lo_y, hi_y + 1, (1,), generator=gen))
        x0 = int(torch.randint(lo_x, hi_x + 1, (1,), generator=gen))
        for t in range(T):
            y, xx = y0 + dy * a.shift * t, x0 + dx * a.shift * t
            x[i, :, t, y:y + S, xx:xx + S] = textures[tex[i]]
    text = TextEmbedding(dir_tokens[d], torch.ones(n, 4, dtype=torch.bool), dir_tokens[d].mean(1))
    return x, text


dit = VideoDiT.tiny(DiTConfig(), "i2v").train()
opt = torch.optim.AdamW(dit.parameters(), lr=4e-4, weight_decay=0.01, betas=(0.9, 0.99))
blank = torch.zeros(a.batch, 3, 64, 64)  # the vision encoder's input: no picture in this toy
t0 = time.time()
for step in range(a.steps):
    x0, text = batch(a.batch, g)
    eps = torch.randn(x0.shape, generator=g)
    sigma = sample_training_sigma(a.batch, generator=g, shift=3.0)
    cond = dit.condition(text, blank, x0[:, :, :1])
    loss = flow_matching_loss(dit(add_noise(x0, eps, sigma), sigma, cond), x0, eps)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
    opt.step()
dit.eval()
with torch.no_grad():
    test_gen = torch.Generator().manual_seed(1000 + a.seed)
    x0, text = batch(16, test_gen)
    cond = dit.condition(text, torch.zeros(16, 3, 64, 64), x0[:, :, :1])
    out = euler_sample(dit, torch.randn(x0.shape, generator=test_gen), cond, steps=50, shift=5.0)
    err = (out - x0)[:, :, 1:].pow(2).mean().item()
    still = (x0[:, :, :1] - x0)[:, :, 1:].pow(2).mean().item()
print(f"shift {a.shift} latent px/frame ({a.shift / 2:g} tokens), {a.steps} steps in {time.time() - t0:.0f} s, "
      f"last loss {loss.item():.4f}: sample error / still error {err / still:.3f}")
