"""The run folder: resolved config, metrics log, checkpoints, samples. Shared by every trainer."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..atomic import recover_folder, write_text_atomic
from ..config import Strict
from ..runlock import LOCK_NAME, RunLock
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .distributed import World, all_finite
from .metric_sinks import check_sink, open_sink
from .sharded_checkpoint import is_sharded, load_sharded, load_whole_into_shards, save_sharded


def lr_schedule(opt: torch.optim.Optimizer, factor, start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of step k is base_lr * factor(k), positioned at step ``start`` (0, or a resumed
    run's checkpoint step). Built after the optimizer state is restored and never stepped before the
    optimizer (stepping it ``start`` times on resume is what made torch warn about the call order)."""
    for group in opt.param_groups:  # a resumed optimizer's groups already carry the base lr
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(opt, factor, last_epoch=start - 1)


class NonFiniteLoss(ValueError):
    """Training diverged (a NaN/inf loss or weight): a one-line error naming the value, the iteration and
    the checkpoint kept; nothing is saved from the diverged state."""


# Files and folders that say a folder already holds a run or a model (``--out`` refuses to reuse it).
RUN_MARKERS = ("checkpoint", "config.json", "metrics.jsonl", "samples", "generator", "teacher", "vae", "probe",
               "dit.json", "transformer")
FINAL_FOLDERS = ("checkpoint", "generator", "teacher", "vae", "probe")  # written by atomic_folder swaps
_OPEN_RUNS: list["Run"] = []


class Run:
    """``<out>/config.json``, ``<out>/metrics.jsonl``, ``<out>/checkpoint`` (latest), ``<out>/samples``.

    Holds ``<out>``'s writer lock (runlock.py) from construction until ``close`` (trainers are wrapped by
    ``closes_runs``, which also turns Ctrl-C into one line saying what was kept)."""

    def __init__(self, out: str | Path, config: Strict, *, resume: bool = False, may_change: tuple[str, ...] = (),
                 length_key: str | None = None, identity: dict[str, str] | None = None, overwrite: bool = False,
                 log: str = "none", world: World = World()):
        """``may_change``: top-level config keys a resumed run may alter (e.g. its length). ``length_key``: the
        config's length (steps/iters), which a resumed run may not set below what its checkpoint has done.
        ``identity``: what the run is of that is not in its config (e.g. the teacher folder): a resume must
        match it. ``overwrite``: start afresh in a folder holding another run (its files are replaced).
        ``log``: also send the metrics to tensorboard or wandb (train/metric_sinks.py), from rank 0.
        ``world``: the processes of a multi-process run; rank 0 holds the lock, checks the folder and writes
        its files, the others follow its verdict (checkpoints are written by all: sharded_checkpoint.py)."""
        check_sink(log)  # a missing package fails before anything is written
        self._sink = None
        self._log_to = log
        self.dir = Path(out)
        self.config = config
        self.step = 0  # the last iteration checked (check_finite)
        self.world = world
        self._lock = None
        if not world.distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would write it all
            raise ValueError("this command runs in one process; under torchrun only `distill` and `train` run in "
                             "several: start it without torchrun")
        if not world.is_main:
            refused = world.broadcast(None)
            if refused:
                raise ValueError(refused)
            _OPEN_RUNS.append(self)
            self._t0 = time.time()
            return
        try:
            self._start(resume, may_change, length_key, identity, overwrite)
        except Exception as e:  # the other processes stop with rank 0's one-line reason
            world.broadcast(str(e) or type(e).__name__)
            raise
        world.broadcast(None)

    def _start(self, resume: bool, may_change: tuple[str, ...], length_key: str | None,
               identity: dict[str, str] | None, overwrite: bool) -> None:
        created, lock_new = not self.dir.exists(), not (self.dir / LOCK_NAME).exists()
        self._lock = RunLock(self.dir)
        try:
            self._open(resume, may_change, length_key, identity or {}, overwrite)
        except BaseException:
            self.close()
            if lock_new:
                (self.dir / LOCK_NAME).unlink(missing_ok=True)
            if created:
                try:
                    self.dir.rmdir()  # leave nothing behind when refusing a new folder
                except OSError:
                    pass
            raise
        self._sink = open_sink(self._log_to, self.dir, self.config.model_dump(), resume)
        _OPEN_RUNS.append(self)
        self._t0 = time.time()

    def _open(self, resume: bool, may_change: tuple[str, ...], length_key: str | None, identity: dict[str, str],
              overwrite: bool) -> None:
        for name in FINAL_FOLDERS:  # a writer killed mid-swap (we hold the lock: no one else is writing)
            recover_folder(self.dir / name)
        cfg_file, id_file = self.dir / "config.json", self.dir / "run.json"
        new = json.loads(self.config.model_dump_json())
        if resume:
            if not has_checkpoint(self.checkpoint_dir):
                raise ValueError(f"--resume given but {self.dir} holds no checkpoint")
            saved = _read_json(cfg_file, "the run's config")
            try:  # through the config class, so a field added since (with its default) is no change
                saved = json.loads(type(self.config).model_validate(saved).model_dump_json())
            except ValueError:
                pass  # a removed or renamed field: compared raw, reported as a difference below
            changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k) and k not in may_change)
            if changed:
                raise ValueError(f"--resume with a config that differs from {cfg_file} in {', '.join(changed)}; "
                                 "use a new --out")
            was = _read_json(id_file, "the run's record") if id_file.is_file() else identity
            for key, value in identity.items():
                if was.get(key, value) != value:
                    raise ValueError(f"--resume with another {key} ({value}) than the run in {self.dir} "
                                     f"({was[key]}); use a new --out")
            done = checkpoint_step(self.checkpoint_dir)
            if length_key and new.get(length_key, done) < done:
                raise ValueError(f"--{length_key} {new[length_key]} is fewer than the {done} already done in "
                                 f"{self.checkpoint_dir}; give --{length_key} {done} or more, or use a new --out")
            self._drop_metrics_after(done)
        else:
            held = [m for m in RUN_MARKERS if (self.dir / m).exists()]
            restart = held and set(held) <= {"config.json", "metrics.jsonl", "samples"} and cfg_file.is_file() \
                and _read_json(cfg_file, "the run's config") == new  # the same run killed before its first checkpoint
            if held and not (overwrite or restart):
                what = "a model folder" if {"dit.json", "transformer"} & set(held) else "a run"
                raise ValueError(f"{self.dir} already holds {what} ({', '.join(held)}); pass --resume to continue it, "
                                 "--overwrite to replace it, or choose a new --out")
            for name in ("checkpoint", "samples"):
                shutil.rmtree(self.dir / name, ignore_errors=True)
            (self.dir / "metrics.jsonl").unlink(missing_ok=True)
        (self.dir / "samples").mkdir(exist_ok=True)
        write_text_atomic(cfg_file, self.config.model_dump_json(indent=1))
        if identity:
            write_text_atomic(id_file, json.dumps(identity, indent=1))

    def _drop_metrics_after(self, step: int) -> None:
        """Rows logged after the checkpoint are logged again by the resumed run: keep each step once."""
        f = self.dir / "metrics.jsonl"
        if f.is_file():
            rows = [r for r in f.read_text().splitlines() if r.strip()]
            kept = [r for r in rows if _row_step(r) <= step]
            if len(kept) != len(rows):
                write_text_atomic(f, "".join(r + "\n" for r in kept))

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoint"

    def kept(self) -> str:
        """What a stopped run leaves: its checkpoint (and step) or that none exists yet."""
        if has_checkpoint(self.checkpoint_dir):
            return f"kept the checkpoint of step {checkpoint_step(self.checkpoint_dir)} in {self.checkpoint_dir} " \
                   "(continue with --resume)"
        return f"no checkpoint was written yet in {self.dir}"

    def check_finite(self, step: int, **metrics: float) -> None:
        """Every iteration, before anything is saved: the values the step computed anyway must be finite."""
        self.step = step
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise NonFiniteLoss(f"non-finite {k} = {v} at iteration {step}: stopped, nothing saved from it; "
                                    f"{self.kept()}. Lower the learning rate or check the data")

    def log(self, step: int, **metrics: float) -> None:
        self.check_finite(step, **metrics)
        if not self.world.is_main:
            return
        rec = {"step": step, "time": round(time.time() - self._t0, 2), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._sink is not None:
            self._sink.log(step, metrics)

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             **meta: Any) -> None:
        bad = None
        for name, module in modules.items():  # a checkpoint is never written from non-finite weights
            for key, t in module.state_dict().items():
                if bad is None and t.is_floating_point() and not all_finite(t):
                    bad = f"{name} ({key})"
        if self.world.any(bad is not None):  # a shard of another process counts too
            raise NonFiniteLoss(f"non-finite weights in {bad or 'another process shard'} at iteration {step}: not "
                                f"saved; {self.kept()}. Lower the learning rate or check the data")
        if self.world.distributed:
            save_sharded(self.checkpoint_dir, self.world, modules=modules, optimizers=optimizers, meta={"step": step, **meta})
        else:
            save_checkpoint(self.checkpoint_dir, modules=modules, optimizers=optimizers, meta={"step": step, **meta})

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> int:
        """Restore the checkpoint: a sharded one into any number of processes; a single-process one into one."""
        if is_sharded(self.checkpoint_dir):
            meta = load_sharded(self.checkpoint_dir, modules=modules, optimizers=optimizers)
        elif self.world.distributed:  # written by one process: each process takes its shards of the whole tensors
            meta = load_whole_into_shards(self.checkpoint_dir, modules=modules, optimizers=optimizers)
        else:
            meta = load_checkpoint(self.checkpoint_dir, modules=modules, optimizers=optimizers)
        return int(meta["step"])

    def close(self) -> None:
        if getattr(self, "_sink", None) is not None:
            self._sink.close()
            self._sink = None
        if self._lock is not None:
            self._lock.release()
        if self in _OPEN_RUNS:
            _OPEN_RUNS.remove(self)


def closes_runs(fn):
    """Wrap a trainer: the runs it opens are closed (their locks released) however it ends, and Ctrl-C
    becomes ``KeyboardInterrupt("stopped at iteration N; kept ...")`` (the CLI prints that one line)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mark = len(_OPEN_RUNS)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if len(_OPEN_RUNS) <= mark:
                raise
            run = _OPEN_RUNS[-1]
            raise KeyboardInterrupt(f"stopped at iteration {run.step}; {run.kept()}") from None
        finally:
            while len(_OPEN_RUNS) > mark:
                _OPEN_RUNS[-1].close()
    return wrapper


def checkpoint_step(path: Path) -> int:
    if not has_checkpoint(path):
        return 0
    meta_file = path / "meta.json" if (path / "meta.json").is_file() else path.with_name(path.name + ".old") / "meta.json"
    return int(_read_json(meta_file, "the checkpoint's record").get("step", 0))


def _row_step(row: str) -> float:
    try:
        return float(json.loads(row).get("step", 0))
    except (ValueError, AttributeError):
        return 0.0


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing ({what}); the folder is not a complete run: use a new --out") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} ({what}): {e}; use a new --out") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} ({what}) is not a JSON object; use a new --out")
    return data
