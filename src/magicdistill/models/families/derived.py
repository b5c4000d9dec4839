"""Writing a real family's folder as a new derived folder: a dtype cast (``cast-weights``) or int8 weights
(``quantize``). Only the transformer(s) are written; the VAE, text and image encoders, tokenizers and
scheduler stay the source's own, read from the base pipeline folder the record points at."""

from __future__ import annotations

from pathlib import Path

import torch

from ...atomic import atomic_folder
from ...quant.int8 import SCHEME, quantize_int8
from ...quant.int8_files import save_int8
from ..folder import ModelFolder, read_model_folder
from .real import INT8_WEIGHTS, load_dit



def cast_real(model_dir: Path, out: Path, dtype: torch.dtype) -> Path:
    folder = read_model_folder(model_dir)
    if folder.record.get("quantization"):
        raise ValueError(f"{model_dir} is int8-quantized; cast the unquantized source instead")
    dit = load_dit(folder)
    with atomic_folder(out) as tmp:
        dit.to(dtype).save(tmp, **_own_fields(folder))
    return out


def quantize_real(model_dir: Path, out: Path) -> Path:
    """``out``: transformer/config.json + transformer.int8.safetensors + magicdistill.json (``quantization``)."""
    import torchao

    folder = read_model_folder(model_dir)
    if folder.record.get("quantization"):
        raise ValueError(f"{model_dir} is already quantized ({folder.record['quantization']['scheme']})")
    if "transformer_2" in folder.components:
        raise ValueError(f"{model_dir} has two experts (transformer_2): int8 of such folders is not supported yet")
    dit = load_dit(folder)
    layers = quantize_int8(dit.transformer)
    with atomic_folder(out) as tmp:
        dit.transformer.save_config(str(tmp / "transformer"))
        save_int8(dit.transformer, tmp / INT8_WEIGHTS)
        from ..folder import write_derived_record

        write_derived_record(tmp, folder, **_own_fields(folder), quantization={
            "scheme": SCHEME, "library": f"torchao {torchao.__version__}", "weights": INT8_WEIGHTS,
            "granularity": "per output row, symmetric", "activations": "compute dtype",
            "transformer_layers": len(layers)})
    return out


def _own_fields(folder: ModelFolder) -> dict:
    """What a copy keeps of its source's record besides base/sampler/video (written anew)."""
    return {k: v for k, v in folder.record.items() if k not in ("base", "family", "pipeline", "sampler", "video",
                                                                "quantization", "weights_dtype")}
