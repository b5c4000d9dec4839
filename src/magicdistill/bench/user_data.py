"""``bench --data CACHE``: the bench on a user's clips. The cache's **last** ``clips`` clips (in cache order:
shard by shard, as ``magicdistill cache`` wrote them) are the held-out set every row is measured on; every
generator is distilled on the others only, through a split folder ``OUT/train_data`` (data/cache_split.py)
that reads the cache's shards in place. The cache must hold clips (not prompts only) encoded by each
teacher's own VAE and text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.cache_reader import CachedClips
from ..data.cache_split import write_split
from ..distill.cached_data import open_cache_for_teacher
from ..models.folder import read_record, resolve_vae_dir
from ..models.text import TextEmbedding

TRAIN_SPLIT = "train_data"


@dataclass
class BenchData:
    cache: CachedClips
    held: list[int]  # the held-out clips' indices in the cache
    train_dir: Path  # the split folder the generators are distilled on

    @property
    def num_frames(self) -> int:
        return int(self.cache.rule["num_frames"])

    def record(self) -> dict:
        """What a bench folder is tied to (check_bench_folder): the cache's identity and its split."""
        return {"path": str(self.cache.path.resolve()), "key": self.cache.manifest["key"], "clips": len(self.cache),
                "held_out": len(self.held)}

    def write_train_split(self) -> None:
        if not (self.train_dir / "manifest.json").is_file():
            write_split(self.cache, [i for i in range(len(self.cache)) if i not in set(self.held)], self.train_dir)

    def describe(self) -> str:
        r = self.cache.rule
        return f"{r['height']}×{r['width']}×{r['num_frames']} clips of the user's cache"

    def note(self) -> str:
        """The held-out line of the results page."""
        n, h = len(self.cache), len(self.held)
        return (f"- Held-out set: the last {h} of the {n} clips of the cache `{self.cache.path}` (cache order; never "
                f"used in distillation, which trains on the first {n - h}), ground truth through the VAE")

    def held_out(self, vae) -> tuple[torch.Tensor, torch.Tensor, TextEmbedding]:
        """(truth (N, 3, T, H, W) decoded from the cached latents, first frames (N, 3, H, W) in [-1, 1], text)."""
        rows = self.cache.take(self.held)
        with torch.no_grad():
            truth = vae.decode(rows.latents.to(vae.dtype)).float().cpu()
        first = rows.first_frame_pixels(torch.arange(len(self.held)))
        text = TextEmbedding(rows.text.tokens.float(), rows.text.mask, rows.text.pooled.float())
        return truth, first, text


def bench_data(data: str | Path, out: Path, held_out: int, teachers: dict[str, Path]) -> BenchData:
    """Check the cache against every teacher and hold out its last ``held_out`` clips (nothing is written)."""
    cache = None
    for d in teachers.values():  # the same check distill makes: the teacher's own VAE and text encoder
        cache = open_cache_for_teacher(data, read_record(d), resolve_vae_dir(d))
    if not cache.has_clips:
        raise ValueError(f"--data {data} is a prompts-only cache; the bench compares with held-out clips: cache videos")
    if len(cache) <= held_out:
        raise ValueError(f"--data {data} holds {len(cache)} clips; the bench holds out --clips {held_out} and needs "
                         "more to distil on (cache more videos or lower --clips)")
    n = len(cache)
    return BenchData(cache, list(range(n - held_out, n)), out / TRAIN_SPLIT)
