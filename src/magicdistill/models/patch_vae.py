"""The embedded default's video VAE: a causal patch autoencoder with a PCA-initialised linear path.

Layout like HunyuanVideo's VAE: causal 4x temporal (the first frame is encoded alone, then groups
of 4 frames), 4x spatial; T = 1 + 4k frames -> 1 + k latent frames.

Why not a small AutoencoderKLHunyuanVideo / AutoencoderKLWan? Measured on this 2-core CPU (see
docs/DECISIONS.md): both still reconstructed worse than a per-clip mean colour after 100-200
steps (~1 s each); from-scratch conv VAEs need thousands of steps we cannot afford. Here the
linear path starts at the PCA optimum of the patch space (PSNR ~23 dB before any training) and
zero-initialised residual conv branches learn the rest, so a few minutes of training suffice.
Real VAEs (Hunyuan, Wan) plug into the same ``VideoVAE`` adapter.

Causality: the encoder mixes space only within a latent frame; the decoder adds a causal
temporal conv (kernel 2 over latent frames), so latent frame t depends on pixels <= its group
and decoded frames depend on latents <= theirs. Hence decoding can be chunked over time.

Decoder context (``decoder_context`` K > 0, the shipped VAE's decoder). With K = 0 each latent
frame's group of r frames is decoded from that latent alone (plus the residual branch's kernel-2
conv), and the linear path cannot put motion *inside* a group: the 12x-compressed patch keeps the
group's mean and little of its motion, so decoded videos stood still for 4 frames and jumped at
every group boundary (phase-0 frame differences 2.3x the others on held-out clips, the data's own
ratio 1.1). K > 0 adds (a) a linear path from latent frames t, t-1, ..., t-K (5x5 latent
positions around the patch, so content can move across patches) to group t's patch, so a group
can continue from where the previous one ended, and (b) a causal pixel-frame refine that sees the previous decoded frame.
Both are zero-initialised: a K > 0 decoder starts as the K = 0 one, and the encoder (hence the
latent space the DiTs were trained in) is unchanged; ``magicdistill train-vae --decoder-only``
fine-tunes only the decoder. Still causal: decoded frames depend on latents <= theirs.

The first frame is encoded as a *static group* (itself repeated r times) through the same path
as every other group, as causal-conv VAEs do with replicate padding: a still video has equal
latent frames, so the image-to-video DiT's image latent lives in the same space as the frames it
predicts (measured: with a separate first-frame basis the DiT could not even copy the image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class _ResBlock(nn.Module):
    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.norm = nn.GroupNorm(8, dim)
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.tconv = nn.Conv1d(dim, dim, 2) if temporal else None
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x (B*T, D, h, w) with T latent frames per sample."""
        h = self.conv1(F.silu(self.norm(x)))
        if self.tconv is not None:
            bt, d, hh, ww = h.shape
            seq = h.view(bt // t, t, d, hh, ww).permute(0, 3, 4, 2, 1).reshape(-1, d, t)
            seq = self.tconv(F.pad(seq, (1, 0), mode="replicate"))  # causal: frame t sees t-1 and t
            h = h + seq.view(bt // t, hh, ww, d, t).permute(0, 4, 3, 1, 2).reshape(bt, d, hh, ww)
        return x + self.conv2(F.silu(h))


class CausalPatchVAE(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, latent_channels: int = 8, spatial_ratio: int = 4, temporal_ratio: int = 4, hidden: int = 96,
                 blocks: int = 2, latents_mean: list[float] | None = None, latents_std: list[float] | None = None,
                 decoder_context: int = 0):
        super().__init__()
        c, s, r = latent_channels, spatial_ratio, temporal_ratio
        self.p = 3 * r * s * s  # one patch: r frames x s x s pixels x RGB
        # linear (PCA) path; mean rows get the principal directions, logvar starts at std ~ 0.02
        self.enc_lin, self.dec_lin = nn.Linear(self.p, 2 * c), nn.Linear(c, self.p)
        # nonlinear residual branches (output layers zero-initialised)
        self.enc_in = nn.Linear(self.p, hidden)
        self.enc_blocks = nn.ModuleList(_ResBlock(hidden, temporal=False) for _ in range(blocks))
        self.enc_out = nn.Conv2d(hidden, 2 * c, 1)
        self.dec_in = nn.Conv2d(c, hidden, 1)
        self.dec_blocks = nn.ModuleList(_ResBlock(hidden, temporal=True) for _ in range(blocks))
        self.dec_out = nn.Conv2d(hidden, self.p, 1)
        self.refine = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))
        if decoder_context < 0:
            raise ValueError(f"decoder_context must be >= 0 previous latent frames, got {decoder_context}")
        zeroed = [self.enc_out, self.dec_out, self.refine[2]]
        if decoder_context:  # module docstring, "Decoder context"
            self.dec_ctx = nn.Conv2d((decoder_context + 1) * c, self.p, 5, padding=2)
            self.trefine = nn.Sequential(nn.Conv2d(6, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))
            zeroed += [self.dec_ctx, self.trefine[2]]
        with torch.no_grad():
            for layer in zeroed:
                layer.weight.zero_()
                layer.bias.zero_()
            self.enc_lin.weight[c:].zero_()
            self.enc_lin.bias[c:].fill_(-8.0)

    # --- patch layout -------------------------------------------------------------------------
    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, T, H, W), T = 1 + r*k -> (B, 1 + k, h, w, 3*r*s*s); group 0 is frame 0 repeated."""
        b, _, t, hh, ww = x.shape
        s, r = self.config.spatial_ratio, self.config.temporal_ratio
        if (t - 1) % r or hh % s or ww % s:
            raise ValueError(f"video {t}x{hh}x{ww} must be (1 + {r}k) frames of a multiple of {s} pixels")
        h, w, k = hh // s, ww // s, (t - 1) // r
        x = torch.cat([x[:, :, :1].expand(-1, -1, r, -1, -1), x[:, :, 1:]], dim=2)
        return x.reshape(b, 3, k + 1, r, h, s, w, s).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, k + 1, h, w, self.p)

    def _unpatch(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of _patches; of the first (static) group only its first frame is kept."""
        b, g, h, w, _ = patches.shape
        s, r = self.config.spatial_ratio, self.config.temporal_ratio
        v = patches.reshape(b, g, h, w, 3, r, s, s).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, 3, g * r, h * s, w * s)
        return v[:, :, r - 1:]

    # --- encode / decode -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        patches = self._patches(x)
        b, t, h, w, _ = patches.shape
        lin = self.enc_lin(patches)  # (B, T', h, w, 2C)
        hid = self.enc_in(patches).permute(0, 1, 4, 2, 3).reshape(b * t, -1, h, w)
        for blk in self.enc_blocks:
            hid = blk(hid, t)
        res = self.enc_out(F.silu(hid)).view(b, t, -1, h, w)
        params = lin.permute(0, 1, 4, 2, 3) + res  # (B, T', 2C, h, w)
        dist = DiagonalGaussianDistribution(params.permute(0, 2, 1, 3, 4).contiguous())
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def encoder_parameters(self):
        """The parameters that define the latent space (frozen by ``train-vae --decoder-only``)."""
        return [p for n, p in self.named_parameters() if n.startswith("enc_")]

    def decoder_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("enc_")]

    def _previous(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """x (B, T, ...) -> x shifted k steps later along T, the first k steps replicating step 0 (a
        video before its first frame is taken to be still, as the static first group is)."""
        return torch.cat([x[:, :1].expand(-1, min(k, x.shape[1]), *x.shape[2:]), x[:, :-k]], dim=1)[:, :x.shape[1]]

    def context_input(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, T', h, w) -> (B*T', (K+1)*C, h, w): latent frames t, t-1, ..., t-K stacked, what
        ``dec_ctx`` reads for group t."""
        b, c, t, h, w = z.shape
        k = self.config.decoder_context
        zt = z.permute(0, 2, 1, 3, 4)  # (B, T', C, h, w)
        return torch.cat([zt] + [self._previous(zt, i) for i in range(1, k + 1)], dim=2).reshape(b * t, (k + 1) * c, h, w)

    def decode_patches(self, z: torch.Tensor, context: bool = True) -> torch.Tensor:
        """z (B, C, T', h, w) -> patches (B, T', h, w, P) before the pixel refines; ``context=False``
        leaves out the decoder-context path (what the group-wise decoder gave)."""
        b, c, t, h, w = z.shape
        lin = self.dec_lin(z.permute(0, 2, 3, 4, 1))  # (B, T', h, w, P)
        if context and self.config.decoder_context:  # latent frames t..t-K, 5x5 around each patch
            ctx = self.dec_ctx(self.context_input(z)).view(b, t, self.p, h, w)
            lin = lin + ctx.permute(0, 1, 3, 4, 2)
        hid = self.dec_in(z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        for blk in self.dec_blocks:
            hid = blk(hid, t)
        return lin + self.dec_out(F.silu(hid)).view(b, t, -1, h, w).permute(0, 1, 3, 4, 2)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        b = z.shape[0]
        context = self.config.decoder_context
        video = self._unpatch(self.decode_patches(z))
        frames = video.permute(0, 2, 1, 3, 4).reshape(-1, 3, video.shape[-2], video.shape[-1])
        frames = frames + self.refine(frames)
        hh, ww = frames.shape[-2:]
        if context:  # causal pixel refine: each frame with the frame before it
            seq = frames.view(b, -1, 3, hh, ww)
            pair = torch.cat([seq, self._previous(seq, 1)], dim=2).reshape(-1, 6, hh, ww)
            frames = frames + self.trefine(pair)
        video = frames.view(b, -1, 3, hh, ww).permute(0, 2, 1, 3, 4)
        return DecoderOutput(sample=video) if return_dict else (video,)

    # --- PCA initialisation ------------------------------------------------------------------------
    @torch.no_grad()
    def init_pca(self, videos: torch.Tensor) -> None:
        """Set the linear encode/decode path to the top principal directions of the patches of
        ``videos`` (B, 3, T, H, W) in [-1, 1]; the decoder is the encoder's transpose."""
        patches = self._patches(videos).reshape(-1, self.p)
        c = self.config.latent_channels
        mu = patches.mean(0)
        _, _, v = torch.linalg.svd(patches - mu, full_matrices=False)
        basis = v[:c]  # (C, P)
        self.enc_lin.weight[:c] = basis
        self.enc_lin.bias[:c] = -basis @ mu
        self.dec_lin.weight.copy_(basis.T)
        self.dec_lin.bias.copy_(mu)
