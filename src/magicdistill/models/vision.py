"""Vision encoders for multi-modal guidance (Magic 1-For-1 section 3): conditioning image -> tokens
in the text-embedding space, concatenated with the text tokens.

The paper uses the vision branch of its VLM text encoder. The embedded default has no such
pretrained branch offline, so it uses a small patch encoder trained jointly with the teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchVisionEncoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> (B, n_tokens, dim): a 2-layer strided conv on a fixed grid."""

    def __init__(self, dim: int, n_tokens: int = 16, width: int = 64, resolution: int = 64):
        super().__init__()
        side = math.isqrt(n_tokens)
        if side * side != n_tokens or resolution % side:
            raise ValueError(f"n_tokens must be a square dividing the resolution, got {n_tokens}")
        self.resolution, self.side = resolution, side
        stride = resolution // side
        inner = max(1, math.isqrt(stride))
        self.net = nn.Sequential(
            nn.Conv2d(3, width, inner, stride=inner),
            nn.GELU(),
            nn.Conv2d(width, dim, stride // inner, stride=stride // inner),
        )
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] != (self.resolution, self.resolution):
            image = F.interpolate(image, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        tokens = self.net(image).flatten(2).transpose(1, 2)
        return self.norm(tokens + self.pos)
