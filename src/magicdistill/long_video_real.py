"""``generate --seconds`` for a real image-to-video folder (Wan I2V, HunyuanVideo-I2V): the sliding window
of long_video.py (its ``WindowPlan``: window placement, seams and kept frames; its ``window_generator``:
per-window noise seeds), with the family's own conditioning:

- window 0 is exactly ``generate`` on the user's image and seed;
- window k + 1 starts on window k's last frame (overlap 0: frame ``stride`` = W - 1), taken as the uint8
  frame written to the mp4: that frame is its first-frame conditioning (Wan: the mask + VAE(frame + zero
  frames) channels; HunyuanVideo-I2V: the frame's latent in the concat channels);
- the identity reference stays the user's ORIGINAL image in every window wherever the family has image
  tokens (Wan 2.1 I2V's CLIP image tokens; HunyuanVideo-I2V's image read by Llava inside the prompt), as
  long_video.py's default does for the tiny model's vision tokens, so the subject does not drift with the
  chain of seam frames.

Not carried over from long_video.py: pinning an overlap of latent frames (``--overlap``; windows join at one
frame here), colour anchoring and the pull of the seam frame toward the image (both measured on the tiny
model only): each window's conditioning frame is the previous window's last frame unchanged.

HunyuanVideo-I2V returns a window without its first frame (diffusers drops the image's latent frame):
the conditioning frame is put back in front of each window's frames, so the windows tile as Wan's do and
the video starts on the user's image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from tqdm import tqdm

from .long_video import WindowPlan, window_generator
from .video import tensor_to_frames


def sample_long_video_real(pipe, image: Image.Image, prompt: str, *, num_frames: int, height: int, width: int,
                           frames: int, seed: int = 0, progress: bool = False, **sampler) -> np.ndarray:
    """``pipe``: a RealPipeline of an I2V folder; ``frames``: its window length -> (num_frames, H, W, 3) uint8.
    ``sampler``: steps, guidance, shift, eta (as RealPipeline.__call__)."""
    if not pipe.is_i2v:
        raise ValueError("a sliding-window video needs an image-to-video model (each window starts on the "
                         "previous window's last frame)")
    chunks, prior, plan, k = [], image, None, 0
    bar = tqdm(desc="windows", unit="window", disable=not progress)
    while plan is None or k < plan.num_windows:
        video = pipe(prior, prompt, height=height, width=width, frames=frames,
                     seed=window_generator(seed, k).initial_seed(), identity=image if k else None, **sampler)
        window = tensor_to_frames(video)
        if window.shape[0] < frames:  # HunyuanVideo-I2V: the conditioning frame is not in its output
            window = np.concatenate([_as_frame(pipe, prior, height, width)[None], window])
        if plan is None:
            plan = WindowPlan(num_frames, window.shape[0], pipe.vae.temporal_ratio, 0)
            bar.total = plan.num_windows
        chunks.append(window[plan.kept(k)])
        prior = Image.fromarray(window[plan.stride])  # the next window starts on this frame, as written
        k += 1
        bar.update()
    bar.close()
    return np.concatenate(chunks)[:num_frames]


def _as_frame(pipe, image: Image.Image, height: int, width: int) -> np.ndarray:
    """``image`` as the pipeline sees it (resized to height x width), as a uint8 frame (H, W, 3)."""
    pixels = pipe.pipe.video_processor.preprocess(image, height, width)  # (1, 3, H, W) in [-1, 1]
    return tensor_to_frames(pixels[0][:, None])[0]
