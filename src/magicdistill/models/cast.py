"""Store a model folder's weights in another dtype (``magicdistill cast-weights``).

Why: the shipped tiny models are trained in float32 but stored in float16, which halves the repo's
weights at no measurable cost (docs/DECISIONS.md); real checkpoints are routinely shipped in bf16. Loading
is unchanged: ``VideoDiT.load(dtype=...)`` casts the stored weights to the compute dtype it is asked for.
The folder's record (dit.json) is kept (``save`` writes the storage dtype into it), and its VAE entry
made absolute so the new folder works wherever it is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_folder
from ..config import torch_dtype
from .dit import VideoDiT

DTYPES = ("float16", "bfloat16", "float32")


def cast_weights(model_dir: str | Path, out: str | Path, dtype: str) -> Path:
    """Write ``model_dir``'s DiT (transformer + vision encoder) to the new folder ``out`` stored as ``dtype``."""
    from ..pipeline import resolve_vae_dir

    model_dir, out = Path(model_dir), Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new --out")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not (model_dir / "transformer" / "config.json").is_file():
        raise ValueError(f"no model at {model_dir}: expected a magicdistill model folder (transformer/, dit.json)")
    meta = json.loads((model_dir / "dit.json").read_text()) if (model_dir / "dit.json").is_file() else {}
    if meta.get("quantization"):
        raise ValueError(f"{model_dir} is int8-quantized; cast the unquantized source instead")
    dit = VideoDiT.load(model_dir)
    meta = dict(getattr(dit, "meta", meta))
    try:
        meta["vae"] = str(resolve_vae_dir(model_dir).resolve())
    except ValueError:
        pass  # no VAE recorded: nothing to point at
    with atomic_folder(out) as tmp:
        dit.to(torch_dtype(dtype)).save(tmp, **meta)
    return out
