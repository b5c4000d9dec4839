"""Pixels in and out: uint8 frames <-> tensors, H.264 mp4 via PyAV, and conditioning images.

Conditioning-image rule (documented in the README): the image is converted to RGB, resized so it
*covers* the target size keeping its aspect ratio (bicubic), then centre-cropped to the target
size. Any size and aspect ratio is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_file


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)  # np.array: a writable copy


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def load_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """Read an image file and apply the resize-to-cover + centre-crop rule -> (H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ValueError(f"image not found: {path}")
    if not path.is_file():
        raise ValueError(f"image path is not a file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image ({type(e).__name__})") from None
    return fit_image(img, height, width)


def fit_image(img, height: int, width: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    s = max(width / w, height / h)
    nw, nh = max(width, round(w * s)), max(height, round(h * s))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - width) // 2, (nh - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, *, crf: int = 12) -> Path:
    """Write (T, H, W, 3) uint8 frames as H.264 (yuv420p) mp4, atomically.

    Odd sizes are padded by edge replication to even (yuv420p needs it). Written to a temporary
    name and renamed, so an interrupted write leaves no half-written file at ``path``.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_file(path, suffix=".mp4") as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video file -> ((T, H, W, 3) uint8, fps)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0) or 8.0
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as e:
        raise ValueError(f"cannot decode {path} as a video ({type(e).__name__})") from None
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    return np.stack(frames), fps


def contact_sheet(videos: list[np.ndarray], every: int = 2, zoom: int = 2):
    """A PIL image: one row per video (T, H, W, 3) uint8, every ``every``-th frame left to right."""
    from PIL import Image

    rows = [np.concatenate(list(v[::every]), axis=1) for v in videos]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = Image.fromarray(np.concatenate(rows, axis=0))
    return img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
