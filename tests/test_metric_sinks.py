"""`--log tensorboard|wandb`: the same rows as metrics.jsonl reach a TensorBoard event file (read back with
TensorBoard's own reader); a sink whose package is missing is a one-line error before anything is written."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from magicdistill.cli import app


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from toys import write_tiny_teacher

    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_distill_logs_its_losses_to_tensorboard(teacher, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--iters", 2, "--batch-size", 1, "--num-clips", 4,
                     "--lora-rank", 4, "--log", "tensorboard")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(out / "tensorboard")
    keys = {k for r in rows for k in r if k not in ("step", "time")}
    assert {"loss_dmd", "loss_fake", "loss_d"} <= keys and set(scalars) == keys
    for key in keys:  # every row of metrics.jsonl, and only those, as a scalar at its step
        want = [(r["step"], r[key]) for r in rows if key in r]
        got = scalars[key]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)  # stored as float32


def test_train_logs_to_tensorboard_and_a_resume_purges_what_followed_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from magicdistill.config import DistillConfig
    from magicdistill.train.run import Run

    cfg = DistillConfig()
    run = Run(tmp_path / "r", cfg, log="tensorboard")
    for step, loss in ((1, 0.5), (2, 0.25), (3, 0.125)):
        run.log(step, loss=loss)
        if step == 1:
            run.save(1, {"m": torch.nn.Linear(1, 1)}, {})
    run.close()
    assert _scalars(tmp_path / "r" / "tensorboard")["loss"] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    # resumed from a checkpoint at step 1: step 2 is logged again, the old steps 2 and 3 are dropped
    run = Run(tmp_path / "r", cfg, resume=True, log="tensorboard")
    assert run.resume({"m": torch.nn.Linear(1, 1)}, {}) == 1
    run.log(2, loss=0.75)
    run.close()
    assert _scalars(tmp_path / "r" / "tensorboard")["loss"] == [(1, 0.5), (2, 0.75)]


def test_a_missing_package_is_a_one_line_error_before_anything_is_written(teacher, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import raises ImportError
    result = run_cli("distill", "--teacher", teacher, "--out", tmp_path / "run", "--iters", 2, "--log", "wandb")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == ("error: --log wandb needs the wandb package: pip install wandb (metrics.jsonl is "
                                     "written without it: drop --log)")
    assert not (tmp_path / "run").exists()
    result = run_cli("train", "--out", tmp_path / "run", "--steps", 2, "--log", "mlflow")
    assert result.exit_code == 2 and "--log mlflow: one of none, tensorboard, wandb" in result.output
    assert not (tmp_path / "run").exists()
