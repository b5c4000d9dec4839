"""Read a cache folder written by ``magicdistill cache`` lazily: rows are read when indexed, never whole shards.

``CachedClips`` holds only the shard records (file name and row of each clip); ``take(idx)`` opens the
shards those rows live in with ``safetensors.safe_open`` (a memory map) and copies exactly those rows
out (``get_slice``), so memory does not grow with the size of the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.text import TextEmbedding
from .latent_cache import LatentSet
from .video_cache import FORMAT, committed_records


class CachedClips:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        mfile = self.path / "manifest.json"
        if not mfile.is_file():
            raise ValueError(f"--data {self.path}: not a cache folder (no manifest.json; build one with magicdistill cache)")
        self.manifest = json.loads(mfile.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"--data {self.path}: cache format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.kind: str = self.manifest["kind"]
        self._rows: list[tuple[str, int]] = []  # (shard file, row) per clip
        self.captions: list[str] = []
        self.sources: list[str] = []
        for rec in committed_records(self.path):
            # a split (data/cache_split.py) names its rows and the source's shard file by absolute path
            for row, clip in enumerate(rec["clips"]):
                self._rows.append((rec["file"], clip.get("row", row)))
                self.captions.append(clip["caption"])
                self.sources.append(clip["source"])
        if not self._rows:
            raise ValueError(f"--data {self.path}: the cache holds no clips (see the skip reasons in its shard_*.json)")

    @property
    def has_clips(self) -> bool:
        return self.kind == "clips"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(C, T', h, w): of the clips, or for a prompts cache the shape a data-free run generates at."""
        return tuple(self.manifest["latent_shape"])

    @property
    def rule(self) -> dict:
        return self.manifest["rule"]

    def __len__(self) -> int:
        return len(self._rows)

    def row_of(self, i: int) -> tuple[str, int]:
        """(shard file, row in it) of clip ``i``."""
        return self._rows[i]

    def null_text(self) -> TextEmbedding:
        from safetensors.torch import load_file

        t = load_file(str(self.path / "null_text.safetensors"))
        return TextEmbedding(t["tokens"].float(), t["mask"].bool(), t["pooled"].float())

    def take(self, idx) -> LatentSet:
        """The clips ``idx`` (in that order) as a LatentSet; a prompts cache gives zero latents of the
        cache's latent shape (a shape for the generator's noise, no data) and no frames."""
        from safetensors import safe_open

        idx = [int(i) for i in (idx.tolist() if torch.is_tensor(idx) else idx)]
        names = ("tokens", "mask", "pooled") + (("latents", "image_latents", "first_frames") if self.has_clips else ())
        rows: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        by_shard: dict[str, list[int]] = {}
        for i in idx:
            by_shard.setdefault(self._rows[i][0], []).append(i)
        got: dict[int, dict[str, torch.Tensor]] = {}
        for file, members in by_shard.items():
            with safe_open(str(self.path / file), framework="pt") as f:
                slices = {n: f.get_slice(n) for n in names}
                for i in members:
                    r = self._rows[i][1]
                    got[i] = {n: s[r:r + 1] for n, s in slices.items()}
        for i in idx:
            for n in names:
                rows[n].append(got[i][n])
        cat = {n: torch.cat(v) for n, v in rows.items()}
        text = TextEmbedding(cat["tokens"], cat["mask"].bool(), cat["pooled"])
        b = len(idx)
        if not self.has_clips:
            return LatentSet(torch.zeros(b, *self.latent_shape), torch.zeros(b, 0), torch.zeros(b, 0, dtype=torch.uint8), text,
                             [self.captions[i] for i in idx])
        return LatentSet(cat["latents"], cat["image_latents"], cat["first_frames"], text, [self.captions[i] for i in idx])

    def check_encoders(self, fingerprint: dict[str, str], what: str) -> None:
        """A clear error when the cache was encoded by other encoders than ``what``'s (e.g. the teacher's)."""
        mine = self.manifest["encoders"]
        for part in ("vae", "text") if self.has_clips else ("text",):
            if mine.get(part) != fingerprint.get(part):
                raise ValueError(f"--data {self.path} was encoded with another {part.upper() if part == 'vae' else 'text encoder'} "
                                 f"than {what}'s; rebuild it with magicdistill cache --teacher for this model")
