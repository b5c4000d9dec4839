"""Image-to-video from a text-to-video DiT (Magic 1-For-1 section 3).

Input to the I2V DiT: channel concat of [noisy latent X (C), first-frame latent zero-padded over
time I_o (C), binary mask m (1, ones on the first latent frame)] -> 2C + 1 channels.
``padding="repeat"`` repeats the first-frame latent over every latent frame instead of zeros (a
recorded deviation, docs/DECISIONS.md: a small DiT then sees the image at each frame's own token
positions, so rendering a moved head is a local operation; the mask still marks frame 0).
A T2V checkpoint becomes I2V by widening the patch embedding from C to 2C + 1 input channels:
the old weights go to the first C channels and the new ones start at zero, so the converted model
computes exactly the T2V function at step 0 (models/patch_embed.py; a wider embedding kernel is kept).
"""

from __future__ import annotations

import torch
from torch import nn

from .patch_embed import widen_patch_embedding


IMAGE_PADDINGS = ("zero", "repeat")


def i2v_input(x_t: torch.Tensor, image_latent: torch.Tensor, padding: str = "zero") -> torch.Tensor:
    """x_t (B, C, T, H, W), image_latent (B, C, 1, H, W) -> (B, 2C + 1, T, H, W)."""
    if padding not in IMAGE_PADDINGS:
        raise ValueError(f"image padding must be one of {IMAGE_PADDINGS}, got {padding!r}")
    if image_latent.shape[2] != 1 or image_latent.shape[:2] != x_t.shape[:2] or image_latent.shape[3:] != x_t.shape[3:]:
        raise ValueError(f"image latent {tuple(image_latent.shape)} does not match video latent {tuple(x_t.shape)}")
    b, c, t, h, w = x_t.shape
    if padding == "repeat":
        padded = image_latent.to(x_t.dtype).expand(-1, -1, t, -1, -1)
    else:
        padded = torch.zeros_like(x_t)
        padded[:, :, :1] = image_latent.to(x_t.dtype)
    mask = torch.zeros(b, 1, t, h, w, dtype=x_t.dtype, device=x_t.device)
    mask[:, :, :1] = 1.0
    return torch.cat([x_t, padded, mask], dim=1)


def convert_t2v_to_i2v(transformer: nn.Module) -> nn.Module:
    """Turn a HunyuanVideo-style T2V transformer into the latent-concat I2V one, in place."""
    c = transformer.config.in_channels
    if transformer.config.image_condition_type == "latent_concat":
        raise ValueError("transformer is already an I2V (latent_concat) model")
    transformer.x_embedder.proj = widen_patch_embedding(transformer.x_embedder.proj, 2 * c + 1)
    transformer.register_to_config(in_channels=2 * c + 1, image_condition_type="latent_concat")
    return transformer
