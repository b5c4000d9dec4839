"""Video VAEs behind one interface: pixels in [-1, 1] (B, 3, T, H, W) <-> normalised latents.

The embedded default is diffusers' ``AutoencoderKLHunyuanVideo`` at a small config, trained by
``magicdistill train-vae``; real HunyuanVideo and Wan VAEs load from a local diffusers folder
through the same class, so the tiny model exercises the real code path.

Latents handed to the DiT are normalised: ``(z - shift) * scale`` so the diffusion model sees
roughly unit variance (Hunyuan: a single ``scaling_factor``; Wan: per-channel mean/std).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

SUPPORTED = ("CausalPatchVAE", "AutoencoderKLHunyuanVideo", "AutoencoderKLWan", "AutoencoderKLHunyuanVideo15")


def tiny_hunyuan_vae(latent_channels: int = 8, block_out_channels=(16, 32, 64), spatial_ratio: int = 4):
    """The embedded default's VAE: causal, 4x temporal, ``spatial_ratio`` spatial."""
    from diffusers import AutoencoderKLHunyuanVideo

    levels = len(block_out_channels)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("HunyuanVideoDownBlock3D",) * levels,
        up_block_types=("HunyuanVideoUpBlock3D",) * levels,
        layers_per_block=1,
        norm_num_groups=8,
        spatial_compression_ratio=spatial_ratio,
        temporal_compression_ratio=4,
        mid_block_add_attention=False,
        scaling_factor=1.0,
    )
    # Start with a near-deterministic posterior (std ~ 0.02): with logvar = 0 the decoder first sees
    # unit-variance noise on every latent and learns far slower; the KL term still shapes it.
    with torch.no_grad():
        vae.encoder.conv_out.conv.bias[latent_channels:].fill_(-8.0)
    return vae


class VideoVAE(nn.Module):
    """Adapter over a diffusers video autoencoder with latent normalisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        name = type(model).__name__
        if name not in SUPPORTED:
            raise ValueError(f"unsupported VAE class {name}; supported: {', '.join(SUPPORTED)}")
        self.model = model
        cfg = model.config
        if name in ("AutoencoderKLWan", "CausalPatchVAE"):
            if name == "AutoencoderKLWan":
                # from the architecture (the config's scale_factor_* are class defaults, not derived): one /2 per
                # stage, and Wan 2.2's VAE patchifies patch_size x patch_size pixels first (/16, not /8)
                self.temporal_ratio = 2 ** sum(cfg.temperal_downsample)
                self.spatial_ratio = 2 ** len(cfg.temperal_downsample) * (getattr(cfg, "patch_size", None) or 1)
                self.latent_channels = cfg.z_dim
            else:
                self.temporal_ratio, self.spatial_ratio = cfg.temporal_ratio, cfg.spatial_ratio
                self.latent_channels = cfg.latent_channels
            c = self.latent_channels
            mean = torch.tensor(cfg.latents_mean or [0.0] * c).view(1, -1, 1, 1, 1)
            std = torch.tensor(cfg.latents_std or [1.0] * c).view(1, -1, 1, 1, 1)
            self.register_buffer("shift", mean, persistent=False)
            self.register_buffer("scale", 1.0 / std, persistent=False)
        else:
            self.temporal_ratio = cfg.temporal_compression_ratio
            self.spatial_ratio = cfg.spatial_compression_ratio
            self.latent_channels = cfg.latent_channels
            self.register_buffer("shift", torch.zeros(1), persistent=False)
            self.register_buffer("scale", torch.tensor(float(cfg.scaling_factor)), persistent=False)
            # Our clips are short; temporal tiling would blend tiles and change results for T > 16.
            model.use_framewise_encoding = False
            model.use_framewise_decoding = False
            if name == "AutoencoderKLHunyuanVideo15":
                # its causal attention mask does not broadcast over a batch of 2+ (diffusers 0.42.1):
                # one sample at a time, which diffusers' own slicing does
                model.use_slicing = True

    # --- shapes ---------------------------------------------------------------------------
    def latent_frames(self, num_frames: int) -> int:
        self.check_frames(num_frames)
        return (num_frames - 1) // self.temporal_ratio + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_ratio + 1

    def check_frames(self, num_frames: int) -> None:
        if num_frames < 1 or (num_frames - 1) % self.temporal_ratio:
            raise ValueError(
                f"frame count must be 1 + {self.temporal_ratio}k for this causal VAE, got {num_frames} "
                f"(try {self.pixel_frames(self.latent_frames_floor(num_frames))})"
            )

    def latent_frames_floor(self, num_frames: int) -> int:
        return max(1, (max(num_frames, 1) - 1) // self.temporal_ratio + 1)

    # --- encode / decode ------------------------------------------------------------------
    def encode(self, video: torch.Tensor, *, sample: bool = False, generator=None) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, T', H', W')."""
        self.check_frames(video.shape[2])
        dist = self.model.encode(video.to(self.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents -> video (B, 3, T, H, W), clamped to [-1, 1]."""
        # normalisation in float32 (its buffers are), then the model's own dtype: a bf16 VAE crashed
        # on the float32 result of mixing bf16 latents with float32 buffers
        z = (latents.float() / self.scale + self.shift).to(self.dtype)
        return self.model.decode(z).sample.clamp(-1, 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # --- persistence ----------------------------------------------------------------------
    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel latent statistics (raw latents) -> stored in the model config and used from now on."""
        self.model.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
        self.shift = mean.view(1, -1, 1, 1, 1).to(self.shift.device)
        self.scale = (1.0 / std).view(1, -1, 1, 1, 1).to(self.scale.device)

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(str(path), safe_serialization=True)


def load_vae(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> VideoVAE:
    """Load a diffusers video VAE from a local folder (its ``config.json`` names the class)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"no VAE at {path}: expected a diffusers folder with config.json")
    name = json.loads(cfg_file.read_text()).get("_class_name")
    if name not in SUPPORTED:
        raise ValueError(f"{cfg_file} names VAE class {name!r}; supported: {', '.join(SUPPORTED)}")
    if name == "CausalPatchVAE":
        from .patch_vae import CausalPatchVAE as cls
    else:
        import diffusers

        cls = getattr(diffusers, name)
    model = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    return VideoVAE(model).to(device).eval()
