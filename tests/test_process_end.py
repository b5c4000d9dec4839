"""How the command-line process ends: plainly (``sys.exit``: atexit handlers and the interpreter's teardown run),
or, once it finished a command as one of several torchrun processes, at once after flushing its output
(``os._exit``: no teardown, where a finished gloo run once aborted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_distributed import ENV, SRC, _cfg

SCRIPT = """
import atexit, sys
from magicdistill.train import process_end
atexit.register(lambda: print("teardown ran"))
if sys.argv[1] == "group":
    process_end.finished_in_a_group()
print("work done", end="")  # unflushed on purpose: the exit must flush it
sys.stderr.write("a warning")
process_end.exit_process(int(sys.argv[2]))
"""


def _end(mode: str, code: int) -> subprocess.CompletedProcess:
    env = {**ENV, "PYTHONUNBUFFERED": ""}  # block-buffered output, as when a process writes to a pipe or file
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(code)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_single_process_command_exits_through_the_interpreter_s_teardown():
    r = _end("alone", 0)
    assert r.returncode == 0 and r.stdout == "work doneteardown ran\n" and r.stderr == "a warning"
    assert _end("alone", 3).returncode == 3


def test_a_process_that_finished_in_a_group_exits_at_once_with_its_output_flushed():
    r = _end("group", 0)
    assert r.returncode == 0 and r.stdout == "work done" and r.stderr == "a warning"  # no teardown
    assert _end("group", 4).returncode == 4


def test_only_a_finished_multi_process_command_marks_its_process(monkeypatch):
    """World.joined marks the process after the closing barrier, not when the run was one process or failed."""
    from magicdistill.train import process_end
    from magicdistill.train.distributed import World

    monkeypatch.setattr(process_end, "_finished_in_a_group", False)
    with World.joined("cpu"):
        pass
    assert process_end._finished_in_a_group is False  # one process: a plain exit
    monkeypatch.setattr(World, "from_env", staticmethod(lambda device: World(0, 2)))
    monkeypatch.setattr(World, "barrier", lambda self: None)
    monkeypatch.setattr(World, "close", lambda self: None)
    with pytest.raises(ValueError), World.joined("cpu"):
        raise ValueError("bad input")
    assert process_end._finished_in_a_group is False  # a failed command exits plainly with its error
    with World.joined("cpu"):
        pass
    assert process_end._finished_in_a_group is True


@pytest.mark.slow
def test_the_command_line_skips_the_teardown_only_after_a_finished_torchrun_command(tmp_path):
    """`magicdistill distill --method euler` (no training: the teacher's folder with its sampler) under torchrun and
    alone; an atexit hook (sitecustomize) marks each process whose interpreter teardown ran."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        "mark = pathlib.Path(os.environ['TEARDOWN_MARKS']) / os.environ.get('RANK', 'alone')\n"
        "atexit.register(lambda: mark.write_text('ran'))\n")
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**ENV, "PYTHONPATH": f"{hook}:{SRC}", "TEARDOWN_MARKS": str(marks)}
    cfg = tmp_path / "euler.json"
    cfg.write_text(_cfg(method="euler", generator="full").model_dump_json())
    for procs in (2, 1):
        head = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
                                   if procs == 2 else [])
        r = subprocess.run(head + ["-m", "magicdistill", "distill", "--config", str(cfg), "--out",
                                   str(tmp_path / f"run{procs}"), "--cache-dir", str(tmp_path / "cache")],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (tmp_path / f"run{procs}" / "generator" / "dit.json").is_file()
        assert str(tmp_path / f"run{procs}" / "generator") in r.stdout  # rank 0's last line, flushed
    assert sorted(p.name for p in marks.iterdir()) == ["alone"]  # the two torchrun processes skipped it
