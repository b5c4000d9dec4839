"""Experiment (negative, docs/DECISIONS.md "Stop 9"): does a stochastic sampler hide the teacher's patchwork?
Euler steps with CFG that re-noise: x' = (1 - s') x0_hat + s' (sqrt(1 - eta^2) eps_hat + eta * fresh noise);
eta 0 is the usual ODE sampler. Prints PSNR to the truth and blockiness (benchmarks/compare_teachers.py) per eta.
This re-noising is not marginal-preserving for eta > 0: it narrows the samples towards the mean (blur) when x0_hat
is a posterior mean (tests/test_sampling.py). The library's stochastic sampler is DDIM's eta instead
(sampling.euler_sample; `compare_teachers.py --eta`); this script stays as stop 9 and 11 ran it.

    OMP_NUM_THREADS=2 python benchmarks/experiments/stochastic_sampling.py [--model DIR] [--clips 6] [--etas 0 0.5 1] [--sheet S.png]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_teachers import blockiness  # noqa: E402

from magicdistill.demo import held_out_clips, psnr  # noqa: E402
from magicdistill.flow import sigma_schedule  # noqa: E402
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, conditions  # noqa: E402
from magicdistill.sampling import guided_velocity  # noqa: E402
from magicdistill.video import contact_sheet, tensor_to_frames  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(SHIPPED_DIR / "teacher"))
ap.add_argument("--clips", type=int, default=6)
ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
ap.add_argument("--guidance", type=float, default=2.0)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--shift", type=float, default=5.0)
ap.add_argument("--sheet", default=None, help="a contact sheet: per clip, truth then each eta")
a = ap.parse_args()
torch.set_grad_enabled(False)
pipe = I2VPipeline.from_dir(a.model)
video, captions = held_out_clips(pipe.dit.meta, a.clips, 0)
text = pipe.text_encoder(captions)
truth = pipe.vae.decode(pipe.vae.encode(video))
sig = sigma_schedule(a.steps, a.shift)
rows = [truth]
for eta in a.etas:
    outs = []
    for i in range(a.clips):
        cond, uncond, img = conditions(pipe.dit, pipe.vae, text.index(torch.tensor([i])), pipe.null_text, video[i:i + 1, :, 0])
        gen = torch.Generator().manual_seed(i)
        x = torch.randn((1, pipe.dit.latent_channels, pipe.vae.latent_frames(video.shape[2]), *img.shape[3:]), generator=gen)
        for k in range(a.steps):
            s, s2 = sig[k], sig[k + 1]
            x0 = x - s * guided_velocity(pipe.dit, x, s.expand(1), cond, uncond, a.guidance)
            eps = (x - (1 - s) * x0) / s
            x = (1 - s2) * x0 + s2 * ((1 - eta ** 2) ** 0.5 * eps + eta * torch.randn(x.shape, generator=gen)) if s2 > 0 else x0
        x[:, :, :1] = img
        outs.append(pipe.vae.decode(x))
    out = torch.cat(outs)
    rows.append(out)
    print(f"eta {eta:g}: PSNR {psnr(out, truth):.2f} dB, blockiness {blockiness(out):.3f} (truth {blockiness(truth):.3f})",
          flush=True)
if a.sheet:
    contact_sheet([tensor_to_frames(r[i]) for i in range(a.clips) for r in rows], every=2, zoom=2).save(a.sheet)
    print(a.sheet)
