"""Collapse signals: how far generated samples drift from the data in motion and colour.

Distribution-matching distillation fails quietly: the generator can freeze motion (mode
collapse to still clips) or over-saturate colours (the real score's CFG pushing too hard) while
every loss looks fine. These statistics are cheap, computed side by side for generated samples
and the matching ground truth, and logged as ratios (1 = like the data).
"""

from __future__ import annotations

import torch


def motion_energy(video: torch.Tensor) -> float:
    """Mean squared difference of consecutive frames; (B, C, T, H, W). 0 for a still clip."""
    if video.shape[2] < 2:
        return 0.0
    return (video[:, :, 1:].float() - video[:, :, :-1].float()).pow(2).mean().item()


def saturation(video: torch.Tensor) -> float:
    """Mean HSV saturation (max - min) / max of RGB pixels in [-1, 1]; 0 for grey, 1 for pure hues."""
    rgb = ((video.float() + 1) / 2).clamp(0, 1)
    hi, lo = rgb.max(dim=1).values, rgb.min(dim=1).values
    return ((hi - lo) / hi.clamp(min=1e-6)).mean().item()


def _ratio(a: float, b: float) -> float:
    return a / max(b, 1e-8)  # finite even against a still reference (the run logger rejects inf)


def latent_drift(x_gen: torch.Tensor, x_gt: torch.Tensor) -> dict[str, float]:
    """Every iteration, from latents: motion and magnitude of generated vs ground-truth latents."""
    return {"motion_ratio_latent": _ratio(motion_energy(x_gen), motion_energy(x_gt)),
            "rms_ratio_latent": _ratio(x_gen.float().pow(2).mean().sqrt().item(), x_gt.float().pow(2).mean().sqrt().item())}


def pixel_drift(video: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """At sample time, from decoded videos (B, 3, T, H, W) in [-1, 1]."""
    m, mt, s, st = motion_energy(video), motion_energy(truth), saturation(video), saturation(truth)
    return {"sample_motion": m, "data_motion": mt, "motion_ratio": _ratio(m, mt),
            "sample_saturation": s, "data_saturation": st, "saturation_ratio": _ratio(s, st)}


# [decision] collapse is a drift away from where the run started (the generator starts as the teacher sampled in a
# few steps without CFG, whose latent motion is already well below the data's), so the flags are relative to the
# first logged values: motion halved, or the latents' RMS off by 1.5x either way (over-saturation inflates it)
COLLAPSE_MOTION_DROP = 0.5
COLLAPSE_RMS_FACTOR = 1.5


def collapse_signal(rows: list[dict], up_to: int | None = None) -> dict:
    """A run's collapse signal from its metrics.jsonl rows (steps <= ``up_to`` [default: all]):
    ``flagged_at``: the first logged iteration whose motion_ratio_latent fell below COLLAPSE_MOTION_DROP x the first
    logged value, or whose rms_ratio_latent moved more than COLLAPSE_RMS_FACTOR x away from the first (None: never);
    ``motion_drift``, ``rms_drift``: last / first logged value of each; ``motion_ratio``, ``saturation_ratio``: the
    last sample-time pixel_drift values (None if none was logged)."""
    rows = [r for r in rows if up_to is None or r["step"] <= up_to]
    lat = [r for r in rows if "motion_ratio_latent" in r and "rms_ratio_latent" in r]
    pix = [r for r in rows if "saturation_ratio" in r]
    out = {"flagged_at": None, "motion_drift": None, "rms_drift": None,
           "motion_ratio": pix[-1]["motion_ratio"] if pix else None,
           "saturation_ratio": pix[-1]["saturation_ratio"] if pix else None}
    if not lat:
        return out
    m0, r0 = max(lat[0]["motion_ratio_latent"], 1e-8), max(lat[0]["rms_ratio_latent"], 1e-8)
    for r in lat:
        rms = r["rms_ratio_latent"] / r0
        if r["motion_ratio_latent"] / m0 < COLLAPSE_MOTION_DROP or not 1 / COLLAPSE_RMS_FACTOR <= rms <= COLLAPSE_RMS_FACTOR:
            out["flagged_at"] = r["step"]
            break
    out["motion_drift"] = lat[-1]["motion_ratio_latent"] / m0
    out["rms_drift"] = lat[-1]["rms_ratio_latent"] / r0
    return out
