"""The cache's encoders for a Wan / HunyuanVideo diffusers folder: the folder's own VAE and text encoders.

- video: the folder's VAE (AutoencoderKLWan / AutoencoderKLHunyuanVideo) with spatial tiling and batch
  slicing switched on where the class supports them (``enable_tiling`` / ``enable_slicing``), so a
  480p or 720p clip encodes in bounded memory; latents normalised as the teacher trains on them
  (models/vae.py);
- text: the pipeline's own ``encode_prompt`` through the family (Wan: UMT5 states, zero-padded; HunyuanVideo:
  Llama states with the prompt template cropped + CLIP's pooled vector), at the folder's token budget;
- image-to-video (Wan): nothing more is cached than the first frame's pixels, which every shard holds; the
  teacher makes its own first-frame inputs (mask + VAE(image + zeros), CLIP image tokens) from them while
  distilling. HunyuanVideo-I2V reads the prompt together with the image (Llava): each clip's caption is
  encoded with that clip's first frame (``encode_prompts``, the same call distillation makes uncached), so
  its text embedding is per clip; a data-free ``--prompts`` cache has no frames and is refused.

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


def text_needs_image(folder: ModelFolder) -> bool:
    """Whether the folder reads each prompt together with the first frame (HunyuanVideo-I2V)."""
    from ..models.families.real import family_of

    return family_of(folder).text_needs_image(SimpleNamespace(is_i2v=folder.is_i2v))


def text_parts(folder: ModelFolder) -> tuple[str, ...]:
    """The components the prompts are encoded with: the text encoders, and the image processor of a folder whose
    prompt reads the first frame (it sizes the image for Llava)."""
    return TEXT_PARTS + (("image_processor",) if text_needs_image(folder) else ())


def check_cacheable(folder: ModelFolder, kind: str) -> None:
    if kind == "prompts" and text_needs_image(folder):
        raise ValueError(f"--teacher {folder.path}: HunyuanVideo-I2V encodes each prompt together with its clip's "
                         "first frame, so a data-free --prompts cache cannot be made for it; cache --videos")


def real_fingerprint(folder: ModelFolder, *, vae_tiling: bool = True) -> dict[str, str]:
    """What a cache made with ``folder``'s encoders is tied to (see the module doc)."""
    text = [f"family={folder.family}", f"max_tokens={max_sequence_length(folder)}"]
    for name in text_parts(folder):
        if name in folder.components and folder.has_component(name):
            path = folder.component_path(name)
            small = name.startswith("tokenizer") or name == "image_processor"  # configs and vocabularies
            text.append(f"{name}={_files_hash(path) if small else folder_fingerprint(path)}")
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
    from ..models.families.real import encode_prompts, family_of
    from ..models.vae import VideoVAE

    folder = read_model_folder(teacher_dir)
    family = family_of(folder)
    vae_model = load_component(folder, "vae", dtype=dtype, device=device)
    if vae_tiling:  # bounded memory at real resolutions; a no-op below the VAE's tile size
        for switch in ("enable_tiling", "enable_slicing"):
            if hasattr(vae_model, switch):
                getattr(vae_model, switch)()
    vae = VideoVAE(vae_model).to(device).eval()
    parts = {name: load_component(folder, name, dtype=dtype, device=device)
             for name in text_parts(folder) if name in folder.components}
    pipe_cls = getattr(importlib.import_module("diffusers"), folder.pipeline)
    # no transformer: encode_prompt needs only the text encoders and tokenizers (and Llava's image processor)
    pipe = pipe_cls(**parts, vae=vae_model, scheduler=None, transformer=None)
    no_dit = SimpleNamespace(is_i2v=folder.is_i2v)  # what family.encode_text reads of the transformer
    n_tokens = max_sequence_length(folder)
    size = (folder.video.height, folder.video.width)  # the stand-in image of the empty prompt, as distillation's

    @torch.no_grad()
    def encode_video(frames: torch.Tensor) -> torch.Tensor:
        return vae.encode(frames.to(device)).float().cpu()

    @torch.no_grad()
    def encode_text(prompts: list[str], images: list | None = None) -> TextEmbedding:
        return encode_prompts(family, pipe, no_dit, prompts, images, max_tokens=n_tokens, size=size,
                              device=torch.device(device)).to("cpu")

    return Encoders(encode_video if video else None, encode_text, vae.temporal_ratio, vae.spatial_ratio,
                    vae.latent_channels, real_fingerprint(folder, vae_tiling=vae_tiling),
                    text_needs_image=text_needs_image(folder))
