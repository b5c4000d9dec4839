"""``--log tensorboard|wandb``: a run's metrics also sent to TensorBoard or Weights & Biases.

``metrics.jsonl`` is always written (train/run.py); a sink receives the same rows (step, then every numeric
metric as a scalar):
- ``tensorboard``: event files in ``<out>/tensorboard`` (``torch.utils.tensorboard``; needs the
  ``tensorboard`` package). View with ``tensorboard --logdir <out>/tensorboard``;
- ``wandb``: a run in ``<out>/wandb``, offline unless ``WANDB_MODE`` says otherwise (nothing leaves the
  machine by default; ``wandb sync`` uploads it later). Needs the ``wandb`` package.
A missing package is a one-line error naming it, raised before the run writes anything.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

SINKS = ("none", "tensorboard", "wandb")
PACKAGE = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_sink(kind: str) -> None:
    """A one-line ValueError for an unknown sink or one whose package is not installed."""
    if kind not in SINKS:
        raise ValueError(f"--log {kind}: one of {', '.join(SINKS)}")
    if kind == "none":
        return
    module, package = PACKAGE[kind]
    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(f"--log {kind} needs the {package} package: pip install {package} "
                         "(metrics.jsonl is written without it: drop --log)") from None


class TensorBoardSink:
    def __init__(self, run_dir: Path, resume: bool):
        self.dir, self.resume, self.writer = run_dir / "tensorboard", resume, None

    def log(self, step: int, metrics: dict) -> None:
        if self.writer is None:  # opened at the first row: a resumed run purges the events logged after its checkpoint
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir), purge_step=step if self.resume else None)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config: dict, resume: bool):
        import wandb

        (run_dir / "wandb").mkdir(exist_ok=True)
        self.run = wandb.init(project="magicdistill", name=run_dir.name, dir=str(run_dir), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"), resume="allow" if resume else None)

    def log(self, step: int, metrics: dict) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_sink(kind: str, run_dir: Path, config: dict, resume: bool = False):
    """The sink for ``--log kind`` (None for "none"); ``check_sink`` first."""
    check_sink(kind)
    if kind == "tensorboard":
        return TensorBoardSink(Path(run_dir), resume)
    if kind == "wandb":
        return WandbSink(Path(run_dir), config, resume)
    return None
