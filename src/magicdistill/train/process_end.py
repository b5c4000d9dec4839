"""How a command-line process ends (kept free of torch: every command's exit passes through here).

A process that finished its work as one of several under torchrun ends at once after flushing its output,
skipping the interpreter's teardown: there, communication objects that outlive the closed process group (held
by sharded modules) are destroyed while the other processes exit too, and a finished gloo run once aborted that
way (SIGABRT, "terminate called without an active exception"), failing a run whose files were all written.
Every file is closed and renamed into place before this point (``World.joined`` marks it after the barrier).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

_finished_in_a_group = False


def finished_in_a_group() -> None:
    """This process finished a command as one of several and left their process group."""
    global _finished_in_a_group
    _finished_in_a_group = True


def exit_process(code: int) -> NoReturn:
    """``sys.exit(code)``, or after a finished multi-process command, ``os._exit(code)`` once output is flushed."""
    if _finished_in_a_group:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    sys.exit(code)
