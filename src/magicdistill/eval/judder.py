"""Group-boundary judder of a causal video VAE: how much more frames change across latent groups.

A causal VAE with temporal ratio r decodes frame 0 alone and then groups of r frames, so the
transitions t -> t + 1 with t % r == 0 (0->1, 4->5, 8->9, ... for r = 4: "phase 0") cross a group
boundary. If a decoder loses the motion inside a group, the video stands still for r frames and
jumps at each boundary. The judder ratio is the mean absolute frame difference of phase-0
transitions over that of the other phases; real motion gives about 1 (the synthetic data: 1.1).
"""

from __future__ import annotations

import numpy as np
import torch


def transition_differences(video) -> np.ndarray:
    """(B, 3, T, H, W) tensor in [-1, 1], or (T, H, W, 3) / (B, T, H, W, 3) uint8 frames -> (B, T-1) mean
    absolute difference of consecutive frames, in 0-255 levels."""
    if isinstance(video, torch.Tensor):
        x = video.detach().float() * 127.5
        return (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 3, 4)).cpu().numpy()
    x = np.asarray(video, dtype=np.float32)
    if x.ndim == 4:
        x = x[None]
    return np.abs(np.diff(x, axis=1)).mean(axis=(2, 3, 4))


def judder_ratio(diffs: np.ndarray, ratio: int = 4) -> float:
    """(B, T-1) transition differences -> mean of phase-0 transitions / mean of the others (pooled)."""
    diffs = np.asarray(diffs)
    phase = np.arange(diffs.shape[-1]) % ratio
    if not (phase == 0).any() or not (phase != 0).any():
        raise ValueError(f"need at least {ratio + 1} transitions to compare phases, got {diffs.shape[-1]}")
    return float(diffs[..., phase == 0].mean() / diffs[..., phase != 0].mean())
