"""Minute-long video by a sliding window of native-length windows (docs/LONG_VIDEO.md).

The papers give no algorithm for long videos; this is ours, stated exactly:

1. Window length W = the model's own clip length (17 frames = 5 latent frames for the tiny model,
   L = (W - 1) / r + 1 latent frames with the VAE's temporal ratio r = 4); overlap m latent frames
   (0 <= m <= L - 2); stride D = W - 1 - r*m new frames per window.
2. Window 0 is exactly ``generate`` on the user's image with the user's seed.
3. Window k + 1 is conditioned on frame D of window k (an I2V model's image prior: VAE latent for
   the channel concat + vision tokens), taken *as the uint8 frame written to the mp4*, so window
   k + 1 is what ``generate --image <that frame>`` would make (with identity "frame"; the default
   "anchor" pulls that frame toward the user's image first, step 8). With m > 0, its latent frames 1..m
   cover the same pixel frames as window k's last m latents, and are pinned to them: at every
   step their velocity is replaced by (x_t - z_known) / sigma, which keeps them on the path
   x_sigma = (1 - sigma) z_known + sigma eps (the overlap re-noised to the current sigma with the
   window's own noise) and lands them on z_known at sigma = 0. The free frames attend to them, so
   the motion of window k carries over instead of restarting from a still frame.
4. Output: window 0's frames 0..D, then frames 1..D of each next window (frames 1..W-1 of the
   last one), trimmed to round(seconds * fps). So every seam is frame 0 -> frame 1 of a window,
   the transition the I2V model was trained to make, and window k's last W - 1 - D frames are
   replaced by window k + 1's remake of them.
5. Noise: window 0 uses ``seed``; window k >= 1 a generator seeded from SeedSequence((seed, k)):
   the same seed gives the same video, and window k's noise does not depend on the length asked.
6. Colour anchoring (windows k >= 1, on by default): the generator shifts the mean colour a little
   between a window's frame 0 and its first latent group (about -1, -0.5, +0.8 in RGB on the shipped
   model); chained, that bias adds up window after window (tens of levels over a minute). So the
   decoded frames 1.. of window k are shifted per RGB channel by mean(prior) - mean(frames 1..r),
   i.e. colour is assumed constant over the first r frames (half a second), never over the video.
   Window 0 is left alone (it stays equal to ``generate``); the next prior is the shifted frame.
7. Each window is decoded on its own (the causal VAE's first latent frame is the single prior
   frame) and kept only as uint8 frames: decode memory is one window's, whatever the length.
8. Identity (``identity``, default "anchor"): chained windows drift away from the user's subject
   (each window starts from the last one's output). With "anchor", every window's vision tokens
   (the multi-modal context) are the user's image's, and window k + 1 starts from
   (1 - w) * frame D of window k + w * the user's image translated onto that frame (phase
   correlation; w = ANCHOR_WEIGHT), so what drifted decays by (1 - w) per window instead of adding
   up; the written video keeps frame D itself. "image": the tokens only; "frame": neither (each
   window is exactly ``generate --image <frame D>``). Measured in docs/LONG_VIDEO.md ("Identity").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .flow import v_from_x0
from .pipeline import I2VPipeline, model_sampler, sample_video
from .video import frames_to_tensor, tensor_to_frames

MAX_SECONDS = 600.0  # 10 minutes: beyond it a typo (--seconds 6000) is likelier than a wish
MAX_FRAMES = 14_400  # 10 minutes at 24 fps: bounds the uint8 frames held before the mp4 is written
DEFAULT_OVERLAP = 0  # latent frames; chosen by measurement (docs/LONG_VIDEO.md "Choosing the overlap")
# What ties windows k >= 1 to the user's image (module docstring, step 8; docs/LONG_VIDEO.md "Identity"):
# "frame": nothing (each window's vision tokens are its seam frame's); "image": the user's image's
# vision tokens in every window (the multi-modal context shows the original face); "anchor": that, and
# the seam frame the window starts from is pulled toward the user's image (``pull_to_image``)
IDENTITY_MODES = ("frame", "image", "anchor")
DEFAULT_IDENTITY = "anchor"
ANCHOR_WEIGHT = 0.4  # share of the (aligned) user's image in a window's first frame; measured (docs/LONG_VIDEO.md)


def long_video_frames(seconds: float, fps: float, *, frames: int | None = None, overlap: int | None = None) -> int:
    """Check ``generate --seconds`` before any model is loaded -> the frame count round(seconds * fps)."""
    if frames is not None:
        raise ValueError("give either --frames (one window) or --seconds (a sliding window), not both")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"--seconds must be a positive number, got {seconds}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"--seconds {seconds:g} is too long: at most {MAX_SECONDS:g} s (10 minutes)")
    if overlap is not None and overlap < 0:
        raise ValueError(f"--overlap must be >= 0 latent frames, got {overlap}")
    n = round(seconds * fps)
    if n < 1:
        raise ValueError(f"--seconds {seconds:g} at {fps:g} fps is less than one frame")
    if n > MAX_FRAMES:
        raise ValueError(f"--seconds {seconds:g} at {fps:g} fps is {n} frames: at most {MAX_FRAMES}; lower --fps")
    return n


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go (module docstring, steps 1 and 4)."""

    num_frames: int  # frames in the output video
    window_frames: int  # W, the model's native clip length (1 + r*k)
    temporal_ratio: int  # r
    overlap: int = DEFAULT_OVERLAP  # m latent frames

    def __post_init__(self):
        latent = (self.window_frames - 1) // self.temporal_ratio + 1
        if not 0 <= self.overlap <= latent - 2:
            raise ValueError(f"--overlap must be in [0, {latent - 2}] latent frames for {self.window_frames}-frame "
                             f"windows (at least one new latent frame per window), got {self.overlap}")

    @property
    def stride(self) -> int:
        """New frames per window; also the index (in window k) of window k + 1's first frame."""
        return self.window_frames - 1 - self.temporal_ratio * self.overlap

    @property
    def num_windows(self) -> int:
        return 1 + max(0, math.ceil((self.num_frames - self.window_frames) / self.stride))

    def seams(self) -> list[int]:
        """Output indices of each window's first frame after window 0 (a window's frame 0 is the
        previous window's frame ``stride``, written once)."""
        return [k * self.stride for k in range(1, self.num_windows) if k * self.stride < self.num_frames]

    def kept(self, k: int) -> slice:
        """The frames of window k that go into the output."""
        return slice(0 if k == 0 else 1, self.window_frames if k == self.num_windows - 1 else self.stride + 1)


def window_generator(seed: int, k: int) -> torch.Generator:
    """Window 0: ``seed`` itself (so it equals ``generate``); window k: SeedSequence((seed, k))."""
    if k == 0:
        return torch.Generator().manual_seed(seed)
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed % 2**63, k]).generate_state(1, np.uint64)[0]))


def anchor_colour(frames: np.ndarray, prior: np.ndarray, group: int) -> np.ndarray:
    """(T, H, W, 3) uint8 window -> the same with frames 1.. shifted per channel so that frames
    1..group have the mean colour of ``prior`` (H, W, 3) (module docstring, step 6)."""
    x = frames.astype(np.float32)
    offset = prior.reshape(-1, 3).astype(np.float32).mean(0) - x[1:1 + group].reshape(-1, 3).mean(0)
    x[1:] += offset
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def image_shift(image: np.ndarray, frame: np.ndarray, limit: int = 8) -> tuple[int, int]:
    """(dy, dx), |.| <= limit: the integer translation that best moves ``image`` onto ``frame`` (both
    (H, W, 3) uint8), by phase correlation of their grey levels (a swaying or nodding head moves)."""
    a, b = (x.astype(np.float32).mean(-1) for x in (image, frame))
    spec = np.fft.fft2(b - b.mean()) * np.conj(np.fft.fft2(a - a.mean()))
    corr = np.fft.ifft2(spec / np.maximum(np.abs(spec), 1e-6)).real
    h, w = corr.shape
    dy, dx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    dy, dx = (dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2  # wrap to signed shifts
    corr[(np.abs(dy) > limit) | (np.abs(dx) > limit)] = -np.inf
    i = np.unravel_index(np.argmax(corr), corr.shape)
    return int(dy[i]), int(dx[i])


def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(H, W, 3) translated by (dy, dx), the uncovered border filled with the nearest edge pixels."""
    h, w = image.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[rows][:, cols]


def pull_to_image(frame: np.ndarray, image: np.ndarray, weight: float = ANCHOR_WEIGHT) -> np.ndarray:
    """The conditioning frame of the next window (identity "anchor", module docstring step 8):
    (1 - weight) * seam frame + weight * the user's image translated onto it. Each window thus starts
    a little closer to the original face; what drifted decays by (1 - weight) per window instead of
    adding up. The written video keeps the seam frame itself."""
    moved = shift_image(image, *image_shift(image, frame))
    return np.clip(np.rint((1 - weight) * frame.astype(np.float32) + weight * moved), 0, 255).astype(np.uint8)


def pin_latents(known: torch.Tensor, start: int):
    """-> wrap_model for sample_video: latent frames [start, start + m) of the sample follow
    x_sigma = (1 - sigma) known + sigma eps and end at ``known`` (module docstring, step 3).

    Their velocity becomes (x_t - known) / sigma: an Euler step from x_sigma then gives exactly
    x_sigma', and a consistency step's x0 prediction is ``known``."""
    m = known.shape[2]

    def wrap(model):
        def pinned(x, sigma, cond):
            v = model(x, sigma, cond).clone()
            k = known.to(x.device, x.dtype).repeat(x.shape[0] // known.shape[0], 1, 1, 1, 1)  # CFG doubles the batch
            v[:, :, start:start + m] = v_from_x0(x[:, :, start:start + m], k, sigma)
            return v

        return pinned

    return wrap


@torch.no_grad()
def sample_long_video(pipe: I2VPipeline, image: torch.Tensor, prompt: str, *, num_frames: int, seed: int = 0,
                      steps: int, guidance: float, shift: float, eta: float | None = None,
                      overlap: int = DEFAULT_OVERLAP, colour_anchor: bool = True, identity: str = DEFAULT_IDENTITY,
                      anchor_weight: float = ANCHOR_WEIGHT, progress: bool = True) -> np.ndarray:
    """image (1, 3, H, W) in [-1, 1] -> (num_frames, H, W, 3) uint8 frames, by the sliding window."""
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: describe the video")
    if identity not in IDENTITY_MODES:
        raise ValueError(f"identity must be one of {', '.join(IDENTITY_MODES)}, got {identity!r}")
    plan = WindowPlan(num_frames, pipe.spec.num_frames, pipe.vae.temporal_ratio, overlap)
    rec = model_sampler(getattr(pipe.dit, "meta", {}))
    kind, eta = rec["kind"], rec["eta"] if eta is None else eta
    text = pipe.text_encoder([prompt])  # once: every window has the same prompt
    latent_frames = pipe.vae.latent_frames(plan.window_frames)
    chunks, prior, previous = [], image, None
    original = tensor_to_frames(image[0][:, None])[0]  # the user's image as uint8 (H, W, 3)
    for k in tqdm(range(plan.num_windows), desc="windows", unit="window", disable=not progress):
        wrap = pin_latents(previous[:, :, latent_frames - overlap:], 1) if previous is not None and overlap else None
        # 1. denoise one native-length window on the prior (+ the pinned overlap)
        latents = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, prior, num_frames=plan.window_frames,
                               generator=window_generator(seed, k), steps=steps, guidance=guidance, shift=shift,
                               decode=False, sampler=kind, eta=eta, wrap_model=wrap,
                               identity=image if identity != "frame" else None)
        # 2. decode this window alone and keep uint8 frames only
        frames = tensor_to_frames(pipe.vae.decode(latents)[0])
        if k > 0 and colour_anchor:
            frames = anchor_colour(frames, prior_frame, pipe.vae.temporal_ratio)
        chunks.append(frames[plan.kept(k)])
        # 3. the next window starts on frame `stride` exactly as written to the mp4
        prior_frame = frames[plan.stride]
        start = pull_to_image(prior_frame, original, anchor_weight) if identity == "anchor" else prior_frame
        prior = frames_to_tensor(start[None])[:, 0][None]
        previous = latents
    return np.concatenate(chunks)[:num_frames]
