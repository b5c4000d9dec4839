"""Image(+text)-to-video inference: the shipped models or a user's, one code path.

Steps: 1. encode the prompt (and the empty prompt for CFG) once; 2. encode the conditioning image
(VAE latent for the channel concat, vision tokens for multi-modal guidance) once; 3. denoise with
Euler (+ batched CFG); 4. put the image's latent in the first latent frame; 5. decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .models.dit import Condition, VideoDiT
from .models.folder import TEACHER_SAMPLER, model_sampler, read_record, resolve_vae_dir, with_absolute_vae  # noqa: F401 (re-exported)
from .models.text import TextEmbedding, TextEncoder
from .models.vae import VideoVAE, load_vae
from .flow import sigma_schedule
from .sampling import consistency_sample, euler_sample

PACKAGE_ROOT = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE_ROOT / "checkpoints" / "tiny"


def valid_frame_count(frames: int, temporal_ratio: int) -> int:
    """The smallest 1 + r*k >= frames (the causal VAE's lengths); the video is trimmed back."""
    return 1 + temporal_ratio * math.ceil((frames - 1) / temporal_ratio)


@dataclass(frozen=True)
class VideoSpec:
    height: int
    width: int
    num_frames: int
    fps: float


def conditions(dit: VideoDiT, vae: VideoVAE, text: TextEmbedding, null_text: TextEmbedding,
               image: torch.Tensor | None, identity: torch.Tensor | None = None
               ) -> tuple[Condition, Condition, torch.Tensor | None]:
    """(cond, uncond, image_latent). The unconditional branch drops the text only: the image stays
    (it *is* the first frame), so CFG amplifies what the prompt says about motion and content.
    ``identity`` (B, 3, H, W): the image whose vision tokens are the multi-modal context, if not
    ``image`` (long_video.py: the user's image in every window while the latent is the seam frame's)."""
    device = image.device if image is not None else text.tokens.device
    image_latent = None
    if dit.is_i2v:
        if image is None:
            raise ValueError("this is an image-to-video model: give a first frame (--image)")
        image_latent = vae.encode(image[:, :, None])  # a 1-frame clip: the causal VAE's first latent
    null = TextEmbedding(null_text.tokens.expand(len(text.tokens), -1, -1), null_text.mask.expand(len(text.mask), -1),
                         null_text.pooled.expand(len(text.pooled), -1)).to(device)
    tokens_from = image if identity is None else identity.to(device)  # dit.conditions reads it for tokens only
    cond, uncond = dit.conditions(text.to(device), null, tokens_from, image_latent)
    return cond, uncond, image_latent


@torch.no_grad()
def sample_video(dit: VideoDiT, vae: VideoVAE, text: TextEmbedding, null_text: TextEmbedding,
                 image: torch.Tensor | None, *, num_frames: int, generator: torch.Generator, steps: int = 50,
                 guidance: float = 6.0, shift: float = 5.0, sigmas: torch.Tensor | None = None,
                 progress: bool = False, decode: bool = True, size: tuple[int, int] | None = None,
                 sampler: str = "euler", eta: float = 0.0, wrap_model=None,
                 identity: torch.Tensor | None = None) -> torch.Tensor:
    """-> video (B, 3, T, H, W) in [-1, 1] (or latents when ``decode`` is False).

    ``eta`` > 0 makes the Euler sampler stochastic (sampling.euler_sample), its fresh noise from ``generator``.
    The frame size is the image's; a text-to-video model (no image) needs ``size=(H, W)``.
    ``wrap_model(velocity_fn) -> velocity_fn`` constrains the sampling (long_video.py's overlap);
    ``identity``: an image for the vision tokens other than the first frame (``conditions``)."""
    b = text.tokens.shape[0]
    device = next(dit.parameters()).device
    if image is None and size is None:
        raise ValueError("without a first frame the video size must be given")
    h, w = image.shape[-2:] if image is not None else size
    patch = dit.transformer.config.patch_size
    patch = patch[-1] if isinstance(patch, (tuple, list)) else patch  # Wan's is (t, h, w)
    if h % (vae.spatial_ratio * patch) or w % (vae.spatial_ratio * patch):
        raise ValueError(f"frame size {h}x{w} must be a multiple of {vae.spatial_ratio * patch}")
    shape = (b, dit.latent_channels, vae.latent_frames(num_frames), h // vae.spatial_ratio, w // vae.spatial_ratio)
    # 1-2. conditions, computed once for all steps
    cond, uncond, image_latent = conditions(dit, vae, text, null_text, image.to(device) if image is not None else None,
                                            identity)
    # 3. denoise; noise drawn on CPU from the caller's generator so results do not depend on device
    noise = torch.randn(shape, generator=generator).to(device)
    model = dit
    if getattr(dit.transformer.config, "guidance_embeds", False):  # CFG-distilled: w is an input, one forward per step
        w = torch.tensor([float(guidance)], device=device)
        model, uncond, guidance = (lambda x, s, c: dit(x, s, c, guidance=w)), None, 1.0
    if wrap_model is not None:
        model = wrap_model(model)
    if sampler == "consistency":
        latents = consistency_sample(model, noise, cond, sigmas=sigma_schedule(steps, shift) if sigmas is None else sigmas,
                                     generator=generator, progress=progress)
    else:
        latents = euler_sample(model, noise, cond, steps=steps, shift=shift, uncond=uncond, guidance=guidance,
                               sigmas=sigmas, eta=eta, generator=generator, progress=progress)
    # 4. the first latent frame *is* the image (causal VAE): keep it exact
    if image_latent is not None:
        latents[:, :, :1] = image_latent
    return vae.decode(latents) if decode else latents


@torch.no_grad()
def sample_clips(dit: VideoDiT, vae: VideoVAE, text: TextEmbedding, null_text: TextEmbedding, first_frames: torch.Tensor,
                 *, num_frames: int, seed: int = 0, desc: str | None = None, **sampler) -> torch.Tensor:
    """One video per first frame (B, 3, H, W), sampled one at a time with noise seed ``seed + i`` for clip i:
    clip i gets the same noise whatever the model and however many clips are asked for, so models
    compare paired. ``sampler``: sample_video's steps, guidance, shift, sampler, decode. ``desc``: a progress bar."""
    from tqdm import tqdm

    return torch.cat([sample_video(dit, vae, text.index(torch.tensor([i])), null_text, first_frames[i:i + 1],
                                   num_frames=num_frames, generator=torch.Generator().manual_seed(seed + i), **sampler)
                      for i in tqdm(range(first_frames.shape[0]), desc=desc, disable=desc is None, leave=False)])


class I2VPipeline:
    """Loaded models + the null prompt; ``__call__`` makes videos."""

    def __init__(self, dit: VideoDiT, vae: VideoVAE, text_encoder: TextEncoder, spec: VideoSpec):
        self.dit, self.vae, self.text_encoder, self.spec = dit, vae, text_encoder, spec
        self.null_text = text_encoder([""])

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, vae_dir: str | Path | None = None, text_encoder: str | None = None,
                 device="cpu", dtype: torch.dtype = torch.float32) -> "I2VPipeline":
        model_dir = Path(model_dir)
        dit = VideoDiT.load(model_dir, dtype=dtype, device=device)
        meta = dit.meta
        vae = load_vae(resolve_vae_dir(model_dir, vae_dir), dtype=dtype, device=device)
        own = model_dir / meta["text_encoder"] if meta.get("text_encoder") else None  # e.g. a quantized copy
        enc = TextEncoder(text_encoder or own, max_tokens=meta.get("max_text_tokens", 64), device=device)
        spec = VideoSpec(meta["height"], meta["width"], meta["num_frames"], meta["fps"])
        return cls(dit, vae, enc, spec)

    def __call__(self, image: torch.Tensor | None, prompt: str, *, num_frames: int | None = None, seed: int = 0,
                 steps: int = 50, guidance: float = 6.0, shift: float = 5.0, sigmas=None, eta: float | None = None,
                 progress: bool = False):
        """``eta`` None: the model folder's recorded sampler's (0, the ODE, unless it says otherwise)."""
        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty: describe the video")
        text = self.text_encoder([prompt])
        gen = torch.Generator().manual_seed(seed)
        rec = model_sampler(getattr(self.dit, "meta", {}))
        return sample_video(self.dit, self.vae, text, self.null_text, image, num_frames=num_frames or self.spec.num_frames,
                            generator=gen, steps=steps, guidance=guidance, shift=shift, sigmas=sigmas,
                            progress=progress, sampler=rec["kind"], eta=rec["eta"] if eta is None else eta)[0]
