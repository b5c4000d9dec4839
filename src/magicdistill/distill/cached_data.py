"""Distilling from a cache folder (``--data CACHE``): compatibility with the teacher, and a data-free cache.

A clips cache must have been encoded by the teacher's own VAE and text encoder (their fingerprints,
data/encoders.py) and carry its latent channels. A prompts cache (``magicdistill cache --prompts``)
has no clips, so:
- the generator's input comes from its own rollout from noise: ``input_mode`` must be
  ``backward_simulation`` (noised data needs data);
- L_reg (``lambda_reg``) compares with ground-truth clips: an error if set;
- the discriminator tells generated from real clips: switched off (``lambda_adv`` = ``lambda_disc`` = 0,
  recorded in the run's config.json), leaving the DMD terms alone, as in Self-Forcing;
- only text-to-video teachers: an image-to-video teacher needs first frames.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DistillConfig
from ..data.cache_reader import CachedClips
from ..data.encoders import text_fingerprint, vae_fingerprint
from ..models.text import default_text_encoder_path

NEEDS_CLIPS = ("lcm", "cfg")  # methods whose every step starts from data


def open_cache_for_teacher(path: str | Path, meta: dict, vae_dir: Path) -> CachedClips:
    """The cache, after checking it was encoded by the teacher's own VAE and text encoder."""
    data = CachedClips(path)
    data.check_encoders({"vae": vae_fingerprint(vae_dir),
                         "text": text_fingerprint(default_text_encoder_path(), meta.get("max_text_tokens", 64))},
                        "the teacher")
    return data


def open_cache_for_real_teacher(path: str | Path, folder) -> CachedClips:
    """The cache, after checking it was encoded by this Wan / HunyuanVideo folder's own VAE and text encoders
    (data/family_encoders.py); a cache of another family names both."""
    from ..data.family_encoders import real_fingerprint

    data = CachedClips(path)
    family = data.manifest["encoders"].get("family", "tiny")
    if family != folder.family:
        raise ValueError(f"--data {data.path} was encoded for a {family} teacher, not this {folder.family} one; "
                         f"rebuild it with magicdistill cache --teacher {folder.path}")
    data.check_encoders(real_fingerprint(folder), "the teacher")
    return data


def with_cache_format(meta: dict, data: CachedClips) -> dict:
    """The run's clip format is the cache's (its clip rule)."""
    rule = data.rule
    return {**meta, "height": rule["height"], "width": rule["width"], "num_frames": rule["num_frames"], "fps": rule["fps"]}


def check_teacher_fits(data: CachedClips, *, latent_channels: int, i2v: bool) -> None:
    if data.latent_shape[0] != latent_channels:
        raise ValueError(f"--data {data.path}: latents have {data.latent_shape[0]} channels, the teacher {latent_channels}")
    if not data.has_clips and i2v:
        raise ValueError(f"--data {data.path} is a prompts-only cache; an image-to-video teacher needs clips (first "
                         "frames): cache videos with --videos")


def config_for_data(cfg: DistillConfig, data: CachedClips) -> DistillConfig:
    """``cfg`` adjusted for a data-free cache (see the module doc); unchanged for a clips cache."""
    if data.has_clips:
        return cfg
    where = f"--data {data.path} is a prompts-only cache"
    if cfg.method in NEEDS_CLIPS:
        raise ValueError(f"{where}; --method {cfg.method} needs clips (use w2s or dmd)")
    if cfg.lambda_reg > 0:
        raise ValueError(f"{where}; L_reg (--lambda-reg {cfg.lambda_reg:g}) needs clips: set it to 0 or cache videos")
    if cfg.input_mode != "backward_simulation":
        raise ValueError(f"{where}; noised-data generator inputs need clips: pass --input-mode backward_simulation")
    if cfg.lambda_adv or cfg.lambda_disc:
        print(f"note: {where}; the discriminator needs clips and is switched off (lambda_adv = lambda_disc = 0)")
    return DistillConfig.strict_update(cfg, lambda_adv=0.0, lambda_disc=0.0)
