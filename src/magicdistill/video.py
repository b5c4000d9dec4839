"""Pixels in and out: uint8 frames <-> tensors, H.264 mp4 via PyAV, and conditioning images.

Conditioning-image rule (documented in the README): the image is converted to RGB, resized so it
*covers* the target size keeping its aspect ratio (bicubic), then centre-cropped to the target
size. Any size and aspect ratio is accepted.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_file, atomic_folder


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)  # np.array: a writable copy


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def load_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """Read an image file and apply the resize-to-cover + centre-crop rule -> (H, W, 3) uint8.

    Normalised first: EXIF orientation applied, 16-bit and 32-bit greyscale scaled to 8 bits (not clipped
    to white), palette and alpha images composited over white. An image over PIL's decompression-bomb
    limit is an error, not a multi-gigabyte decode."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ValueError(f"image not found: {path}")
    if not path.is_file():
        raise ValueError(f"image path is not a file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                img = to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{path} is too large to read safely (over {Image.MAX_IMAGE_PIXELS} pixels); "
                         "downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__})") from None
    return fit_image(img, height, width)


def to_rgb(im):
    """An opened PIL image as 8-bit RGB the way it is meant to be seen (see ``load_image``)."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def fit_image(img, height: int, width: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    s = max(width / w, height / h)
    nw, nh = max(width, round(w * s)), max(height, round(h * s))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - width) // 2, (nh - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)


# The mp4 is written so that it keeps what the model made and is the same file for the same frames:
# - integer nearest-neighbour upscale before 4:2:0 encoding: each model pixel becomes a k x k block, so
#   the halved chroma still has a sample per model pixel (a 64x64 cartoon at native size in yuv420p lost
#   its saturated edges; docs/BENCHMARKS.md measures it). ``read_video`` undoes the upscale (block mean).
# - the same bytes for the same frames: x264's macroblock-tree rate control gave different output (up to
#   ~15 levels, every frame) for identical input, run to run, even on one thread (measured: 2-10 distinct
#   files in 15-30 encodes; none with mbtree off, which costs a few % of file size at this CRF), and
#   threaded encoding did too. So: mbtree off, one thread, explicit timestamps.
UPSCALE_SHORT_SIDE = 256  # the default upscale brings the short side to at least this many pixels
MAX_UPSCALE = 8
_TAG = "magicdistill"  # container comment: "magicdistill upscale=K size=WxH"


def default_upscale(height: int, width: int) -> int:
    """The smallest integer factor bringing the short side to ``UPSCALE_SHORT_SIDE`` (1 for real-size video)."""
    return max(1, min(MAX_UPSCALE, math.ceil(UPSCALE_SHORT_SIDE / max(1, min(height, width)))))


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, *, crf: int = 12, upscale: int | None = None,
              lossless: bool = False) -> Path:
    """Write (T, H, W, 3) uint8 frames as an H.264 mp4, atomically and deterministically.

    Default: nearest-neighbour upscale by ``upscale`` (None: ``default_upscale``), yuv420p, CRF ``crf``:
    plays in every browser. ``lossless``: RGB H.264 at CRF 0 (libx264rgb), bit-exact frames, no upscale by
    default, but most browsers do not play it. Odd sizes are padded by edge replication to even (4:2:0 needs
    it); the original size and the upscale are recorded in the file, so ``read_video`` returns the frames at
    the size they were given. Written to a temporary name and renamed: an interrupted write leaves no
    half-written file at ``path``.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t, h, w = frames.shape[:3]
    k = (1 if lossless else default_upscale(h, w)) if upscale is None else int(upscale)
    if not 1 <= k <= MAX_UPSCALE:
        raise ValueError(f"--upscale must be an integer in [1, {MAX_UPSCALE}], got {upscale}")
    if k > 1:
        frames = frames.repeat(k, axis=1).repeat(k, axis=2)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    frames = np.ascontiguousarray(frames)
    with atomic_file(path, suffix=".mp4") as tmp, av.open(str(tmp), mode="w") as container:
        container.metadata["comment"] = f"{_TAG} upscale={k} size={w}x{h}"
        stream = container.add_stream("libx264rgb" if lossless else "libx264",
                                      rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1  # deterministic output (see above)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _recorded_layout(container) -> tuple[int, int, int] | None:
    """(upscale, width, height) that ``write_mp4`` recorded, or None for any other mp4."""
    comment = container.metadata.get("comment", "")
    if not comment.startswith(_TAG + " "):
        return None
    try:
        fields = dict(part.split("=", 1) for part in comment.split()[1:])
        w, h = (int(v) for v in fields["size"].split("x"))
        return int(fields["upscale"]), w, h
    except (KeyError, ValueError):
        return None


def write_png_frames(folder: str | Path, frames: np.ndarray) -> Path:
    """(T, H, W, 3) uint8 frames as ``folder/frame_00000.png``..., the folder replaced atomically."""
    from PIL import Image

    with atomic_folder(folder) as tmp:
        for i, f in enumerate(frames):
            Image.fromarray(f).save(tmp / f"frame_{i:05d}.png")
    return Path(folder)


def read_video(path: str | Path, *, native: bool = True) -> tuple[np.ndarray, float]:
    """Decode a video file -> ((T, H, W, 3) uint8, fps).

    ``native``: a video written by ``write_mp4`` comes back at the size its frames were given (the
    upscale undone by a k x k block mean, the padding cropped); False: the pixels as stored."""
    import av

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            layout = _recorded_layout(container) if native else None
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0) or 8.0
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as e:
        raise ValueError(f"cannot decode {path} as a video ({type(e).__name__})") from None
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    video = np.stack(frames)
    if layout is not None:
        k, w, h = layout
        video = video[:, :h * k, :w * k]
        if k > 1:
            blocks = video.reshape(video.shape[0], h, k, w, k, 3).astype(np.float32).mean(axis=(2, 4))
            video = np.round(blocks).astype(np.uint8)
    return video, fps


def contact_sheet(videos: list[np.ndarray], every: int = 2, zoom: int = 2):
    """A PIL image: one row per video (T, H, W, 3) uint8, every ``every``-th frame left to right."""
    from PIL import Image

    rows = [np.concatenate(list(v[::every]), axis=1) for v in videos]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = Image.fromarray(np.concatenate(rows, axis=0))
    return img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
