"""A user's clips for ``magicdistill cache``: where they are, their captions, and how one clip is cut.

Sources: a folder of videos (recursively; the caption of ``a/b.mp4`` is ``a/b.txt`` beside it), a
manifest file: CSV with a header holding ``path`` and ``caption`` columns, or JSONL with one
``{"path": ..., "caption": ...}`` object per line (relative paths are relative to the manifest), or
webdataset shards: one ``.tar``, or a ``.shards`` text file listing ``.tar`` files one per line (relative to
the list). In a shard, members are grouped by key as webdataset does (the name up to the first dot of its
base name): ``KEY.mp4`` (any video suffix) is a clip, ``KEY.txt`` its caption. Clips are read from the
shard in place (never extracted to disk).

The clip rule (``ClipRule``), documented in docs/DATA.md:
- frames: ``num_frames`` frames (1 + 4k for the causal VAEs) at ``fps``, from the start of the video.
  Frame i is the source frame nearest to time i / fps (frames are dropped or repeated, never blended).
  A video shorter than (num_frames - 1) / fps seconds is skipped ("too_short");
- space: each frame is resized (bicubic) to *cover* height x width keeping its aspect, then centre
  cropped, the same rule as conditioning images. A video whose crop would discard more than
  ``max_crop`` of its width or height is skipped ("aspect"): a portrait clip is not silently turned
  into a face-less square.
Every skip has a reason: "unreadable", "too_short", "aspect", "no_caption"; none stops the run.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
SHARD_SUFFIXES = (".tar", ".shards")  # one webdataset shard, or a list of them
SKIP_REASONS = ("unreadable", "too_short", "aspect", "no_caption")


@dataclass(frozen=True)
class Source:
    """One clip to cache: ``id`` names it in the cache's records (the resolved path, or prompts-file line)."""

    id: str
    caption: str | None
    path: Path | None = None  # None for a prompt of a data-free cache
    member: str | None = None  # the clip's member name when ``path`` is a webdataset .tar shard


@dataclass(frozen=True)
class ClipRule:
    height: int
    width: int
    num_frames: int
    fps: float
    max_crop: float = 0.25  # the largest fraction of a side the centre crop may discard

    def as_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "num_frames": self.num_frames, "fps": self.fps,
                "max_crop": self.max_crop, "resize": "cover-bicubic", "crop": "centre", "start": 0}


class Skip(Exception):
    """A clip that cannot be used; ``reason`` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def list_sources(videos: str | Path) -> list[Source]:
    """The clips of a folder (with NAME.txt captions) or of a CSV/JSONL manifest, in a stable order."""
    videos = Path(videos)
    if videos.is_file():
        if videos.suffix.lower() in SHARD_SUFFIXES:
            return _shard_sources(videos)
        if videos.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"--videos {videos}: a file must be a .csv or .jsonl manifest (path, caption), a "
                             ".tar webdataset shard or a .shards list of them")
        return _manifest(videos)
    if not videos.is_dir():
        raise ValueError(f"--videos {videos}: no such folder or manifest")
    out = []
    for p in sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        side = p.with_suffix(".txt")
        caption = side.read_text(errors="replace").strip() if side.is_file() else None
        out.append(Source(str(p.resolve()), caption or None, p))
    if not out:
        raise ValueError(f"--videos {videos}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return out


def _manifest(path: Path) -> list[Source]:
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "caption"} <= set(reader.fieldnames):
                raise ValueError(f"manifest {path}: the CSV header must name 'path' and 'caption' columns")
            rows = list(reader)
    else:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"manifest {path} line {n}: not a JSON object") from None
            if not isinstance(row, dict) or "path" not in row:
                raise ValueError(f"manifest {path} line {n}: needs a 'path' (and a 'caption')")
            rows.append(row)
    out = []
    for row in rows:
        p = Path(row["path"])
        p = p if p.is_absolute() else path.parent / p
        caption = (row.get("caption") or "").strip()
        out.append(Source(str(p.resolve()), caption or None, p))
    if not out:
        raise ValueError(f"manifest {path} lists no clips")
    return out


def _shard_sources(path: Path) -> list[Source]:
    """The clips of one .tar shard, or of every shard a .shards list names, in shard then member order."""
    if path.suffix.lower() == ".shards":
        names = [t.strip() for t in path.read_text().splitlines() if t.strip() and not t.startswith("#")]
        shards = [p if p.is_absolute() else path.parent / p for p in map(Path, names)]
        if not shards:
            raise ValueError(f"--videos {path} lists no .tar shard (one path per line)")
        for shard in shards:
            if not shard.is_file():
                raise ValueError(f"--videos {path}: shard {shard} does not exist")
    else:
        shards = [path]
    out = []
    for shard in shards:
        try:
            with tarfile.open(shard) as tar:
                names = [m.name for m in tar.getmembers() if m.isfile()]
                captions = {}
                for name in names:
                    key, ext = _key(name)
                    if ext == "txt":
                        captions[key] = tar.extractfile(name).read().decode(errors="replace").strip()
        except (tarfile.TarError, OSError) as e:
            raise ValueError(f"--videos: {shard} is not a readable .tar shard ({e})") from None
        resolved = shard.resolve()
        for name in names:
            key, ext = _key(name)
            if "." + ext.rsplit(".", 1)[-1].lower() in VIDEO_SUFFIXES:
                out.append(Source(f"{resolved}#{name}", captions.get(key) or None, resolved, name))
    if not out:
        raise ValueError(f"--videos {path}: no video members ({', '.join(VIDEO_SUFFIXES)}) in its shards")
    return out


def _key(member: str) -> tuple[str, str]:
    """webdataset's grouping: ``dir/name.ext.more`` -> (``dir/name``, ``ext.more``)."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def list_prompts(path: str | Path) -> list[Source]:
    """A data-free cache's prompts: one per line, blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--prompts {path}: no such file")
    lines = [(n, t.strip()) for n, t in enumerate(path.read_text().splitlines(), 1)]
    out = [Source(f"{path.name}:{n}", t) for n, t in lines if t]
    if not out:
        raise ValueError(f"--prompts {path} holds no prompt (one per line)")
    return out


def crop_fraction(src_w: int, src_h: int, width: int, height: int) -> float:
    """The fraction of the source's width or height the cover-resize + centre crop discards."""
    a, b = src_w / src_h, width / height
    return 1.0 - min(a, b) / max(a, b)


def read_clip(path: Path, rule: ClipRule, member: str | None = None) -> np.ndarray:
    """(num_frames, height, width, 3) uint8 by the clip rule, or ``Skip`` with its reason. ``member``: the clip
    inside the .tar shard ``path``."""
    import av
    from PIL import Image

    from ..video import fit_image

    wanted_span = (rule.num_frames - 1) / rule.fps
    try:
        if member is not None:  # decoded from memory: the member's bytes, never a file on disk
            with tarfile.open(path) as tar:
                data = io.BytesIO(tar.extractfile(member).read())
        with av.open(data if member is not None else str(path)) as container:
            if not container.streams.video:
                raise Skip("unreadable", "no video stream")
            stream = container.streams.video[0]
            src_fps = float(stream.average_rate or stream.guessed_rate or 0) or rule.fps
            # source frame index of output frame i: the nearest to time i / fps
            wanted = [round(i * src_fps / rule.fps) for i in range(rule.num_frames)]
            picked: dict[int, np.ndarray] = {}
            n = 0
            for frame in container.decode(stream):
                if n == 0:
                    cut = crop_fraction(frame.width, frame.height, rule.width, rule.height)
                    if cut > rule.max_crop:
                        raise Skip("aspect", f"{frame.width}x{frame.height} to {rule.width}x{rule.height} would crop "
                                             f"{100 * cut:.0f}% of a side (max_crop {rule.max_crop:g})")
                if n in wanted:
                    picked[n] = fit_image(Image.fromarray(frame.to_ndarray(format="rgb24")), rule.height, rule.width)
                n += 1
                if n > wanted[-1]:
                    break
    except Skip:
        raise
    except Exception as e:  # any decoder failure is this file's problem, never the run's
        raise Skip("unreadable", f"{type(e).__name__}: {str(e)[:120]}") from None
    if n == 0:
        raise Skip("unreadable", "no decodable frame")
    if n <= wanted[-1]:
        raise Skip("too_short", f"{n} frames at {src_fps:g} fps ({(n - 1) / src_fps:.2f} s); needs {wanted_span:.2f} s "
                                f"for {rule.num_frames} frames at {rule.fps:g} fps")
    return np.stack([picked[i] for i in wanted])
