"""Text-to-image prior: the first frame from a local diffusers text-to-image pipeline (``--t2i DIR``).

Any folder ``DiffusionPipeline.from_pretrained`` can load (Stable Diffusion, SDXL, PixArt, Flux, ...)
works; nothing is downloaded. The image is requested at the video model's frame size, rounded up to
a multiple of 16 (latent pipelines need sizes divisible by their VAE factor x patch size), then
resized-to-cover and centre-cropped to the exact frame size with the same rule as ``--image``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..video import fit_image

SIZE_MULTIPLE = 16


def check_t2i_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"text-to-image pipeline not found: {path}")
    if not (path / "model_index.json").is_file():
        raise ValueError(f"no diffusers pipeline at {path} (expected model_index.json, as written by "
                         f"`pipeline.save_pretrained(DIR)`)")
    return path


def load_t2i(path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from diffusers import DiffusionPipeline

    path = check_t2i_dir(path)
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot load a text-to-image pipeline from {path}: {first}") from None
    pipe.set_progress_bar_config(leave=False)
    return pipe.to(device)


def _to_pil(image):
    """A pipeline's first output image (PIL, (H, W, 3) array in [0, 1] or (3, H, W) tensor) -> PIL."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    return Image.fromarray(np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8))


def text_to_image(pipe, prompt: str, height: int, width: int, *, seed: int = 0, steps: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8; the same seed gives the same image (a CPU generator, so on any device)."""
    size = lambda n: SIZE_MULTIPLE * math.ceil(n / SIZE_MULTIPLE)  # noqa: E731
    kwargs = {"num_inference_steps": steps} if steps else {}
    out = pipe(prompt=prompt, height=size(height), width=size(width), generator=torch.Generator().manual_seed(seed),
               **kwargs)
    return fit_image(_to_pil(out.images[0]), height, width)
