"""Where and when a bench row was measured, stored in the row itself: the page that reports it may
be written later, by another commit or on another machine (a re-run that only re-renders)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from functools import cache
from pathlib import Path

import torch


def git_commit(where: Path) -> str:
    """HEAD of the checkout holding ``where``, marked when files under ``where`` differ from it (only
    there: a bench rewrites docs/RESULTS.md as it goes, which changes no measured code)."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


@cache
def code_commit() -> str:
    """The package's commit, read once per process. run_bench calls it before any work, so commits
    made while a bench runs (which do not change the code it runs) are not attributed to its rows."""
    return git_commit(Path(__file__).parent.parent)


def provenance() -> dict:
    """The commit of the code this process runs, the machine, thread count, time and load, as
    JSON-able values."""
    return {"commit": code_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load": round(os.getloadavg()[0], 1)}


def summarise(rows: list[dict]) -> list[str]:
    """Header lines naming every distinct commit and machine the measured rows came from."""
    recs = [r["measured"] for r in rows if r.get("measured")]
    if not recs:
        return []
    lines = []
    for key, what in (("commit", "git commit"), ("machine", "machine")):
        counts: dict[str, int] = {}
        for rec in recs:
            val = rec[key] + (f", {rec['threads']} torch threads, torch {rec['torch']}" if key == "machine" else "")
            counts[val] = counts.get(val, 0) + 1
        lines.append(f"- Measured with {what}: " + "; ".join(
            f"{v}" + (f" ({n} of {len(recs)} rows)" if len(counts) > 1 else "") for v, n in counts.items()))
    dates, loads = sorted(r["date"] for r in recs), [r["load"] for r in recs]
    lines.append(f"- Measured {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
                 + f"; 1-minute load average when each row finished: {min(loads):.1f}–{max(loads):.1f} "
                 "(shared machine: read time ratios, not seconds)")
    if len(recs) < len(rows):
        k = len(rows) - len(recs)
        lines.append(f"- {k} row{'s' if k > 1 else ''} measured before rows recorded this (commit and machine unknown)")
    return lines
