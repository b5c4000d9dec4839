"""A real family's teacher for ``magicdistill distill``: a Wan / HunyuanVideo diffusers folder (or one
derived from it) loaded through the folder record, with its own VAE and text encoders.

The synthetic training clips are rendered at the asked size and encoded with *this* teacher's VAE
and text encoder(s), so the data the scores see is in the teacher's own latent and text spaces.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import DistillConfig
from ..generate_real import video_size
from ..models.folder import ModelFolder, read_model_folder

METHODS = ("w2s", "dmd", "lcm", "cfg", "euler")


def real_teacher_record(teacher_dir: Path, cfg: DistillConfig, *, height: int | None, width: int | None,
                        frames: int | None) -> tuple[ModelFolder, dict]:
    """The folder and a tiny-style record of it (clip format + sampler), checked before anything loads."""
    folder = read_model_folder(teacher_dir)
    if cfg.method not in METHODS:
        raise ValueError(f"--method {cfg.method} is not available for a {folder.pipeline} teacher: "
                         f"use one of {', '.join(METHODS)}")
    if cfg.method == "cfg" and _guidance_embedded(folder):
        raise ValueError(f"--method cfg does not apply to {folder.pipeline}: it is already guidance-distilled (its "
                         f"guidance scale is a model input), so there is no CFG pair to distil; use w2s, dmd or lcm")
    h, w, n = video_size(folder, height, width, frames)
    meta = {"height": h, "width": w, "num_frames": n, "fps": folder.video.fps, "sampler": folder.sampler.model_dump()}
    return folder, meta


def _guidance_embedded(folder: ModelFolder) -> bool:
    """Whether the folder's transformer takes the guidance scale as an input (HunyuanVideo T2V)."""
    from ..models.folder import read_json

    return bool(read_json(folder.component_path("transformer") / "config.json").get("guidance_embeds", False))


def load_real_teacher(folder: ModelFolder, meta: dict, *, device, dtype: torch.dtype, text: bool = True):
    """-> (teacher RealDiT, its VAE, its text encoder (None without ``text``: a cache carries the embeddings),
    the VAE folder that keys the latent cache). An I2V teacher (Wan) gets its first-frame inputs from its own
    VAE and image encoder for ``meta``'s clips; a HunyuanVideo-I2V teacher's text encoder reads each clip's
    prompt with its first frame (cached per clip)."""
    from ..models.families.real import TEXT_COMPONENTS, RealPipeline
    from ..models.families.wan import WanImageConditioner

    pipe = RealPipeline.from_dir(folder.path, device=device, dtype=dtype, skip=() if text else TEXT_COMPONENTS)
    if pipe.dit.is_i2v and folder.family == "hunyuan15":  # SigLIP tokens; the latent comes from the cache
        from ..models.families.hunyuan15 import HunyuanVideo15ImageConditioner

        pipe.dit.image_conditioner = HunyuanVideo15ImageConditioner(pipe.pipe)
    elif pipe.dit.is_i2v:
        pipe.dit.image_conditioner = WanImageConditioner(pipe.pipe, frames=meta["num_frames"])
    return pipe.dit, pipe.vae, pipe.text_encoder() if text else None, folder.component_path("vae")


def wan_feature_layers(cfg: DistillConfig, folder: ModelFolder) -> DistillConfig:
    """Wan has one kind of block (``block:i``): the default HunyuanVideo ``double:-1`` becomes the last block."""
    if folder.family == "wan" and any(not name.startswith("block:") for name in cfg.disc_layers):
        return DistillConfig.strict_update(cfg, disc_layers=("block:-1",))
    return cfg
