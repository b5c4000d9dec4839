"""A split of a cache folder: a new cache folder holding some of another's clips, without copying any latents.

Its manifest is the source's (same key and encoders, plus ``split_of``); its shard records list the chosen
clips with their ``row`` in the source shard and the source shard file by absolute path, so the lazy reader
(data/cache_reader.py) reads them where they are. Used by ``bench --data`` to train on all clips but a
held-out few.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import atomic_folder
from .cache_reader import CachedClips


def write_split(data: CachedClips, rows: list[int], out: Path) -> Path:
    """``out``: a cache folder of the clips ``rows`` of ``data`` (in that order), written whole or not at all."""
    if not rows:
        raise ValueError(f"a split of {data.path} needs at least one clip")
    by_file: dict[str, list[dict]] = {}
    for i in rows:
        file, row = data.row_of(i)
        by_file.setdefault(str((data.path / file).resolve()), []).append(
            {"source": data.sources[i], "caption": data.captions[i], "row": row})
    with atomic_folder(out) as tmp:
        manifest = {**data.manifest, "split_of": str(data.path.resolve())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.copyfile(data.path / "null_text.safetensors", tmp / "null_text.safetensors")
        for n, (file, clips) in enumerate(by_file.items()):
            record = {"shard": n, "file": file, "clips": clips, "skipped": []}
            (tmp / f"shard_{n:05d}.json").write_text(json.dumps(record, indent=1))
    return out
