"""Atomic outputs: a file or folder appears complete at its final path, or not at all.

Everything is written under a temporary sibling name and renamed into place (``os.replace`` is
atomic within one filesystem), so an exception, a crash or a kill leaves the previous content (or
nothing) at the path, never half of a new one. Used by checkpoints, model folders, indexes, JSON
reports and videos alike.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_file(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path to write; it becomes ``path`` when the block succeeds.

    ``suffix`` keeps an extension on the temporary name for writers that infer the format from it
    (PyAV picks the mp4 muxer from ``.mp4``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def previous_folder(path: str | Path) -> Path:
    """Where ``atomic_folder`` keeps the old content during the swap (readers may fall back to it)."""
    path = Path(path)
    return path.with_name(path.name + ".old")


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling folder to fill; when the block succeeds it replaces ``path``.

    An existing folder at ``path`` is moved to ``previous_folder(path)`` just before the new one is
    renamed in, and deleted after: a kill between the two renames leaves the old folder there."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old = previous_folder(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
