"""The cache's encoders for a Wan / HunyuanVideo diffusers folder: the folder's own VAE and text encoders.

- video: the folder's VAE (AutoencoderKLWan / AutoencoderKLHunyuanVideo) with spatial tiling and batch
  slicing switched on where the class supports them (``enable_tiling`` / ``enable_slicing``), so a
  480p or 720p clip encodes in bounded memory; latents normalised as the teacher trains on them
  (models/vae.py);
- text: the pipeline's own ``encode_prompt`` through the family (Wan: UMT5 states, zero-padded; HunyuanVideo:
  Llama states with the prompt template cropped + CLIP's pooled vector), at the folder's token budget;
- image-to-video (Wan): nothing more is cached than the first frame's pixels, which every shard holds; the
  teacher makes its own first-frame inputs (mask + VAE(image + zeros), CLIP image tokens) from them while
  distilling. HunyuanVideo-I2V reads the prompt together with the image: its cache is refused.

Only the text encoders, tokenizers and VAE are loaded, never the transformer.

Fingerprints (what a cache is tied to, data/encoders.py): ``vae`` and ``text`` hash those components'
files; ``family`` names the family; ``teacher`` identifies the folder (its pipeline record and transformer
config) and ``vae_options`` the tiling: both enter the cache key (a re-run into the same --out with another
teacher or option is refused) but not the check at distillation, so every teacher sharing the VAE and
text encoders (e.g. a generator distilled from the folder) reads the cache.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import SimpleNamespace

import torch

from ..models.families.real import TEXT_COMPONENTS
from ..models.folder import ModelFolder, read_model_folder
from ..models.text import TextEmbedding
from .encoders import Encoders, folder_fingerprint

TEXT_PARTS = TEXT_COMPONENTS  # what a cache replaces at distillation


def _files_hash(path: Path) -> str:
    """Of a small folder (a tokenizer): every file's name and bytes."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def max_sequence_length(folder: ModelFolder) -> int:
    from ..models.families.real import family_of

    return int(folder.record.get("max_sequence_length", family_of(folder).default_max_sequence_length()))


def check_cacheable(folder: ModelFolder) -> None:
    if folder.is_i2v and folder.family == "hunyuan":
        raise ValueError(f"--teacher {folder.path}: HunyuanVideo-I2V encodes the prompt together with the first "
                         "frame, so its text cannot be cached alone; cache with its text-to-video folder")


def real_fingerprint(folder: ModelFolder, *, vae_tiling: bool = True) -> dict[str, str]:
    """What a cache made with ``folder``'s encoders is tied to (see the module doc)."""
    text = [f"family={folder.family}", f"max_tokens={max_sequence_length(folder)}"]
    for name in TEXT_PARTS:
        if name in folder.components and folder.has_component(name):
            path = folder.component_path(name)
            text.append(f"{name}={_files_hash(path) if name.startswith('tokenizer') else folder_fingerprint(path)}")
    ident = hashlib.sha256(f"{folder.family}/{folder.pipeline}".encode())
    ident.update(folder.component_path("transformer").joinpath("config.json").read_bytes())
    return {"vae": folder_fingerprint(folder.component_path("vae")),
            "text": hashlib.sha256("\n".join(text).encode()).hexdigest()[:24],
            "family": folder.family, "teacher": ident.hexdigest()[:24],
            "vae_options": "tiling+slicing" if vae_tiling else "none"}


def real_encoders(teacher_dir: str | Path, *, video: bool = True, device="cpu", dtype: torch.dtype = torch.float32,
                  vae_tiling: bool = True) -> Encoders:
    """The VAE (``video``) and text encoders of a Wan / HunyuanVideo folder as the cache's ``Encoders``."""
    from ..models.families.base import load_component
    from ..models.families.real import family_of
    from ..models.vae import VideoVAE

    folder = read_model_folder(teacher_dir)
    check_cacheable(folder)
    family = family_of(folder)
    vae_model = load_component(folder, "vae", dtype=dtype, device=device)
    if vae_tiling:  # bounded memory at real resolutions; a no-op below the VAE's tile size
        for switch in ("enable_tiling", "enable_slicing"):
            if hasattr(vae_model, switch):
                getattr(vae_model, switch)()
    vae = VideoVAE(vae_model).to(device).eval()
    parts = {name: load_component(folder, name, dtype=dtype, device=device)
             for name in TEXT_PARTS if name in folder.components}
    pipe_cls = getattr(importlib.import_module("diffusers"), folder.pipeline)
    # no transformer: encode_prompt needs only the text encoders and tokenizers
    pipe = pipe_cls(**parts, vae=vae_model, scheduler=None, transformer=None)
    no_dit = SimpleNamespace(is_i2v=folder.is_i2v)  # what family.encode_text reads of the transformer
    n_tokens = max_sequence_length(folder)

    @torch.no_grad()
    def encode_video(frames: torch.Tensor) -> torch.Tensor:
        return vae.encode(frames.to(device)).float().cpu()

    @torch.no_grad()
    def encode_text(prompts: list[str]) -> TextEmbedding:
        return family.encode_text(pipe, no_dit, list(prompts), max_sequence_length=n_tokens,
                                  device=torch.device(device)).to("cpu")

    return Encoders(encode_video if video else None, encode_text, vae.temporal_ratio, vae.spatial_ratio,
                    vae.latent_channels, real_fingerprint(folder, vae_tiling=vae_tiling))
