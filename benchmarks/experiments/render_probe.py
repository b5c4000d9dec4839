"""Experiment (docs/DECISIONS.md "Stop 11"): which denoiser learns to render a *moving* head, fast?

A teacher run costs an hour; this probe costs minutes. It trains a fresh denoiser only on training clips whose
head sways or nods, only at mid noise (sigma ~ U[--sigma-lo, --sigma-hi], where the sampler creates the face's
detail), with the teacher's loss and conditioning, and then prints its one-step detail error on held-out moving
heads: E|x0_hat - x0|^2 over latent channels >= 3 (the detail channels, each over its own variance) at sigma
0.2, 0.35 and 0.5. Still heads score ~0.02 on this measure after a normal teacher run; moving heads 0.3-0.8,
and that gap is the known defect.

--arch dit: the embedded default's HunyuanVideo DiT (DiTConfig; --embed-tokens, --padding, --skip, --heads).
--warp: the residual over the first frame's latent warped by a predicted flow (first_frame_warp.py).
--arch conv: a reference with the inductive bias the DiT lacks, a residual 3-D conv net at latent resolution
(3x3x3 kernels, sigma by FiLM, no text), behind the same wrapper (x0 as first frame + residual).

    OMP_NUM_THREADS=2 python benchmarks/experiments/render_probe.py --arch dit [--embed-tokens 5] [--padding repeat]
        [--skip gated] [--steps 1000] [--cache DIR]
"""
import argparse
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

from magicdistill.config import DataConfig, DiTConfig
from magicdistill.demo import head_moves, portrait_clips
from magicdistill.distill.losses import flow_matching_loss
from magicdistill.flow import add_noise, x0_from_v
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEncoder
from magicdistill.models.vae import load_vae
from magicdistill.models.vision import PatchVisionEncoder
from magicdistill.pipeline import SHIPPED_DIR
from magicdistill.train.teacher import latent_set_for
from magicdistill.video import frames_to_tensor

ap = argparse.ArgumentParser()
ap.add_argument("--arch", choices=("dit", "conv"), default="dit")
ap.add_argument("--embed-tokens", type=int, default=1)
ap.add_argument("--padding", choices=("zero", "repeat"), default="zero")
ap.add_argument("--skip", choices=("none", "gated"), default="none")
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--embed-frames", type=int, default=1, help="latent frames the DiT's patch embedding reads (odd)")
ap.add_argument("--warp", action="store_true", help="x0 residual over the first frame's latent warped by a predicted flow")
ap.add_argument("--channel-weight", action="store_true", help="weight each latent channel's loss by 1 / its variance")
ap.add_argument("--width", type=int, default=64, help="conv channels (--arch conv)")
ap.add_argument("--steps", type=int, default=1000)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--lr", type=float, default=4e-4)
ap.add_argument("--sigma-lo", type=float, default=0.15)
ap.add_argument("--sigma-hi", type=float, default=0.6)
ap.add_argument("--clips", type=int, default=2000, help="training clips encoded (the teacher recipe's cache is reused)")
ap.add_argument("--cache", default="runs/render_probe_cache")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--save", default=None, help="write the trained denoiser here as a model folder (--arch dit)")
a = ap.parse_args()
torch.manual_seed(a.seed)


class ConvBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.n1, self.n2 = nn.GroupNorm(8, d), nn.GroupNorm(8, d)
        self.c1, self.c2 = nn.Conv3d(d, d, 3, padding=1), nn.Conv3d(d, d, 3, padding=1)
        self.film = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.c2.weight), nn.init.zeros_(self.c2.bias)

    def forward(self, x, temb):
        scale, shift = self.film(temb)[:, :, None, None, None].chunk(2, 1)
        h = self.c1(F.silu(self.n1(x)))
        return x + self.c2(F.silu(self.n2(h) * (1 + scale) + shift))


class ConvDenoiser(nn.Module):
    """Called like diffusers' HunyuanVideoTransformer3DModel by VideoDiT (the context is ignored)."""

    def __init__(self, cin: int, cout: int, d: int, blocks: int = 6):
        super().__init__()
        self.config = types.SimpleNamespace(guidance_embeds=False, image_condition_type="latent_concat",
                                            out_channels=cout, patch_size=2, text_embed_dim=384)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(cin, d, 3, padding=1)
        self.t_embed = nn.Sequential(nn.Linear(64, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(ConvBlock(d) for _ in range(blocks))
        self.out = nn.Conv3d(d, cout, 3, padding=1)

    def forward(self, x, timestep, context, mask, pooled, attention_kwargs=None, return_dict=False):
        freqs = torch.exp(-torch.arange(32) * (9.2 / 32))
        temb = self.t_embed(torch.cat([torch.sin(timestep[:, None] * freqs), torch.cos(timestep[:, None] * freqs)], -1))
        h = self.x_embedder.proj(x)
        for blk in self.blocks:
            h = blk(h, temb)
        return (self.out(F.silu(h)),)


vae = load_vae(SHIPPED_DIR / "vae")
enc = TextEncoder(max_tokens=64)
data = latent_set_for(DataConfig(), str(SHIPPED_DIR / "vae"), "train", a.clips, vae, enc, __import__("pathlib").Path(a.cache))
moving_idx = torch.tensor([i for i, c in enumerate(data.captions) if "sways" in c or "nods" in c])
if a.arch == "dit":
    dit = VideoDiT.tiny(DiTConfig(embed_tokens=a.embed_tokens, image_padding=a.padding, skip=a.skip,
                                  hidden_heads=a.heads), "i2v")
    if a.embed_frames > 1:  # a temporal kernel too: each token also reads the latent frames around its own
        proj = dit.transformer.x_embedder.proj
        k, p = proj.kernel_size, proj.padding
        dit.transformer.x_embedder.proj = nn.Conv3d(proj.in_channels, proj.out_channels, (a.embed_frames, k[1], k[2]),
                                                    proj.stride, (a.embed_frames // 2, p[1], p[2]))
    if a.warp:
        import first_frame_warp
        dit = first_frame_warp.WarpDiT.from_dit(dit)
else:
    dit = VideoDiT(ConvDenoiser(33, 16, a.width), PatchVisionEncoder(384, 16), image_tokens=16,
                   prediction="x0_image_residual", image_padding=a.padding)
dit.train()
weight = 1 / data.latents.transpose(0, 1).flatten(1).var(1).view(1, -1, 1, 1, 1)
weight = weight / weight.mean()
opt = torch.optim.AdamW(dit.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
g = torch.Generator().manual_seed(a.seed)
t0 = time.time()
for step in range(a.steps):
    idx = moving_idx[torch.randint(len(moving_idx), (a.batch,), generator=g)]
    x0 = data.latents[idx]
    eps = torch.randn(x0.shape, generator=g)
    sigma = a.sigma_lo + (a.sigma_hi - a.sigma_lo) * torch.rand(a.batch, generator=g)
    cond = dit.condition(data.text.index(idx).to(dtype=torch.float32), data.first_frame_pixels(idx),
                         data.image_latents[idx])
    v = dit(add_noise(x0, eps, sigma), sigma, cond)
    loss = ((v - (eps - x0)).pow(2) * weight).mean() if a.channel_weight else flow_matching_loss(v, x0, eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
    opt.step()
train_s = time.time() - t0
dit.eval()
with torch.no_grad():
    clips = [c for c in portrait_clips({"height": 64, "width": 64, "num_frames": 17, "fps": 8.0}, 48, 0)
             if head_moves(c)][:16]
    video = torch.stack([frames_to_tensor(c.frames) for c in clips])
    x0 = vae.encode(video)
    cond = dit.condition(enc([c.caption for c in clips]), video[:, :, 0], vae.encode(video[:, :, :1]))
    var = x0[:, :, 1:].transpose(0, 1).flatten(1).var(1).view(1, -1, 1, 1, 1)
    res = []
    for s in (0.2, 0.35, 0.5):
        errs = []
        for k in range(2):
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(100 + k))
            sig = torch.full((len(clips),), s)
            xt = add_noise(x0, eps, sig)
            errs.append(((x0_from_v(xt, dit(xt, sig, cond), sig) - x0)[:, 3:, 1:].pow(2) / var[:, 3:]).mean().item())
        res.append(f"{s}: {sum(errs) / len(errs):.3f}")
desc = (f"conv width {a.width}" if a.arch == "conv" else
        f"dit heads {a.heads} embed_tokens {a.embed_tokens} embed_frames {a.embed_frames} skip {a.skip}"
        f"{' warp' if a.warp else ''}") + \
    f", padding {a.padding}{', channel weights' if a.channel_weight else ''}"
print(f"{desc}, {sum(p.numel() for p in dit.parameters()) / 1e6:.2f} M parameters, {a.steps} steps in {train_s:.0f} s "
      f"(last loss {loss.item():.4f}): moving-head detail error / variance at sigma " + ", ".join(res), flush=True)
if a.save and a.arch == "dit":
    dit.save(a.save, task="i2v", vae=str(SHIPPED_DIR / "vae"), height=64, width=64, num_frames=17, fps=8.0,
             max_text_tokens=64)
