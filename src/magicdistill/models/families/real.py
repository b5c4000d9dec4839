"""A real family's loaded pipeline: the diffusers pipeline object (its encoders, VAE and scheduler,
read through the folder record) + our ``RealDiT`` around its transformer(s), sampled by our sampler.

Encoding the prompt and the first frame uses the diffusers pipeline's own methods, so the conditions
are exactly diffusers'; the denoising loop is sampling.euler_sample on the scheduler's sigmas. For a
folder whose scheduler is FlowMatchEulerDiscreteScheduler this is diffusers' loop step for step
(tests/test_real_families.py compares latents); a folder shipping UniPC (the published Wan folders)
is sampled with Euler on UniPC's sigmas.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ...flow import sigma_schedule
from ...sampling import consistency_sample, euler_sample
from ..folder import ModelFolder, read_model_folder
from ..vae import VideoVAE
from .base import Family, RealDiT, load_component


INT8_WEIGHTS = "transformer.int8.safetensors"
TEXT_COMPONENTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def load_int8_transformer(folder: ModelFolder, cls, *, dtype: torch.dtype):
    """The int8 transformer of a folder written by ``quantize_real``."""
    file = folder.path / folder.record["quantization"].get("weights", INT8_WEIGHTS)
    if not file.is_file():
        raise ValueError(f"{folder.path} is marked quantized but has no {file.name}: re-run `magicdistill quantize`")
    from ...quant.int8_files import load_int8

    transformer = cls.from_config(cls.load_config(str(folder.path / "transformer")))
    return load_int8(transformer, file, dtype)



def family_of(folder: ModelFolder) -> Family:
    if folder.family == "wan":
        from .wan import WAN

        return WAN
    if folder.family == "hunyuan":
        from .hunyuan import HUNYUAN

        return HUNYUAN
    if folder.family == "hunyuan15":
        from .hunyuan15 import HUNYUAN15

        return HUNYUAN15
    raise ValueError(f"{folder.path}: family {folder.family!r} is not a diffusers family")


def load_dit(folder: ModelFolder, *, dtype: torch.dtype = torch.float32, device="cpu") -> RealDiT:
    """The folder's transformer(s) as a RealDiT (no encoders, no VAE: what distillation trains)."""
    family = family_of(folder)
    if folder.record.get("quantization"):  # written by `magicdistill quantize` (families/derived.py)
        lib, cls_name = folder.components["transformer"]
        transformer = load_int8_transformer(folder, getattr(importlib.import_module(lib), cls_name), dtype=dtype)
    else:
        transformer = load_component(folder, "transformer", dtype=dtype, device=device)
    t2 = load_component(folder, "transformer_2", dtype=dtype, device=device) if "transformer_2" in folder.components \
        and folder.has_component("transformer_2") else None
    boundary = None
    if t2 is not None:
        from .base import read_json

        index = read_json(((folder.base or folder.path)) / "model_index.json")
        boundary = index.get("boundary_ratio")
    dit = RealDiT(family, transformer, t2, boundary=boundary, record={"sampler": folder.sampler.model_dump()})
    dit.folder = folder
    return dit.to(device).eval()


class RealPipeline:
    """``__call__(image, prompt, ...) -> video (3, T, H, W) in [-1, 1]``; ``latents(...)`` the denoised latents."""

    def __init__(self, folder: ModelFolder, pipe, dit: RealDiT, vae: VideoVAE):
        self.folder, self.pipe, self.dit, self.vae = folder, pipe, dit, vae
        self.family = dit.family

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, device="cpu", dtype: torch.dtype = torch.float32,
                 skip: tuple[str, ...] = ()) -> "RealPipeline":
        """``skip``: components left unloaded (None in the pipeline), e.g. the text encoders when distilling from a
        cache that carries the prompts' embeddings."""
        folder = read_model_folder(model_dir)
        dit = load_dit(folder, dtype=dtype, device=device)
        parts = {"transformer": dit.transformer}
        if dit.transformer_2 is not None:
            parts["transformer_2"] = dit.transformer_2
        for name in folder.components:
            if name not in parts:
                parts[name] = None if name in skip else load_component(folder, name, dtype=dtype, device=device)
        pipe_cls = getattr(importlib.import_module("diffusers"), folder.pipeline)
        extra = {}
        index = (folder.base or folder.path) / "model_index.json"
        from ..folder import read_json

        cfg = read_json(index)
        for key in ("boundary_ratio", "expand_timesteps"):
            if key in cfg:
                extra[key] = cfg[key]
        pipe = pipe_cls(**parts, **extra)
        pipe.set_progress_bar_config(disable=True)
        vae = VideoVAE(parts["vae"]).to(device).eval()
        return cls(folder, pipe, dit, vae)

    @property
    def spec(self):
        return self.folder.video

    @property
    def is_i2v(self) -> bool:
        return self.folder.is_i2v

    def sigmas(self, steps: int, shift: float) -> torch.Tensor:
        if self.folder.sampler.schedule == "shifted_linear":  # a distilled generator: the sigmas it trained at
            return sigma_schedule(steps, shift)
        return self.family.scheduler_sigmas(self.pipe.scheduler, steps, shift)

    def text_encoder(self) -> "FamilyTextEncoder":
        return FamilyTextEncoder(self)

    @torch.no_grad()
    def latents(self, image, prompt: str, **kw) -> torch.Tensor:
        """The denoised latents, as the diffusers pipeline returns them with output_type="latent"."""
        latents, keep = self._sample(image, prompt, **kw)
        return latents[:, :, keep] if keep is not None else latents

    def _sample(self, image, prompt: str, *, height: int, width: int, frames: int, seed: int = 0, steps: int = 50,
                guidance: float = 5.0, shift: float = 5.0, eta: float = 0.0, noise: torch.Tensor | None = None,
                max_sequence_length: int | None = None, progress: bool = False, identity=None):
        """``identity``: the image for the family's image tokens when it is not the first frame ``image``
        (a sliding-window video: the user's image in every window; long_video_real.py)."""
        if self.is_i2v and image is None:
            raise ValueError("this is an image-to-video model: give a first frame (--image)")
        if not self.is_i2v and image is not None:
            raise ValueError("this is a text-to-video model: it takes no --image")
        device = next(self.dit.parameters()).device
        vae = self.vae
        step = vae.spatial_ratio * self.dit.spatial_patch  # one transformer patch in pixels
        if height % step or width % step:
            raise ValueError(f"--height/--width {height}x{width} must be multiples of {step}")
        shape = (1, self.dit.latent_channels, (frames - 1) // vae.temporal_ratio + 1, height // vae.spatial_ratio,
                 width // vae.spatial_ratio)
        g = torch.Generator().manual_seed(seed)
        if noise is None:
            noise = torch.randn(shape, generator=g)
        noise = noise.to(device, torch.float32)
        enc = self.family.encode(self.pipe, self.dit, [prompt], image, height=height, width=width, frames=frames,
                                 guidance=guidance, noise=noise,
                                 max_sequence_length=max_sequence_length or self.max_sequence_length, device=device,
                                 **({"identity": identity} if identity is not None else {}))
        x = enc.init(noise) if enc.init is not None else noise
        model, w = self.dit, guidance
        if self.dit.guidance_embeds:  # the scale is an input: one forward per step, no CFG pair
            gw = torch.tensor([float(guidance)])
            model, w = (lambda x_, s_, c_: self.dit(x_, s_, c_, guidance=gw)), 1.0
        if self.folder.sampler.kind == "consistency":  # an LCM generator: x0 at each sigma, fresh noise to the next
            if enc.uncond is not None:
                raise ValueError(f"{self.folder.path} is a consistency (LCM) generator: it samples without CFG "
                                 f"(--guidance 1)")
            return consistency_sample(model, x, enc.cond, sigmas=self.sigmas(steps, shift), generator=g,
                                      progress=progress), enc.keep
        latents = euler_sample(model, x, enc.cond, sigmas=self.sigmas(steps, shift), uncond=enc.uncond,
                               guidance=w if enc.uncond is not None else 1.0, eta=eta, generator=g,
                               progress=progress)
        return latents, enc.keep

    @property
    def max_sequence_length(self) -> int:
        return int(self.folder.record.get("max_sequence_length", self.family.default_max_sequence_length()))

    @torch.no_grad()
    def __call__(self, image, prompt: str, **kw) -> torch.Tensor:
        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty: describe the video")
        latents, keep = self._sample(image, prompt, **kw)
        video = self.vae.decode(latents.to(self.vae.dtype))[0]
        # a dropped first latent frame (HunyuanVideo-I2V) is dropped after decoding, as diffusers does
        return video[:, self.vae.temporal_ratio:] if keep is not None else video


class FamilyTextEncoder:
    """The folder's own text encoder(s) as a ``TextEncoder``-like callable: prompts -> TextEmbedding
    (what the latent cache stores for distillation and training).

    ``needs_images``: the family encodes each prompt with its clip's first frame (HunyuanVideo-I2V); the
    latent cache then passes ``images`` (PIL, one per prompt). Without them (the empty prompt of CFG /
    text dropout) a black image stands in, as diffusers' negative branch does."""

    def __init__(self, pipe: RealPipeline):
        self.pipe = pipe
        self.max_tokens = pipe.max_sequence_length
        self.needs_images = pipe.family.text_needs_image(pipe.dit)

    @torch.no_grad()
    def __call__(self, texts: list[str], images: list | None = None):
        return encode_prompts(self.pipe.family, self.pipe.pipe, self.pipe.dit, texts, images,
                              max_tokens=self.max_tokens, size=(self.pipe.spec.height, self.pipe.spec.width),
                              device=next(self.pipe.dit.parameters()).device)


@torch.no_grad()
def encode_prompts(family: Family, pipe, dit, texts: list[str], images: list | None, *, max_tokens: int,
                   size: tuple[int, int], device):
    """Prompts -> TextEmbedding through the family's own encoder(s), shared by distillation's text encoder
    (``FamilyTextEncoder``) and the cache's (data/family_encoders.py) so both give the same numbers. A family
    that reads the prompt with the first frame (``text_needs_image``) gets ``images`` (PIL, one per prompt);
    without them (the empty prompt of CFG / text dropout) a black image of ``size`` (H, W) stands in, as
    diffusers' negative branch does. ``dit``: anything with ``is_i2v`` (the cache loads no transformer)."""
    kw = {}
    if family.text_needs_image(dit):
        from PIL import Image

        black = Image.new("RGB", (size[1], size[0]), 0)
        kw["images"] = list(images) if images is not None else [black] * len(texts)
    return family.encode_text(pipe, dit, list(texts), max_sequence_length=max_tokens, device=device, **kw)
