"""Experiment (negative, docs/DECISIONS.md "Stop 9"): can a decoder that forgives latent errors hide the
teacher's patchwork? The encoder stays frozen, so the latent space (and every model trained on it) is
unchanged; only the decoder is fine-tuned on latents with Gaussian noise added to the later latent frames
(the first is the image's, exact at inference), per sample of std U(0, --sigma) (none for --p-clean of
the batches), i.i.d. per latent pixel (--kind iid), constant over the DiT's 2x2-latent tokens (token), or
both mixed (mix). Then the teacher's samples (held-out portraits, 50 steps, guidance 2) are decoded by the
old and the new decoder: PSNR of clean reconstructions and blockiness (benchmarks/compare_teachers.py).

    OMP_NUM_THREADS=1 python benchmarks/experiments/decoder_noise_tune.py [--sigma 0.6] [--kind mix] [--steps 300]
        [--sheet S.png]
"""
import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_teachers import blockiness  # noqa: E402

from magicdistill.config import DataConfig  # noqa: E402
from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos  # noqa: E402
from magicdistill.demo import held_out_clips, psnr  # noqa: E402
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, model_sampler, sample_clips  # noqa: E402
from magicdistill.video import contact_sheet, frames_to_tensor, tensor_to_frames  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--sigma", type=float, default=0.6)
ap.add_argument("--kind", choices=("iid", "token", "mix"), default="mix")
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--lr", type=float, default=5e-4)
ap.add_argument("--p-clean", type=float, default=0.25)
ap.add_argument("--clips", type=int, default=16)
ap.add_argument("--sheet", default=None)
a = ap.parse_args()
torch.manual_seed(0)
pipe = I2VPipeline.from_dir(SHIPPED_DIR / "teacher")
vae, base = pipe.vae, copy.deepcopy(pipe.vae).eval()
video, captions = held_out_clips(pipe.dit.meta, a.clips, 0)
rec = model_sampler(pipe.dit.meta)
with torch.no_grad():
    text = pipe.text_encoder(captions)
    samples = sample_clips(pipe.dit, vae, text, pipe.null_text, video[:, :, 0], num_frames=video.shape[2], steps=50,
                           guidance=2.0, shift=rec["shift"], decode=False)
pool = np.stack([c.frames for c in (SyntheticVideos(SyntheticVideoConfig.of(DataConfig()), "train", 0).clip(i)
                                    for i in range(256))])
m = vae.model
m.requires_grad_(False)
params = [p for mod in (m.dec_lin, m.dec_in, m.dec_blocks, m.dec_out, m.refine) for p in mod.parameters()]
for p in params:
    p.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0)


def noisy(z: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = z.shape
    token = torch.randn(b, c, t, h // 2, w // 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    n = {"iid": torch.randn_like(z), "token": token, "mix": (torch.randn_like(z) + token) / 2 ** 0.5}[a.kind]
    n[:, :, 0] = 0  # the image latent is exact at inference
    s = torch.rand(b, 1, 1, 1, 1) * a.sigma * (torch.rand(b, 1, 1, 1, 1) > a.p_clean)
    return z + s * n


for step in range(a.steps):
    rng = np.random.default_rng([0, step])
    x = torch.stack([frames_to_tensor(pool[i]) for i in rng.integers(0, len(pool), 4)])
    with torch.no_grad():
        z = vae.encode(x)
    out = m.decode(noisy(z) / vae.scale + vae.shift).sample
    loss = (out - x).abs().mean() + (out - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
vae.eval()
with torch.no_grad():
    rows = {}
    for name, v in (("shipped decoder", base), ("noise-tuned decoder", vae)):
        recon, smp = v.decode(v.encode(video)), v.decode(samples)
        rows[name] = smp
        print(f"{name}: clean reconstruction PSNR {psnr(recon, video):.2f} dB, blockiness {blockiness(recon):.3f}; "
              f"teacher samples blockiness {blockiness(smp):.3f}")
if a.sheet:
    truth = base.decode(base.encode(video))
    contact_sheet([tensor_to_frames(r[i]) for i in range(min(6, a.clips)) for r in (truth, *rows.values())],
                  every=2, zoom=2).save(a.sheet)
    print(a.sheet)
