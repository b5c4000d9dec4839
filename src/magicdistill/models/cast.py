"""Store a model folder's weights in another dtype (``magicdistill cast-weights``).

Why: float16 storage halves a model folder's bytes; a 256-wide tiny teacher scored identically in float16
and float32 (docs/research/LOG.md, "Stop 9"), and real checkpoints are routinely shipped in bf16. Loading
is unchanged: ``VideoDiT.load(dtype=...)`` casts the stored weights to the compute dtype it is asked for.
The folder's record (dit.json) is kept (``save`` writes the storage dtype into it), and its VAE entry
made absolute so the new folder works wherever it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from ..atomic import atomic_folder
from ..config import DType, torch_dtype
from .dit import VideoDiT
from .folder import is_real_folder

DTYPES = get_args(DType)


def cast_weights(model_dir: str | Path, out: str | Path, dtype: str) -> Path:
    """Write ``model_dir``'s DiT (transformer + vision encoder) to the new folder ``out`` stored as ``dtype``."""
    from .folder import read_record, resolve_vae_dir, with_absolute_vae

    model_dir, out = Path(model_dir), Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new --out")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if is_real_folder(model_dir):  # a Wan / HunyuanVideo folder: the transformer cast, VAE and encoders kept
        from .families.derived import cast_real

        return cast_real(model_dir, out, torch_dtype(dtype))
    if not (model_dir / "transformer" / "config.json").is_file():
        raise ValueError(f"no model at {model_dir}: expected a magicdistill model folder (transformer/, dit.json)")
    if read_record(model_dir).get("quantization"):
        raise ValueError(f"{model_dir} is int8-quantized; cast the unquantized source instead")
    dit = VideoDiT.load(model_dir)
    meta = dict(dit.meta)  # the folder's dit.json, as loaded
    try:
        meta = with_absolute_vae(meta, resolve_vae_dir(model_dir))
    except ValueError:
        pass  # no VAE recorded: nothing to point at
    with atomic_folder(out) as tmp:
        dit.to(torch_dtype(dtype)).save(tmp, **meta)
    return out
