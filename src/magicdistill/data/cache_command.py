"""What ``magicdistill cache`` does: defaults from the teacher's record, then ``build_cache``."""

from __future__ import annotations

from pathlib import Path

from .clip_sources import ClipRule, list_prompts, list_sources
from .video_cache import CacheSummary, build_cache


def run_cache(teacher: Path, out: Path, *, videos: Path | None = None, prompts: Path | None = None,
              height: int | None = None, width: int | None = None, frames: int | None = None, fps: float | None = None,
              max_crop: float = 0.25, shard_size: int = 256, device: str = "cpu", vae_tiling: bool = True) -> CacheSummary:
    """Clips (``videos``: a folder or manifest) or a data-free cache (``prompts``: one per line), encoded by the
    teacher's own VAE and text encoder(s). The clip format defaults to the teacher's (dit.json, or a Wan /
    HunyuanVideo folder's record and pipeline defaults)."""
    from ..models.folder import is_real_folder
    from ..pipeline import read_record
    from .encoders import teacher_encoders

    if (videos is None) == (prompts is None):
        raise ValueError("give either --videos DIR|MANIFEST (clips with captions) or --prompts FILE (data-free)")
    if videos is not None and not 0 <= max_crop < 1:
        raise ValueError(f"--max-crop {max_crop}: must be in [0, 1)")
    if shard_size < 1:
        raise ValueError(f"--shard-size {shard_size}: must be at least 1")
    real = is_real_folder(teacher)  # a Wan / HunyuanVideo diffusers folder: its own encoders (family_encoders.py)
    kind = "clips" if videos is not None else "prompts"
    meta = real_clip_format(teacher, kind) if real else read_record(Path(teacher))
    if not meta:
        raise ValueError(f"--teacher {teacher}: no model folder (expected dit.json or model_index.json)")
    sources = list_sources(videos) if videos is not None else list_prompts(prompts)
    # a prompts cache keeps the format too: it is the latent shape a data-free run generates at
    rule = ClipRule(height=height or meta["height"], width=width or meta["width"],
                    num_frames=frames or meta["num_frames"], fps=fps or meta["fps"], max_crop=max_crop)
    if rule.fps <= 0:
        raise ValueError(f"--fps {rule.fps}: must be positive")
    if real:
        from .family_encoders import real_encoders

        encoders = real_encoders(teacher, video=videos is not None, device=device, vae_tiling=vae_tiling)
    else:
        encoders = teacher_encoders(teacher, video=videos is not None, device=device)
    return build_cache(sources, out, encoders, rule, kind=kind,
                       shard_size=shard_size, teacher=str(Path(teacher).resolve()))


def real_clip_format(teacher: Path, kind: str) -> dict:
    """A Wan / HunyuanVideo folder's default clip: its record's (a distilled generator), else the pipeline's;
    checked first that the folder can make a ``kind`` cache."""
    from ..models.folder import read_model_folder
    from .family_encoders import check_cacheable

    folder = read_model_folder(teacher)
    check_cacheable(folder, kind)
    v = folder.video
    return {"height": v.height, "width": v.width, "num_frames": v.frames, "fps": v.fps}
