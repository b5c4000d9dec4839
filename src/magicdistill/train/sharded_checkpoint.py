"""Sharded checkpoints (torch.distributed.checkpoint) of a multi-process run, resumable in any number of
processes (one included).

The folder holds DCP's files (``.metadata`` and one ``__<rank>_0.distcp`` per writing process: each writes
only its shards of the models and optimizer states) and ``meta.json`` (step, ``"format": "dcp"``, the
number of processes that wrote it, the optimizers' parameter groups and the torch RNG state). Tensors are
keyed by their names, not by process, so a checkpoint of N processes loads into M (DCP reshards).

Atomic like the single-process format: every process writes into ``<dir>.tmp``; when all are done, rank 0
adds ``meta.json`` and swaps the folder into place (``atomic.swap_in``), so a kill during a save leaves the
previous checkpoint whole. DCP's ``.metadata`` is a pickle: resume only checkpoints you wrote.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..atomic import previous_folder, swap_in
from .distributed import World

FORMAT = "dcp"


def is_sharded(path: Path) -> bool:
    """The checkpoint at ``path`` (or its previous version mid-swap) is a sharded one."""
    for folder in (path, previous_folder(path)):
        meta = folder / "meta.json"
        if meta.is_file():
            try:
                return json.loads(meta.read_text()).get("format") == FORMAT
            except ValueError:
                return False
    return False


def _holder(modules: dict[str, nn.Module]) -> nn.Module:
    """One module holding every trained parameter under a stable name (torch's optimizer state dicts are
    keyed by parameter names, which is what lets a checkpoint change its number of processes)."""
    return nn.ModuleDict(modules)


@contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """DCP warns that it assumes one process when there is no process group: here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def save_sharded(path: str | Path, world: World, *, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], meta: dict[str, Any]) -> Path:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    world.barrier()
    holder = _holder(modules)
    optim = {name: get_optimizer_state_dict(holder, opt) for name, opt in optimizers.items()}
    state = {"model": {name: m.state_dict() for name, m in modules.items()},
             "optim": {name: osd["state"] for name, osd in optim.items()}}
    with _one_process_is_meant():
        dcp.save(state, checkpoint_id=str(tmp), no_dist=not world.distributed)
    if world.is_main:
        record = {**meta, "format": FORMAT, "processes": world.size,
                  "optimizers": {name: {"param_groups": osd["param_groups"]} for name, osd in optim.items()},
                  "rng_torch": torch.get_rng_state().tolist()}
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        swap_in(tmp, path)
    world.barrier()
    return path


def load_sharded(path: str | Path, *, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore a sharded checkpoint into the given (sharded or plain) objects; every process calls it."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    path = Path(path)
    if not (path / "meta.json").is_file() and (previous_folder(path) / "meta.json").is_file():
        path = previous_folder(path)  # killed between the two renames of a save: the previous checkpoint
    try:
        meta = json.loads((path / "meta.json").read_text())
        holder = _holder(modules)
        optim = {name: get_optimizer_state_dict(holder, opt) for name, opt in optimizers.items()}
        state = {"model": {name: m.state_dict() for name, m in modules.items()},
                 "optim": {name: osd["state"] for name, osd in optim.items()}}
        # in place, into each process's shards (or into whole tensors in one process)
        with _one_process_is_meant():
            dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
        for name, m in modules.items():
            m.load_state_dict(state["model"][name])
        for name, opt in optimizers.items():
            groups = meta["optimizers"][name]["param_groups"]
            set_optimizer_state_dict(holder, opt, {"state": state["optim"][name], "param_groups": groups})
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError,
            CheckpointException) as e:
        raise ValueError(f"checkpoint {path} is damaged or does not fit this run ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use a new --out") from None
    torch.set_rng_state(torch.tensor(meta["rng_torch"], dtype=torch.uint8))
    return meta


def load_whole_into_shards(path: str | Path, *, modules: dict[str, nn.Module],
                           optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """A single-process checkpoint (whole tensors, train/checkpoint.py) into the shards of a multi-process run:
    every process reads the files and keeps its own part of each tensor. The optimizers' states are keyed by
    parameter order, which is the same in one process and in N (the same code builds them)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    from .checkpoint import load_checkpoint

    def into_shards(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if isinstance(like, DTensor):
            return distribute_tensor(whole.to(like.dtype), like.device_mesh, like.placements)
        return whole.to(like.device, like.dtype)

    class Whole(nn.Module):  # receives a module's whole tensors and puts its shards into ``target``
        def __init__(self, target: nn.Module):
            super().__init__()
            self.target = target

        def load_state_dict(self, sd, strict: bool = True):
            current = self.target.state_dict()
            missing = set(current) - set(sd)
            if missing:
                raise ValueError(f"the checkpoint lacks {sorted(missing)[0]}")
            self.target.load_state_dict({k: into_shards(sd[k], v) for k, v in current.items()})

    class WholeOptimizer:  # the same for an optimizer: each state tensor shaped like its parameter is sharded
        def __init__(self, opt: torch.optim.Optimizer):
            self.opt = opt

        def load_state_dict(self, sd):
            params = [p for group in self.opt.param_groups for p in group["params"]]
            state = {i: {k: into_shards(v, params[i]) if torch.is_tensor(v) and v.shape == params[i].shape else v
                         for k, v in st.items()} for i, st in sd["state"].items()}
            self.opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})

    return load_checkpoint(path, modules={n: Whole(m) for n, m in modules.items()},
                           optimizers={n: WholeOptimizer(o) for n, o in optimizers.items()})
