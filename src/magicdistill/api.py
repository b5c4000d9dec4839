"""The Python API: load a model folder once, make videos from Python.

    from magicdistill import load_pipeline
    pipe = load_pipeline()                                   # the shipped 4-step generator
    video = pipe("examples/portrait.png", prompt="The person is talking.")
    video.save("out/talking.mp4")

A pipeline samples with the model folder's *own* recorded settings (``dit.json`` "sampler": the shipped
generator 4 Euler steps at guidance 1, the shipped teacher 50 steps at CFG 2) unless a call overrides them.
This module is the one place that reaches into the pipeline's internals (pipeline.I2VPipeline, long_video,
the prior); the command line and the server (serve/) go through it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# progress(done, total): called after every network evaluation (one per sampling step, each window of a long video);
# or True: console progress bars (the command line's)
ProgressFn = Callable[[int, int], None]
MAX_FRAMES_ONE_WINDOW = 4096


@dataclass(frozen=True)
class Settings:
    """How a model samples: its folder's recorded sampler, or a call's overrides of it."""

    steps: int
    guidance: float
    shift: float
    eta: float
    sampler: str  # "euler" or "consistency"


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model makes: frame size, native clip length, and its recorded settings."""

    name: str
    path: str
    height: int
    width: int
    num_frames: int
    fps: float
    task: str  # "i2v" or "t2v"
    settings: Settings

    @property
    def size(self) -> str:
        """OpenAI-style "WIDTHxHEIGHT"."""
        return f"{self.width}x{self.height}"

    @property
    def clip_seconds(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict:
        return {**asdict(self), "size": self.size, "clip_seconds": self.clip_seconds}


@dataclass
class Video:
    """A generated video: ``frames`` (T, H, W, 3) uint8 at ``fps``; ``first_frame`` the conditioning image
    as the model saw it; ``prior`` what the text->image prior chose when no image was given."""

    frames: np.ndarray
    fps: float
    first_frame: np.ndarray
    settings: Settings
    seed: int
    prior: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    def save(self, path: str | Path) -> Path:
        """Write an H.264 mp4, atomically (a temporary name, then a rename: never a half-written file)."""
        from .video import write_mp4

        path = Path(path)
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"save to a .mp4 path, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_mp4(path, self.frames, self.fps)


class Cancelled(Exception):
    """Raised inside sampling when the progress callback asks to stop (the server's cancel)."""


def shipped_model(name: str = "generator") -> Path:
    """The shipped tiny models: "generator" (4-step W2S) or "teacher" (50-step CFG)."""
    from .pipeline import SHIPPED_DIR

    if name not in ("generator", "teacher"):
        raise ValueError(f"the shipped models are 'generator' and 'teacher', not {name!r}")
    return SHIPPED_DIR / name


def resolve_model(model: str | Path | None) -> Path:
    """None: the shipped generator; "generator"/"teacher": the shipped ones, unless a folder of that name
    exists here (a folder always wins); else the folder."""
    if model is None:
        return shipped_model("generator")
    if str(model) in ("generator", "teacher") and not Path(model).exists():
        return shipped_model(str(model))
    return Path(model)


def load_pipeline(model: str | Path | None = None, *, vae: str | Path | None = None, device: str = "cpu",
                  dtype: str = "float32", name: str | None = None, quantize: str | None = None,
                  compile: bool = False) -> "Pipeline":
    """Load a model folder (default: the shipped 4-step generator; "teacher": the shipped teacher) once,
    ready to make many videos. ``name`` labels it (default: the folder's name). ``vae``: another VAE folder;
    ``quantize="int8"``: int8 weight-only transformer and encoders, quantized on load; ``compile``:
    torch.compile the transformer (a slow first step)."""
    from .config import torch_dtype
    from .pipeline import I2VPipeline, model_sampler
    from .quant.int8 import check_quantize

    model_dir = resolve_model(model)
    if not (model_dir / "transformer" / "config.json").is_file():
        raise ValueError(f"no model at {model_dir} (expected transformer/config.json): give a model folder")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    check_quantize(quantize)
    pipe = I2VPipeline.from_dir(model_dir, vae_dir=vae, device=device, dtype=torch_dtype(dtype))
    meta = getattr(pipe.dit, "meta", {})
    if quantize:  # a folder written by `magicdistill quantize` already is
        from .quant.folder import quantize_pipeline

        quantize_pipeline(pipe, quantize)
    if compile:
        from .torch_compile import compile_transformer

        compile_transformer(pipe.dit)
    rec = model_sampler(meta)
    settings = Settings(steps=int(rec["steps"]), guidance=float(rec["guidance"]), shift=float(rec["shift"]),
                        eta=float(rec["eta"]), sampler=str(rec["kind"]))
    spec = pipe.spec
    info = ModelInfo(name=name or model_dir.resolve().name, path=str(model_dir.resolve()), height=spec.height,
                     width=spec.width, num_frames=spec.num_frames, fps=float(spec.fps),
                     task="i2v" if pipe.dit.is_i2v else "t2v", settings=settings)
    return Pipeline(pipe, info, device=device, dtype=dtype)


class Pipeline:
    """A loaded model. ``pipe(image, prompt=...)`` -> Video. Not thread-safe: one call at a time."""

    def __init__(self, pipe, info: ModelInfo, *, device: str = "cpu", dtype: str = "float32"):
        self._pipe, self.info, self.device, self.dtype = pipe, info, device, dtype
        self._prior_plan = None  # the shipped retrieval index, loaded on first use

    @property
    def settings(self) -> Settings:
        """The model's recorded settings (what a call uses unless told otherwise)."""
        return self.info.settings

    def resolve(self, *, steps: int | None = None, guidance: float | None = None, shift: float | None = None,
                eta: float | None = None) -> Settings:
        """The settings a call would use: each given value over the recorded one, checked."""
        rec = self.settings
        s = Settings(steps=rec.steps if steps is None else int(steps),
                     guidance=rec.guidance if guidance is None else float(guidance),
                     shift=rec.shift if shift is None else float(shift), eta=rec.eta if eta is None else float(eta),
                     sampler=rec.sampler)
        if not 1 <= s.steps <= 1000:
            raise ValueError(f"steps must be from 1 to 1000, got {s.steps}")
        if not (math.isfinite(s.guidance) and 0 <= s.guidance <= 100):
            raise ValueError(f"guidance must be from 0 to 100 (1 = no guidance), got {s.guidance}")
        if not (math.isfinite(s.shift) and s.shift > 0):
            raise ValueError(f"shift must be > 0, got {s.shift}")
        if not 0 <= s.eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {s.eta}")
        return s

    def num_frames(self, frames: int | None = None, seconds: float | None = None, fps: float | None = None) -> int:
        """Frames a call makes: ``frames``, or round(seconds * fps) (fps: the model's unless given), or the
        model's native clip."""
        if frames is not None and seconds is not None:
            raise ValueError("give either frames or seconds, not both")
        if seconds is not None:
            from .long_video import long_video_frames

            return long_video_frames(float(seconds), self.info.fps if fps is None else float(fps))
        if frames is None:
            return self.info.num_frames
        if not 1 <= int(frames) <= MAX_FRAMES_ONE_WINDOW:
            raise ValueError(f"frames must be from 1 to {MAX_FRAMES_ONE_WINDOW}, got {frames}")
        return int(frames)

    def first_frame(self, image, prompt: str, seed: int, *, size: tuple[int, int] | None = None,
                    prior=None) -> tuple[np.ndarray, dict | None]:
        """(H, W, 3) uint8 at ``size`` (default: the model's frame size): a PIL image, a path or an (H, W, 3)
        uint8 array, fitted by the resize-to-cover + centre-crop rule; None: the first frame the prior picks
        (``prior``: a prior.first_frame.PriorPlan, a text-to-image folder or an image index; default: the
        shipped retrieval index)."""
        from .config import torch_dtype
        from .video import fit_image, load_image

        h, w = size or (self.info.height, self.info.width)
        if image is None:
            from .prior.first_frame import choose_first_frame, plan_prior

            if prior is None:
                if self._prior_plan is None:
                    self._prior_plan = plan_prior(image=None, t2i=None, index=None)
                prior = self._prior_plan
            choice = choose_first_frame(prior, prompt, h, w, seed=seed, device=self.device,
                                        dtype=torch_dtype(self.dtype))
            return choice.pixels, choice.record
        if isinstance(image, (str, Path)):
            return load_image(image, h, w), None
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"an image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
            if image.shape[:2] == (h, w):  # already the frame size: fitting would be the identity
                return image, None
            from PIL import Image

            image = Image.fromarray(image)
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            return fit_image(image.convert("RGB"), h, w), None
        raise ValueError(f"image must be a PIL image, a path, an (H, W, 3) uint8 array or None, got "
                         f"{type(image).__name__}")

    def __call__(self, image=None, prompt: str = "", *, steps: int | None = None, guidance: float | None = None,
                 shift: float | None = None, eta: float | None = None, seed: int = 0, frames: int | None = None,
                 seconds: float | None = None, progress: ProgressFn | bool | None = None, fps: float | None = None,
                 size: tuple[int, int] | None = None, prior=None, sliding: bool | None = None,
                 overlap: int | None = None) -> Video:
        """Make a video whose first frame is ``image`` (None: ``prior`` picks one from the prompt, default the
        shipped retrieval index).

        Defaults are the model's recorded settings. ``frames`` <= the native clip or ``seconds`` <= its length
        is one window; longer is the sliding window of long_video.py (``sliding=True``: the sliding window
        whatever the length; ``overlap``: latent frames each window shares with the previous one).
        ``fps``: the video's frame rate, which ``seconds`` counts in (default the model's); ``size``: (H, W)
        frames (default the model's). ``progress(done, total)`` is called after every sampling step; an
        exception it raises (e.g. Cancelled) stops the call; ``progress=True``: console progress bars."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: describe the video")
        settings = self.resolve(steps=steps, guidance=guidance, shift=shift, eta=eta)
        n = self.num_frames(frames, seconds, fps)
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must be >= 0 latent frames, got {overlap}")
        pixels, chosen = self.first_frame(image, prompt, seed, size=size, prior=prior)
        frames_u8 = self._sample(pixels, prompt, settings, seed, n, progress, sliding, overlap)
        return Video(frames=frames_u8, fps=self.info.fps if fps is None else float(fps), first_frame=pixels,
                     settings=settings, seed=int(seed), prior=chosen)

    # --- the coupling to the pipeline's internals ----------------------------------------------------------
    def _sample(self, pixels: np.ndarray, prompt: str, s: Settings, seed: int, n: int,
                progress: ProgressFn | bool | None, sliding: bool | None = None,
                overlap: int | None = None) -> np.ndarray:
        import torch

        from .long_video import DEFAULT_OVERLAP, WindowPlan, sample_long_video
        from .pipeline import sample_video, valid_frame_count
        from .video import frames_to_tensor, tensor_to_frames

        pipe = self._pipe
        bars, progress = progress is True, (None if isinstance(progress, bool) else progress)
        overlap = DEFAULT_OVERLAP if overlap is None else int(overlap)
        image = frames_to_tensor(pixels[None])[:, 0][None]
        long = n > pipe.spec.num_frames if sliding is None else bool(sliding)
        windows = WindowPlan(n, pipe.spec.num_frames, pipe.vae.temporal_ratio, overlap).num_windows if long else 1
        total, done = windows * s.steps, [0]

        def step_hook(module, args, output):  # one DiT forward = one step (CFG's two branches are one batch)
            done[0] += 1
            progress(min(done[0], total), total)

        handle = pipe.dit.register_forward_hook(step_hook) if progress is not None else None
        try:
            if long:
                return sample_long_video(pipe, image, prompt, num_frames=n, seed=seed, steps=s.steps, guidance=s.guidance,
                                         shift=s.shift, eta=s.eta, overlap=overlap, progress=bars)
            n_valid = valid_frame_count(n, pipe.vae.temporal_ratio)
            text = pipe.text_encoder([prompt])
            with torch.no_grad():
                video = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, image, num_frames=n_valid,
                                     generator=torch.Generator().manual_seed(seed), steps=s.steps, guidance=s.guidance,
                                     shift=s.shift, sampler=s.sampler, eta=s.eta, progress=bars)[0]
            return tensor_to_frames(video[:, :n])
        finally:
            if handle is not None:
                handle.remove()

