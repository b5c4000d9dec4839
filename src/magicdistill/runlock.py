"""One writer per run folder: ``<folder>/.lock``, held with ``flock`` for as long as a trainer runs.

The kernel drops an ``flock`` when its process dies, however it dies (kill -9 included), so a lock
left by a killed run is simply free: the next run takes it over (and says so). The file also records
the owner (pid, host, start time, command) so the refusal can name who holds it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"
_HELD: dict[str, "RunLock"] = {}  # this process's locks, by folder


class RunLock:
    """Take the writer lock of ``folder`` (created if missing), or raise ValueError naming its owner (another
    process; within one process the newest lock of a folder supersedes an older one)."""

    def __init__(self, folder: str | Path):
        import fcntl

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LOCK_NAME
        key = str(self.folder.resolve())
        if key in _HELD:  # this process already writes here: the newer run (e.g. a resume in-process) takes over
            _HELD[key].release()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(self._fd)
            os.close(self._fd)
            self._fd = None
            who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another process"
            raise ValueError(f"{self.folder} is in use by {who} (since {owner.get('started', '?')}); wait for it to "
                             "finish or stop it, or choose another --out") from None
        self.previous_owner = _read_owner(self._fd)  # a killed run's record: its lock is free, taken over
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv[:1] + sys.argv[1:])[:500]}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)
        _HELD[key] = self
        self._key = key

    @property
    def took_over(self) -> bool:
        """True when a previous owner's record was there: it died without releasing (a kill, a crash)."""
        return bool(self.previous_owner)

    def release(self) -> None:
        """Clear the owner record and drop the lock (the file stays: deleting it would race a new owner)."""
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if _HELD.get(self._key) is self:
            del _HELD[self._key]


def _read_owner(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
