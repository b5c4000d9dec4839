"""Atomic, resumable checkpoints in safetensors (no pickles: a checkpoint is data, not code).

A checkpoint is a folder: one ``<name>.safetensors`` per stateful object (model, EMA, optimizer,
RNG) and ``meta.json``. It is written to ``<dir>.tmp`` and renamed into place, so a crash or kill
mid-write leaves the previous checkpoint intact: at most the work since it is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder, previous_folder


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer state dict into tensors (for safetensors) plus JSON-able extras."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(extra["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": extra["param_groups"]})


def save_checkpoint(path: str | Path, *, modules: dict[str, torch.nn.Module] | None = None,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write modules' state dicts, optimizers and ``meta`` atomically to folder ``path``."""
    path = Path(path)
    meta = dict(meta or {})
    meta["optimizers"] = {}
    with atomic_folder(path) as tmp:
        for name, module in (modules or {}).items():
            sd = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(sd, str(tmp / f"{name}.safetensors"))
        for name, opt in (optimizers or {}).items():
            tensors, extra = optimizer_state_tensors(opt)
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp / f"optim_{name}.safetensors"))
            meta["optimizers"][name] = extra
        meta["rng_torch"] = torch.get_rng_state().tolist()
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or a one-line error naming it (missing, truncated, not safetensors)."""
    from ..validate import check_safetensors

    if not file.is_file():
        raise ValueError(f"checkpoint file {file} is missing; the checkpoint is incomplete: use a new --out")
    check_safetensors(file)
    return load_file(str(file))


def has_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "meta.json").is_file() or (previous_folder(path) / "meta.json").is_file()


def load_checkpoint(path: str | Path, *, modules: dict[str, torch.nn.Module] | None = None,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None, strict: bool = True) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into the given objects; returns ``meta``."""
    path = Path(path)
    if not (path / "meta.json").is_file() and has_checkpoint(path):
        path = previous_folder(path)  # killed between the two renames of a save: the previous checkpoint
    if not (path / "meta.json").is_file():
        raise ValueError(f"no checkpoint at {path} (missing meta.json)")
    try:
        meta = json.loads((path / "meta.json").read_text())
        for name, module in (modules or {}).items():
            if not (path / f"{name}.safetensors").is_file():
                raise ValueError(f"checkpoint {path} has no '{name}' weights; use a new --out")
            module.load_state_dict(_load_tensors(path / f"{name}.safetensors"), strict=strict)
        for name, opt in (optimizers or {}).items():
            load_optimizer_state(opt, _load_tensors(path / f"optim_{name}.safetensors"), meta["optimizers"][name])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {path} is damaged ({type(e).__name__}: {e}); use a new --out") from None
    if "rng_torch" in meta:
        torch.set_rng_state(torch.tensor(meta["rng_torch"], dtype=torch.uint8))
    return meta
