"""``magicdistill generate`` on a real family's folder (a diffusers Wan / HunyuanVideo pipeline folder,
or a folder magicdistill derived from one): validate, load through the folder record, sample, write.

The frame size and length default to the folder's record, else the pipeline's own defaults
(models/folder.py); the sampler (steps, guidance, shift, eta) likewise.
"""

from __future__ import annotations

from pathlib import Path

from .config import torch_dtype
from .models.folder import ModelFolder, read_json
from .video import tensor_to_frames, write_mp4, write_png_frames


def check_real_options(folder: ModelFolder, *, image, seconds, quantize, t2i, index, vae, overlap=None) -> None:
    name = folder.pipeline
    if seconds is not None and not folder.is_i2v:  # window k + 1 could not start on window k: unrelated clips
        raise ValueError(f"--seconds (a sliding-window long video) is not available for a {name} folder: "
                         f"generate one window with --frames")
    if overlap is not None:
        raise ValueError(f"--overlap is not available for a {name} folder: its windows join at one frame "
                         f"(leave out --overlap)")
    if quantize:
        raise ValueError(f"--quantize is not available for a {name} folder: load it in its own dtype (--dtype)")
    if vae is not None:
        raise ValueError(f"--vae does not apply to a {name} folder: it uses its own vae/")
    if folder.is_i2v and image is None:
        raise ValueError(f"{folder.path} is an image-to-video model ({name}): give the first frame with --image"
                         + (" (--t2i / --index apply to the tiny default only)" if (t2i or index) else ""))
    if not folder.is_i2v and image is not None and read_json((folder.base or folder.path) / "model_index.json").get(
            "expand_timesteps"):  # its image mode runs the first frame's tokens at timestep 0: not sampled by ours
        raise ValueError(f"{folder.path} is a Wan 2.2 TI2V model: its image-to-video mode is not supported yet; "
                         f"generate from the prompt alone (leave out --image)")
    if not folder.is_i2v and (image is not None or t2i or index):
        raise ValueError(f"{folder.path} is a text-to-video model ({name}): it takes no --image/--t2i/--index")


def video_size(folder: ModelFolder, height: int | None, width: int | None, frames: int | None,
               temporal_ratio: int = 4) -> tuple[int, int, int]:
    h = folder.video.height if height is None else height
    w = folder.video.width if width is None else width
    n = folder.video.frames if frames is None else frames
    if h <= 0 or w <= 0:
        raise ValueError(f"--height/--width must be > 0, got {h}x{w}")
    if (n - 1) % temporal_ratio:
        raise ValueError(f"--frames must be 1 + {temporal_ratio}k for this model's VAE, got {n} "
                         f"(try {1 + temporal_ratio * ((n - 1) // temporal_ratio)})")
    return h, w, n


def generate_real(folder: ModelFolder, *, prompt: str, out: Path, image, steps: int, guidance: float, shift: float,
                  eta: float, seed: int, frames: int | None, height: int | None, width: int | None, fps: float | None,
                  device: str, dtype: str, progress: bool, compile: bool = False, upscale: int | None = None,
                  lossless: bool = False, frames_dir: str | Path | None = None, seconds: float | None = None) -> Path:
    from PIL import Image

    from .models.families.real import RealPipeline

    h, w, n = video_size(folder, height, width, frames)
    total = None
    if seconds is not None:  # a sliding window of n-frame windows (long_video_real.py)
        from .long_video import long_video_frames

        total = long_video_frames(seconds, fps or folder.video.fps, frames=frames)
    pil = None
    if image is not None:
        if not Path(image).is_file():
            raise ValueError(f"--image {image} does not exist")
        try:
            pil = Image.open(image).convert("RGB")
        except OSError as e:
            raise ValueError(f"--image {image} is not a readable image ({e})") from None
    pipe = RealPipeline.from_dir(folder.path, device=device, dtype=torch_dtype(dtype))
    if compile:
        from .torch_compile import compile_transformer

        compile_transformer(pipe.dit)
    sampler = dict(steps=steps, guidance=guidance, shift=shift, eta=eta)
    if total is not None:
        from .long_video_real import sample_long_video_real

        frames_u8 = sample_long_video_real(pipe, pil, prompt, num_frames=total, height=h, width=w, frames=n,
                                           seed=seed, progress=progress, **sampler)
    else:
        frames_u8 = tensor_to_frames(pipe(pil, prompt, height=h, width=w, frames=n, seed=seed, progress=progress,
                                          **sampler))
    path = write_mp4(out, frames_u8, fps or folder.video.fps, upscale=upscale, lossless=lossless)
    if frames_dir is not None:
        write_png_frames(frames_dir, frames_u8)
    return path
