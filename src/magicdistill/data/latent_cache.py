"""Encode a dataset once: VAE latents, first frames, text embeddings -> one safetensors file.

Training the DiT then never runs the VAE or the text encoder (the expensive frozen parts), which
is what every large-scale video trainer does too. The cache is keyed by what produced it (VAE
folder, data config, clip count); a mismatch is rebuilt, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..models.text import TextEmbedding, TextEncoder
from ..models.vae import VideoVAE
from ..video import frames_to_tensor
from .synthetic import SyntheticVideos


@dataclass
class LatentSet:
    latents: torch.Tensor  # (N, C, T', h, w) normalised
    image_latents: torch.Tensor  # (N, C, 1, h, w): the first frame encoded alone, exactly as at inference
    first_frames: torch.Tensor  # (N, 3, H, W) uint8
    text: TextEmbedding  # (N, L, D) tokens stored as float16
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def take(self, idx) -> "LatentSet":
        """The rows ``idx`` (the same interface as a cache folder's lazy reader, data/cache_reader.py)."""
        idx = torch.as_tensor(idx)
        return LatentSet(self.latents[idx], self.image_latents[idx], self.first_frames[idx], self.text.index(idx),
                         [self.captions[i] for i in idx.tolist()])

    def first_frame_pixels(self, idx) -> torch.Tensor:
        return self.first_frames[idx].float().div(127.5).sub(1.0)


def cache_key(vae_dir: str, data_cfg: dict, split: str, n: int, max_tokens: int) -> str:
    weights = Path(vae_dir) / "diffusion_pytorch_model.safetensors"
    h = hashlib.sha256(json.dumps([data_cfg, split, n, max_tokens], sort_keys=True).encode())
    h.update(str(weights.stat().st_size).encode() if weights.exists() else b"")
    h.update((Path(vae_dir) / "config.json").read_bytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_latent_set(source: SyntheticVideos, n: int, vae: VideoVAE, text_encoder: TextEncoder,
                     batch: int = 8, desc: str = "encoding clips") -> LatentSet:
    latents, image_latents, firsts, texts, captions = [], [], [], [], []
    device = next(vae.parameters()).device
    for start in tqdm(range(0, n, batch), desc=desc, unit="batch"):
        clips = [source.clip(i) for i in range(start, min(n, start + batch))]
        video = torch.stack([frames_to_tensor(c.frames) for c in clips]).to(device)
        latents.append(vae.encode(video).float().cpu())
        # GroupNorm spans time in the Hunyuan VAE, so encode the first frame on its own as inference does
        image_latents.append(vae.encode(video[:, :, :1]).float().cpu())
        firsts.append(torch.stack([torch.from_numpy(c.frames[0]).permute(2, 0, 1) for c in clips]))
        caps = [c.caption for c in clips]
        # a prompt encoded together with its first frame (HunyuanVideo-I2V): the encoder says so
        kw = {"images": [Image.fromarray(c.frames[0]) for c in clips]} if getattr(text_encoder, "needs_images", False) \
            else {}
        texts.append(text_encoder(caps, **kw).to("cpu", torch.float16))
        captions += caps
    return LatentSet(torch.cat(latents), torch.cat(image_latents), torch.cat(firsts), TextEmbedding.cat(texts), captions)


def save_latent_set(ls: LatentSet, path: Path, key: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({"latents": ls.latents.contiguous(), "image_latents": ls.image_latents.contiguous(),
               "first_frames": ls.first_frames.contiguous(),
               "tokens": ls.text.tokens.contiguous(), "mask": ls.text.mask.to(torch.uint8).contiguous(),
               "pooled": ls.text.pooled.contiguous()}, str(tmp),
              metadata={"key": key, "captions": json.dumps(ls.captions)})
    tmp.replace(path)


def load_latent_set(path: Path, key: str) -> LatentSet | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    if meta.get("key") != key:
        return None
    t = load_file(str(path))
    return LatentSet(t["latents"], t["image_latents"], t["first_frames"], TextEmbedding(t["tokens"], t["mask"].bool(), t["pooled"]),
                     json.loads(meta["captions"]))
