"""Experiment (docs/DECISIONS.md "Stop 9", "Stop 10"): can the tiny DiT alone move content between its tokens?

No VAE and no faces: latents (16 channels, 5 latent frames, 16x16) hold one of 4 fixed random 6x6 textures
on a zero background; the first frame places it at random, and every later frame shifts it by --shift latent
pixels in one of 8 directions, named by the conditioning text (a fixed random embedding per direction);
--directions 1: always to the right, so the text carries nothing and only the motion has to be learnt;
--textures 0: a fresh random texture per clip, so the model cannot memorise the textures and must copy
whatever the first frame holds (as with faces of many identities);
--arch plain: the control, a plain DiT of the same width and depth (pre-norm blocks with adaLN from sigma,
learned absolute positions, no text) in place of the HunyuanVideo transformer, behind the same wrapper;
--embed-kernel 5 --padding repeat: each token's embedding also reads the 2 tokens around it on every side,
and every frame carries the first frame, so copying from a nearby token is a linear map of the input. With
patch size 2, --shift 2 moves whole tokens and --shift 1 half tokens. A fresh DiT of the embedded default's
size is trained as an I2V teacher (flow matching, shifted logit-normal sigma, x0-residual prediction) and
then samples held-out placements (50 Euler steps, no CFG). Printed: sample error over the later frames
relative to the error of the "still" answer (the first frame repeated): near 0 = the texture moves as told;
near 1 or above = it does not.

    OMP_NUM_THREADS=1 python benchmarks/experiments/toy_translation.py [--shift 2] [--steps 1000] [--directions 8]
        [--textures 4] [--arch hunyuan] [--lr 4e-4] [--padding zero] [--embed-kernel 1]
"""
import argparse
import time
import types

import torch
from torch import nn

from magicdistill.config import DiTConfig
from magicdistill.distill.losses import flow_matching_loss
from magicdistill.flow import add_noise, sample_training_sigma
from magicdistill.models.dit import VideoDiT
from magicdistill.models.patch_embed import set_embed_tokens
from magicdistill.models.text import TextEmbedding
from magicdistill.models.vision import PatchVisionEncoder
from magicdistill.sampling import euler_sample

ap = argparse.ArgumentParser()
ap.add_argument("--shift", type=int, default=2, help="latent pixels per latent frame")
ap.add_argument("--steps", type=int, default=1000)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--directions", type=int, choices=(1, 8), default=8)
ap.add_argument("--textures", type=int, default=4, help="fixed textures to draw from; 0: a new one per clip")
ap.add_argument("--arch", choices=("hunyuan", "plain"), default="hunyuan")
ap.add_argument("--lr", type=float, default=4e-4)
ap.add_argument("--padding", choices=("zero", "repeat"), default="zero", help="the first-frame latent in the I2V channels")
ap.add_argument("--embed-kernel", type=int, default=1,
                help="tokens per side the patch embedding reads (odd; 1 = the patch itself, as in HunyuanVideo)")
a = ap.parse_args()
torch.manual_seed(a.seed)
g = torch.Generator().manual_seed(a.seed)
C, T, H, S = 16, 5, 16, 6
textures = torch.randn(max(a.textures, 1), C, S, S, generator=g)
dirs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)] if a.directions == 8 else [(0, 1)]
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
        texture = textures[tex[i]] if a.textures else torch.randn(C, S, S, generator=gen)
        for t in range(T):
            y, xx = y0 + dy * a.shift * t, x0 + dx * a.shift * t
            x[i, :, t, y:y + S, xx:xx + S] = texture
    text = TextEmbedding(dir_tokens[d], torch.ones(n, 4, dtype=torch.bool), dir_tokens[d].mean(1))
    return x, text




class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight), nn.init.zeros_(self.ada.bias)

    def forward(self, z, temb):
        s1, b1, g1, s2, b2, g2 = self.ada(temb)[:, None].chunk(6, -1)
        h = self.norm1(z) * (1 + s1) + b1
        z = z + g1 * self.attn(h, h, h, need_weights=False)[0]
        return z + g2 * self.mlp(self.norm2(z) * (1 + s2) + b2)


class PlainTransformer(nn.Module):
    """Called like diffusers' HunyuanVideoTransformer3DModel by VideoDiT (the context is ignored)."""

    def __init__(self, cin: int, cout: int, tokens: int, d: int = 128, heads: int = 4, layers: int = 6, p: int = 2):
        super().__init__()
        self.config = types.SimpleNamespace(guidance_embeds=False, image_condition_type="latent_concat", out_channels=cout,
                                            patch_size=p)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(cin, d, (1, p, p), (1, p, p))
        self.pos = nn.Parameter(torch.randn(1, tokens, d) * 0.02)
        self.t_embed = nn.Sequential(nn.Linear(64, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(PlainBlock(d, heads) for _ in range(layers))
        self.norm, self.ada = nn.LayerNorm(d, elementwise_affine=False), nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, cout * p * p)

    def forward(self, x, timestep, context, mask, pooled, attention_kwargs=None, return_dict=False):
        b, _, t, h, w = x.shape
        p = self.config.patch_size
        z = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos
        freqs = torch.exp(-torch.arange(32) * (9.2 / 32))  # sinusoidal embedding of sigma * 1000
        temb = self.t_embed(torch.cat([torch.sin(timestep[:, None] * freqs), torch.cos(timestep[:, None] * freqs)], -1))
        for blk in self.blocks:
            z = blk(z, temb)
        shift, scale = self.ada(temb)[:, None].chunk(2, -1)
        o = self.out(self.norm(z) * (1 + scale) + shift)
        o = o.view(b, t, h // p, w // p, -1, p, p).permute(0, 4, 1, 2, 5, 3, 6).reshape(b, -1, t, h, w)
        return (o,)


if a.arch == "plain":
    dit = VideoDiT(PlainTransformer(2 * C + 1, C, T * (H // 2) ** 2), PatchVisionEncoder(384, 16), image_tokens=16,
                   prediction="x0_image_residual").train()
else:
    dit = VideoDiT.tiny(DiTConfig(image_padding=a.padding), "i2v").train()
dit.image_padding = a.padding
set_embed_tokens(dit.transformer, a.embed_kernel)
opt = torch.optim.AdamW(dit.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
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
print(f"{a.arch}, padding {a.padding}, embedding kernel {a.embed_kernel} token(s), {sum(p.numel() for p in dit.parameters()) / 1e6:.2f} M parameters, {a.directions} direction(s), {a.textures or 'a new'} texture(s), shift {a.shift} latent px/frame ({a.shift / 2:g} tokens), {a.steps} steps (lr {a.lr:g}) in {time.time() - t0:.0f} s, "
      f"last loss {loss.item():.4f}: sample error / still error {err / still:.3f}")
