"""VBench-style dimensions, computable offline. Pure functions of videos (B, 3, T, H, W) in [-1, 1].

Every score is in [0, 1] and higher is better (VBench's orientation; dynamic degree, as in VBench,
rewards motion rather than measuring quality). Each docstring gives the formula and how it differs
from VBench (Huang et al. 2024; VBench-I2V for i2v_subject); docs/EVALUATION.md collects them.
Pixel differences are taken on [0, 1] intensities, so "1 - MAE" here is VBench's (255 - MAE) / 255.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .features import FeatureExtractor

DYNAMIC_THRESHOLD = 0.05  # top-5% mean |frame difference| (intensity in [0, 1]) that counts as moving
DYNAMIC_TOP = 0.05        # VBench averages the largest 5% of flow magnitudes


def _check(videos: torch.Tensor, min_frames: int) -> torch.Tensor:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, T, H, W), got {tuple(videos.shape)}")
    if videos.shape[2] < min_frames:
        raise ValueError(f"this dimension needs at least {min_frames} frames, got {videos.shape[2]}")
    return (videos.float().clamp(-1, 1) + 1) / 2  # intensities in [0, 1]


def frame_feature_grid(videos: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    """(B, 3, T, H, W) -> per-frame features (B, T, D)."""
    b, t = videos.shape[0], videos.shape[2]
    return extractor.frame_features(videos).reshape(b, t, -1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # clamped at 0 as in VBench: an anti-correlated frame is as inconsistent as an unrelated one
    return F.cosine_similarity(a.double(), b.double(), dim=-1).clamp(min=0)


# --- feature-based dimensions -------------------------------------------------------------------

def subject_consistency_from_features(f: torch.Tensor) -> float:
    """Per-frame features (B, T, D) ->
        S = mean_b 1/(T-1) sum_{t=2..T} (cos(f_1, f_t) + cos(f_{t-1}, f_t)) / 2,   cos clamped at 0.
    VBench: the same formula on DINO ViT-B/16 features (averaged over all frames of all videos);
    here on the extractor's frame features (default: the probe, trained on this domain)."""
    if f.shape[1] < 2:
        raise ValueError("subject consistency needs at least 2 frames")
    s = (_cos(f[:, :1], f[:, 1:]) + _cos(f[:, :-1], f[:, 1:])) / 2
    return s.mean().item()


@torch.no_grad()
def subject_consistency(videos: torch.Tensor, extractor: FeatureExtractor) -> float:
    """Subject consistency of videos, see ``subject_consistency_from_features``."""
    _check(videos, 2)
    return subject_consistency_from_features(frame_feature_grid(videos, extractor))


def i2v_subject_from_features(f: torch.Tensor, cond: torch.Tensor) -> float:
    """Frame features (B, T, D) and conditioning-image features (B, D) ->
        S = mean_b [ 0.5 mean_{t=2..T} cos(c, f_t) + 0.5 mean_{t=2..T} cos(f_{t-1}, f_t) ],  cos clamped at 0.
    VBench-I2V uses 0.5 max_t cos(c, f_t) + 0.5 mean_t cos(f_{t-1}, f_t) on DINO features. Here the
    max is replaced by the mean over frames after the first: magicdistill's I2V output starts with
    the conditioning image itself, so the max is 1 by construction and would say nothing."""
    if f.shape[1] < 2:
        raise ValueError("i2v subject needs at least 2 frames")
    to_image = _cos(cond[:, None], f[:, 1:]).mean(1)
    consecutive = _cos(f[:, :-1], f[:, 1:]).mean(1)
    return (0.5 * to_image + 0.5 * consecutive).mean().item()


@torch.no_grad()
def i2v_subject(videos: torch.Tensor, extractor: FeatureExtractor, cond_images: torch.Tensor | None = None) -> float:
    """How well the frames keep the conditioning image's subject; ``cond_images`` (B, 3, H, W) in
    [-1, 1], default frame 0 of each video (an I2V output begins with its image)."""
    _check(videos, 2)
    f = frame_feature_grid(videos, extractor)
    return i2v_subject_from_features(f, f[:, 0] if cond_images is None else image_features(cond_images, extractor))


@torch.no_grad()
def image_features(images: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    """(B, 3, H, W) images -> (B, D) frame features (run as 2-frame still clips: the probe wants T >= 2)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected conditioning images (B, 3, H, W), got {tuple(images.shape)}")
    return frame_feature_grid(images[:, :, None].expand(-1, -1, 2, -1, -1), extractor)[:, 0]


# --- pixel-based dimensions ---------------------------------------------------------------------

def motion_smoothness(videos: torch.Tensor) -> float:
    """Frame-interpolation error of the odd frames rebuilt from their even neighbours:
        S = 1 - mean_{odd t} |x_t - (x_{t-1} + x_{t+1}) / 2|   (intensities in [0, 1]).
    VBench interpolates the dropped odd frames with the AMT-S network; here the interpolator is the
    linear blend, so a still clip or a constant-rate intensity change scores exactly 1, jitter
    (frames that jump back and forth) scores low, and large smooth motion is somewhat penalised
    (the blend ghosts moving edges) where AMT would follow it."""
    x = _check(videos, 3)
    t_odd = torch.arange(1, x.shape[2] - 1, 2)
    mid = (x[:, :, t_odd - 1] + x[:, :, t_odd + 1]) / 2
    return 1.0 - (x[:, :, t_odd] - mid).abs().mean().item()


def pair_motion(videos: torch.Tensor) -> torch.Tensor:
    """(B, T-1) top-5% mean |x_{t+1} - x_t| (channel-averaged, intensities in [0, 1]) per frame pair:
    the motion statistic of dynamic_degree and motion_ratio."""
    x = _check(videos, 2)
    d = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(1).flatten(2)  # (B, T-1, H*W), channel-averaged
    k = max(1, int(d.shape[-1] * DYNAMIC_TOP))
    return d.topk(k, dim=-1).values.mean(-1)


def moving_pairs(videos: torch.Tensor, threshold: float = DYNAMIC_THRESHOLD) -> torch.Tensor:
    """(B,) number of consecutive-frame pairs whose top-5% mean |difference| exceeds ``threshold``."""
    return (pair_motion(videos) > threshold).sum(1)


def motion_ratio(videos: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean pair_motion of ``videos`` / that of ``reference``: 1 = the reference's amount of motion,
    below 1 = stiller (L_reg's loss of motion), above 1 = more change (motion or flicker). Not a
    VBench dimension and not in the average: dynamic_degree is a count over a threshold, which
    saturates (every video moves a little) where this keeps resolving."""
    return (pair_motion(videos).mean() / pair_motion(reference).mean().clamp(min=1e-8)).item()


def dynamic_degree(videos: torch.Tensor, threshold: float = DYNAMIC_THRESHOLD) -> float:
    """Fraction of videos that move: a video is dynamic when at least round(4 T / 16) (>= 1) of its
    frame pairs have a top-5% mean |x_{t+1} - x_t| above ``threshold`` (0.05 of full intensity).
    VBench uses RAFT optical flow magnitudes (threshold 6 px at 256 px, count rule the same, videos
    at 8 fps); frame differences need no flow network but also respond to brightness changes, and
    the threshold was set on this domain (measured: a still clip through H.264 and i.i.d. noise of
    std 0.03 in [-1, 1] units stay below it; 53 of the first 60 test-split synthetic clips count as
    dynamic, those that only talk with a still head mostly not). A static clip scores 0. Higher =
    more motion, as in VBench."""
    need = max(1, round(4 * videos.shape[2] / 16))
    return (moving_pairs(videos, threshold) >= need).float().mean().item()


def temporal_flickering(videos: torch.Tensor) -> float:
    """S = 1 - mean_t |x_{t+1} - x_t|   (intensities in [0, 1]); 1 = no change at all between frames.
    VBench computes this only on videos its static filter keeps (no real motion), so it measures
    flicker alone; here every video counts, so real motion lowers it too; read it next to
    dynamic_degree."""
    x = _check(videos, 2)
    return 1.0 - (x[:, :, 1:] - x[:, :, :-1]).abs().mean().item()


def detail_energy(videos: torch.Tensor, scales: int = 2) -> torch.Tensor:
    """(scales,) mean |luma - 3x3 box blur of luma| per pyramid level (level s = 2^s-fold average pooled)."""
    x = _check(videos, 1)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).flatten(0, 1)[:, None]  # (B*T, 1, H, W)
    out = []
    for s in range(scales):
        level = F.avg_pool2d(luma, 2 ** s) if s else luma
        out.append((level - F.avg_pool2d(F.pad(level, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs().mean())
    return torch.stack(out)


def imaging_quality(videos: torch.Tensor, reference: torch.Tensor, scales: int = 2) -> float:
    """A reference-relative proxy for technical image quality (blur, noise, blockiness):
        S = mean_s min(e_s(videos) / e_s(ref), e_s(ref) / e_s(videos)),
    e_s = mean absolute high-pass (pixel minus 3x3 box mean) of the luma at pyramid level s (full
    and half resolution), over all frames of the set. 1 = the detail energy of the reference at
    both scales; blur lowers it (too little detail), noise and blocking artefacts lower it (too
    much). VBench's imaging quality is MUSIQ (a no-reference network trained on human ratings of
    real photos), which does not exist offline and would not know this domain; this proxy needs the
    reference set and measures only the spectrum's fine end, not content."""
    ev, er = detail_energy(videos, scales), detail_energy(reference, scales)
    ratio = ev.clamp(min=1e-8) / er.clamp(min=1e-8)
    return torch.minimum(ratio, 1 / ratio).mean().item()


DIMENSIONS = ("i2v_subject", "subject_consistency", "motion_smoothness", "dynamic_degree", "temporal_flickering",
              "imaging_quality")


def average(scores: dict[str, float]) -> float:
    """The unweighted mean of the six dimensions (VBench's totals weight its 16 dimensions; ours are equal)."""
    return sum(scores[k] for k in DIMENSIONS) / len(DIMENSIONS)
