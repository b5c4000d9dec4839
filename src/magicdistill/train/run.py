"""The run folder: resolved config, metrics log, checkpoints, samples. Shared by every trainer."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..config import Strict
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint


def lr_schedule(opt: torch.optim.Optimizer, factor, start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of step k is base_lr * factor(k), positioned at step ``start`` (0, or a resumed
    run's checkpoint step). Built after the optimizer state is restored and never stepped before the
    optimizer (stepping it ``start`` times on resume is what made torch warn about the call order)."""
    for group in opt.param_groups:  # a resumed optimizer's groups already carry the base lr
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(opt, factor, last_epoch=start - 1)


class NonFiniteLoss(RuntimeError):
    pass


class Run:
    """``<out>/config.json``, ``<out>/metrics.jsonl``, ``<out>/checkpoint`` (latest), ``<out>/samples``."""

    def __init__(self, out: str | Path, config: Strict, *, resume: bool = False, may_change: tuple[str, ...] = ()):
        """``may_change``: top-level config keys a resumed run may alter (e.g. its length)."""
        self.dir = Path(out)
        self.config = config
        cfg_file = self.dir / "config.json"
        if resume:
            if not has_checkpoint(self.dir / "checkpoint"):
                raise ValueError(f"--resume given but {self.dir} holds no checkpoint")
            saved = json.loads(cfg_file.read_text())
            try:  # through the config class, so a field added since (with its default) is no change
                saved = json.loads(type(config).model_validate(saved).model_dump_json())
            except ValueError:
                pass  # a removed or renamed field: compared raw, reported as a difference below
            new = json.loads(config.model_dump_json())
            changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k) and k not in may_change)
            if changed:
                raise ValueError(f"--resume with a config that differs from {cfg_file} in {', '.join(changed)}; "
                                 "use a new --out")
        elif (self.dir / "checkpoint").exists():
            raise ValueError(f"{self.dir} already holds a run; pass --resume to continue it or choose a new --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "samples").mkdir(exist_ok=True)
        cfg_file.write_text(config.model_dump_json(indent=1))
        self._t0 = time.time()

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoint"

    def log(self, step: int, **metrics: float) -> None:
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise NonFiniteLoss(f"non-finite {k} = {v} at step {step}; stopping (last checkpoint kept)")
        rec = {"step": step, "time": round(time.time() - self._t0, 2), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             **meta: Any) -> None:
        save_checkpoint(self.checkpoint_dir, modules=modules, optimizers=optimizers, meta={"step": step, **meta})

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> int:
        meta = load_checkpoint(self.checkpoint_dir, modules=modules, optimizers=optimizers)
        return int(meta["step"])
