"""Atomic outputs: a file or folder appears complete at its final path, or not at all.

Everything is written under a temporary sibling name and renamed into place (``os.replace`` is
atomic within one filesystem), so an exception, a crash or a kill leaves the previous content (or
nothing) at the path, never half of a new one. Used by checkpoints, model folders, indexes, JSON
reports and videos alike.
"""

from __future__ import annotations

import hashlib
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
    remove_stale_temps(path)
    tmp = path.with_name(f"{_temp_prefix(path)}{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        try:  # cleanup must never replace the error that got us here (a full disk, a read-only folder)
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _temp_prefix(path: Path) -> str:
    """A short hidden name for ``path``'s temporary siblings: part of its name (readable) and a hash of all
    of it (unique), so a long file name still leaves room under the file system's 255-byte name limit."""
    digest = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f".{path.name[:40]}.{digest}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temporary siblings of ``path`` left by a killed writer (its pid no longer runs)."""
    path = Path(path)
    prefix, removed = _temp_prefix(path), []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in candidates:
        pid = p.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def recover_folder(path: str | Path) -> None:
    """Finish or undo an ``atomic_folder`` swap a killed process left half done: a leftover ``.tmp`` is
    deleted; an ``.old`` without the folder itself is moved back (the kill fell between the two renames);
    an ``.old`` beside a complete folder is deleted. Call it only while holding the folder's writer lock."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), previous_folder(path)
    shutil.rmtree(tmp, ignore_errors=True)
    if old.exists():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, path)


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
        swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_in(tmp: str | Path, path: str | Path) -> None:
    """Replace folder ``path`` by the complete folder ``tmp``: the old one is moved to ``previous_folder(path)``
    just before, and deleted after (a kill between the two renames leaves it there, whole)."""
    tmp, path = Path(tmp), Path(path)
    old = previous_folder(path)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
