"""``magicdistill generate``: validate inputs, load the pipeline, sample, write the mp4.

Inputs are validated before any model is loaded, so a mistake costs milliseconds and leaves no
output file. Loading, the recorded sampler defaults, the first frame (image or prior) and sampling are
the Python API's (api.py): the command line and ``load_pipeline`` make the same video. The mp4 is
written atomically (video.write_mp4).
"""

from __future__ import annotations

from pathlib import Path

from . import api
from .long_video import long_video_frames
from .models.folder import is_real_folder, read_model_folder
from .pipeline import SHIPPED_DIR, model_sampler, read_record, valid_frame_count  # noqa: F401 (re-exported)
from .prior.first_frame import PriorChoice, plan_prior, save_prior
from .quant.int8 import check_quantize
from .torch_compile import check_compile_available
from .validate import (MAX_FRAMES, MAX_GUIDANCE, MAX_SHIFT, MAX_STEPS, check_device, check_finite, check_model_folder,
                       check_out_file, check_prompt, check_seed, check_writable_folder)
from .video import MAX_UPSCALE, load_image, write_mp4, write_png_frames


def check_args(*, prompt: str, out: Path, steps: int, guidance: float, shift: float, frames: int | None,
               fps: float | None, dtype: str, eta: float = 0.0) -> None:
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: describe the video with --prompt")
    check_prompt(prompt)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {out}")
    if out.exists() and out.is_dir():
        raise ValueError(f"--out {out} is a directory")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if steps > MAX_STEPS:
        raise ValueError(f"--steps {steps} is more than {MAX_STEPS} (hours of sampling); the teacher needs 50")
    check_finite("--guidance", guidance, 0.0, MAX_GUIDANCE)
    check_finite("--shift", shift, 0.0, MAX_SHIFT, lo_open=True)
    if not 0 <= eta <= 1:
        raise ValueError(f"--eta must be in [0, 1], got {eta}")
    if frames is not None and frames <= 0:
        raise ValueError(f"--frames must be > 0, got {frames}")
    if frames is not None and frames > MAX_FRAMES:
        raise ValueError(f"--frames {frames} is too long for one window (max {MAX_FRAMES}); use --seconds for a long "
                         "video")
    if fps is not None and not (0 < fps <= 240):
        raise ValueError(f"--fps must be in (0, 240], got {fps}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {dtype}")


def sampler_settings(meta: dict, steps: int | None, guidance: float | None, shift: float | None,
                     eta: float | None = None) -> tuple[int, float, float, float]:
    """Explicit flags win; else the model folder's own sampler (a distilled generator records
    its steps/shift/guidance, a teacher its guidance and eta); else the teacher's 50-step CFG defaults."""
    rec = model_sampler(meta)
    return (rec["steps"] if steps is None else steps, rec["guidance"] if guidance is None else guidance,
            rec["shift"] if shift is None else shift, rec["eta"] if eta is None else eta)


def default_model(teacher: bool) -> Path:
    """The shipped 4-step distilled generator; ``--teacher``: the shipped 50-step CFG teacher."""
    return SHIPPED_DIR / ("teacher" if teacher else "generator")


def generate(*, prompt: str, out: str | Path, image: str | Path | None = None, steps: int | None = None,
             guidance: float | None = None, shift: float | None = None, eta: float | None = None, seed: int = 0,
             frames: int | None = None, fps: float | None = None, model: str | Path | None = None, teacher: bool = False,
             vae: str | Path | None = None, device: str = "cpu", dtype: str = "float32", progress: bool = True,
             seconds: float | None = None, overlap: int | None = None, t2i: str | Path | None = None,
             index: str | Path | None = None, quantize: str | None = None, compile: bool = False,
             height: int | None = None, width: int | None = None, upscale: int | None = None, lossless: bool = False,
             frames_dir: str | Path | None = None) -> Path:
    out = Path(out)
    if model and teacher:
        raise ValueError("give either --model DIR or --teacher (the shipped teacher), not both")
    check_seed(seed)
    check_device(device)
    check_out_file(out, inputs={"--image": image})
    if frames_dir is not None:
        check_writable_folder(Path(frames_dir), "--frames-dir")
    if upscale is not None and not 1 <= upscale <= MAX_UPSCALE:
        raise ValueError(f"--upscale must be an integer in [1, {MAX_UPSCALE}], got {upscale}")
    model_dir = Path(model) if model else default_model(teacher)
    if model_dir.is_dir():
        check_model_folder(model_dir)
        if vae:
            check_model_folder(Path(vae), "--vae")
    if is_real_folder(model_dir):  # a diffusers Wan / HunyuanVideo folder, or one derived from it
        return _generate_real(model_dir, prompt=prompt, out=out, image=image, steps=steps, guidance=guidance,
                              shift=shift, eta=eta, seed=seed, frames=frames, height=height, width=width, fps=fps,
                              device=device, dtype=dtype, progress=progress, seconds=seconds, quantize=quantize,
                              t2i=t2i, index=index, vae=vae, compile=compile, upscale=upscale, lossless=lossless,
                              frames_dir=frames_dir, overlap=overlap)
    meta = read_record(model_dir)
    # checked here as the API will resolve them (the record's sampler under the flags), before anything loads
    check_args(prompt=prompt, out=out, **dict(zip(("steps", "guidance", "shift", "eta"),
                                                  sampler_settings(meta, steps, guidance, shift, eta))),
               frames=frames, fps=fps, dtype=dtype)
    check_quantize(quantize)
    if compile:
        check_compile_available()
    if seconds is not None or overlap is not None:  # a long video: a sliding window (long_video.py)
        if seconds is None:
            raise ValueError("--overlap applies to a sliding-window video: give --seconds too")
        if meta.get("task") == "t2v":  # window k + 1 would not see window k: unrelated clips, not one video
            raise ValueError(f"--seconds needs an image-to-video model (each window starts on the previous "
                             f"window's last frame); {model_dir} is text-to-video: generate one window (--frames)")
        long_video_frames(seconds, fps or meta.get("fps", 8.0), frames=frames, overlap=overlap)
    # 1. the conditioning image, or the prior that will choose it (prior/), checked before loading models
    prior = plan_prior(image=image, t2i=t2i, index=index)
    size = (height or meta.get("height", 64), width or meta.get("width", 64))
    pixels = load_image(image, *size) if prior is None else None
    if not (model_dir / "transformer" / "config.json").is_file():
        raise ValueError(f"no model at {model_dir} (expected transformer/config.json)")
    # 2. the model folder with its recorded settings, and 3. sampling (one window, or a sliding window over
    # many: long_video.py): the Python API's, so the command line and load_pipeline make the same video
    pipe = api.load_pipeline(model_dir, vae=vae, device=device, dtype=dtype, quantize=quantize, compile=compile)
    video = pipe(pixels, prompt, steps=steps, guidance=guidance, shift=shift, eta=eta, seed=seed, frames=frames,
                 seconds=seconds, fps=fps, size=size, prior=prior, sliding=seconds is not None, overlap=overlap,
                 progress=progress)
    frames_u8 = video.frames
    # 4. write (atomically); the chosen prior goes beside the video only once the video exists
    path = write_mp4(out, frames_u8, video.fps, upscale=upscale, lossless=lossless)
    if frames_dir is not None:
        write_png_frames(frames_dir, frames_u8)
    if video.prior is not None:
        save_prior(out, PriorChoice(video.first_frame, video.prior))
    return path


def _generate_real(model_dir: Path, *, prompt, out, image, steps, guidance, shift, eta, seed, frames, height, width,
                   fps, device, dtype, progress, seconds, quantize, t2i, index, vae, compile, upscale, lossless,
                   frames_dir, overlap=None) -> Path:
    """generate_real.py's path, after the same argument checks as the tiny default's."""
    from .generate_real import check_real_options, generate_real

    folder = read_model_folder(model_dir)
    rec = folder.sampler
    steps, guidance = rec.steps if steps is None else steps, rec.guidance if guidance is None else guidance
    shift, eta = rec.shift if shift is None else shift, rec.eta if eta is None else eta
    check_args(prompt=prompt, out=out, steps=steps, guidance=guidance, shift=shift, frames=frames, fps=fps, dtype=dtype,
               eta=eta)
    check_real_options(folder, image=image, seconds=seconds, quantize=quantize, t2i=t2i, index=index, vae=vae,
                       overlap=overlap)
    if seconds is not None:  # checked before anything loads
        long_video_frames(seconds, fps or folder.video.fps, frames=frames)
    return generate_real(folder, prompt=prompt, out=out, image=image, steps=steps, guidance=guidance, shift=shift,
                         eta=eta, seed=seed, frames=frames, height=height, width=width, fps=fps, device=device,
                         dtype=dtype, progress=progress, compile=compile, upscale=upscale, lossless=lossless,
                         frames_dir=frames_dir, seconds=seconds)
