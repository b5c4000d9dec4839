"""The seam between a teacher's own encoders and the latent cache.

The cache needs two callables and a fingerprint of what they are:
  encode_video(frames (B, 3, T, H, W) in [-1, 1]) -> normalised latents (B, C, T', h, w)
  encode_text(prompts) -> TextEmbedding (tokens, mask, pooled); with ``text_needs_image`` (HunyuanVideo-I2V,
  whose prompt embedding reads the first frame) also ``images=`` (PIL, each clip's first frame)
``teacher_encoders`` builds them from a magicdistill model folder (its VAE and its text encoder); a
model family with other encoders supplies its own ``Encoders`` with the same fields.

The fingerprint keys the cache: a VAE or text encoder whose weights or config differ gives another
fingerprint, so latents of two encoders are never mixed (data/video_cache.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..models.text import TextEmbedding

FINGERPRINT_BYTES = 4 << 20  # read from each end of a weight file (hashing a 10 GB encoder whole takes minutes)


@dataclass
class Encoders:
    encode_video: Callable[[torch.Tensor], torch.Tensor] | None  # None: text only (a data-free cache)
    encode_text: Callable[..., TextEmbedding]  # (prompts[, images=]) -> TextEmbedding
    temporal_ratio: int  # pixel frames per latent frame (after the first): num_frames must be 1 + ratio * k
    spatial_ratio: int
    latent_channels: int
    fingerprint: dict[str, str] = field(default_factory=dict)  # {"vae": ..., "text": ...}
    text_needs_image: bool = False  # each prompt is read with its clip's first frame (no data-free cache for it)


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's size and its first and last 4 MiB (the whole file when it is smaller)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            f.seek(size - FINGERPRINT_BYTES)
        h.update(f.read())
    return h.hexdigest()


def folder_fingerprint(folder: Path, *extra: str) -> str:
    """Of a model folder: its config files and weight files (by ``file_fingerprint``), plus ``extra``."""
    folder = Path(folder)
    h = hashlib.sha256("\n".join(extra).encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix == ".json" or p.suffix in (".safetensors", ".bin", ".pt")):
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes() if p.suffix == ".json" else file_fingerprint(p).encode())
    return h.hexdigest()[:24]


def vae_fingerprint(vae_dir: str | Path) -> str:
    return folder_fingerprint(Path(vae_dir))


def text_fingerprint(text_dir: str | Path, max_tokens: int) -> str:
    return folder_fingerprint(Path(text_dir), f"max_tokens={max_tokens}")


def teacher_encoders(teacher_dir: str | Path, *, video: bool = True, device="cpu",
                     dtype: torch.dtype = torch.float32) -> Encoders:
    """The VAE and text encoder a magicdistill model folder samples with (dit.json names them)."""
    from ..models.text import TextEncoder, default_text_encoder_path
    from ..models.vae import load_vae
    from ..pipeline import read_record, resolve_vae_dir

    meta = read_record(Path(teacher_dir))
    if not meta:
        raise ValueError(f"--teacher {teacher_dir}: no model folder (expected dit.json)")
    max_tokens = meta.get("max_text_tokens", 64)
    text_dir = default_text_encoder_path()
    enc = TextEncoder(text_dir, max_tokens=max_tokens, device=device)
    vae_dir = resolve_vae_dir(Path(teacher_dir))
    vae = load_vae(vae_dir, dtype=dtype, device=device)

    @torch.no_grad()
    def encode_video(frames: torch.Tensor) -> torch.Tensor:
        return vae.encode(frames.to(device)).float().cpu()

    def encode_text(prompts: list[str]) -> TextEmbedding:
        return enc(prompts).to("cpu")

    return Encoders(encode_video if video else None, encode_text, vae.temporal_ratio, vae.spatial_ratio,
                    vae.latent_channels, {"vae": vae_fingerprint(vae_dir), "text": text_fingerprint(text_dir, max_tokens)})
