"""Video folders for ``magicdistill evaluate``: mp4 files or a run folder's samples, brought to one format.

Format rule (docs/EVALUATION.md): every video is brought to the size of the first reference video
by the conditioning-image rule (resize to cover keeping the aspect ratio, centre-crop; video.fit_image),
and every video of both sets is trimmed to the shortest length among them, keeping the first frames
(an I2V video starts with its image). Fewer than 3 frames is an error (motion smoothness
interpolates between neighbours). Each adjustment is reported in the notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..video import fit_image, frames_to_tensor, load_image, read_video


def mp4_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".mp4")


def is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "samples").is_dir()


def _tile_size(run: Path, grid_width: int) -> tuple[int, int]:
    """(h, w) of one clip in a run's sample grid: the run's data config, its generator's record, or
    square tiles half the grid's width (each row is ground truth | sample)."""
    for file, key in ((run / "config.json", "data"), (run / "generator" / "dit.json", None)):
        if file.is_file():
            rec = json.loads(file.read_text())
            rec = rec.get(key, {}) if key else rec
            if "height" in rec and "width" in rec:
                return int(rec["height"]), int(rec["width"])
    return grid_width // 2, grid_width // 2


def split_run_samples(run: Path) -> tuple[list[np.ndarray], list[np.ndarray], Path]:
    """The newest sample grid of a run folder -> (generated clips, ground-truth clips, grid path).

    The trainers write ``samples/step_N.mp4`` / ``iter_N.mp4``: one row per held-out clip, each row
    ground truth | sample (train/teacher.py, distill/trainer.py)."""
    grids = mp4_files(run / "samples")
    if not grids:
        raise ValueError(f"run folder {run} has no sample videos in samples/ yet")
    frames, _ = read_video(grids[-1])  # zero-padded step numbers: the last name is the newest
    h, w = _tile_size(run, frames.shape[2])
    if frames.shape[2] < 2 * w or frames.shape[1] % h:
        raise ValueError(f"{grids[-1]} is {frames.shape[1]}x{frames.shape[2]}, not a grid of {h}x{w} clips "
                         "(rows of ground truth | sample); pass a folder of single-clip mp4 files instead")
    rows = [frames[:, r * h:(r + 1) * h] for r in range(frames.shape[1] // h)]
    return [r[:, :, w:2 * w] for r in rows], [r[:, :, :w] for r in rows], grids[-1]


def read_folder(folder: str | Path, max_videos: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(clips, ground-truth clips of a run folder or [], a description) of a folder of mp4 files or a run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    if is_run_folder(folder) and not mp4_files(folder):
        clips, truth, grid = split_run_samples(folder)
        desc = f"run {folder}: {len(clips)} samples from {grid.name}"
    else:
        files = mp4_files(folder)
        if not files:
            raise ValueError(f"no .mp4 files in {folder} (nor a run folder with samples/)")
        files = files[:max_videos] if max_videos else files
        clips, truth = [read_video(p)[0] for p in tqdm(files, desc=f"reading {folder.name}", leave=False)], []
        desc = f"{folder}: {len(clips)} videos"
    if max_videos:
        clips, truth = clips[:max_videos], truth[:max_videos]
    return clips, truth, desc


def conform(sets: list[list[np.ndarray]], height: int, width: int) -> tuple[list[torch.Tensor], list[str]]:
    """Bring every clip (T, H, W, 3) uint8 of every set to (height, width) and the shortest length
    -> one (N, 3, T, H, W) tensor in [-1, 1] per set, and notes on what was changed."""
    from PIL import Image

    notes = []
    t = min(len(c) for s in sets for c in s)
    if t < 3:
        raise ValueError(f"a video has only {t} frame(s); evaluation needs at least 3")
    if any(len(c) != t for s in sets for c in s):
        notes.append(f"videos have different lengths; all trimmed to the first {t} frames")
    resized = 0
    out = []
    for s in sets:
        clips = []
        for c in s:
            if c.shape[1:3] != (height, width):
                c = np.stack([fit_image(Image.fromarray(f), height, width) for f in c[:t]])
                resized += 1
            clips.append(frames_to_tensor(c[:t]))
        out.append(torch.stack(clips))
    if resized:
        notes.append(f"{resized} video(s) resized to {height}x{width} (cover + centre-crop)")
    return out, notes


def load_sets(videos: str | Path, reference: str | Path | None, max_videos: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The two folders as conformed tensors, plus notes. Without ``reference``, a run folder's
    ground-truth clips are the reference."""
    clips, truth, desc = read_folder(videos, max_videos)
    notes = [desc]
    if reference is not None:
        truth, _, rdesc = read_folder(reference, max_videos)
        notes.append(f"reference {rdesc}")
    elif truth:
        notes.append("reference: the run's ground-truth clips beside its samples")
    else:
        raise ValueError("--reference is required unless --videos is a run folder (its samples carry ground truth)")
    h, w = truth[0].shape[1:3]
    (v, r), more = conform([clips, truth], h, w)
    return v, r, notes + more


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_images(folder: str | Path, count: int, height: int, width: int) -> torch.Tensor:
    """The conditioning images of a folder, in name order, paired one to one with the videos (also
    in name order) -> (count, 3, height, width) in [-1, 1], by the conditioning-image rule."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < count:
        raise ValueError(f"{folder} holds {len(files)} images for {count} videos; --images needs one image per "
                         "video, paired by name order")
    return torch.stack([frames_to_tensor(load_image(p, height, width)[None])[:, 0] for p in files[:count]])
