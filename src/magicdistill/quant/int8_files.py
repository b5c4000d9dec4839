"""int8 weight files (safetensors, no pickle): writing a module's int8 state and loading it back.

Kept apart from quant/folder.py (which quantizes whole pipelines and runs the quality gate) so the
model loaders (models/dit.py, models/text.py) can read a quantized folder without importing the
pipeline, the gate or the demo.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .int8 import quantize_int8, flatten_state_dict, unflatten_state_dict

DIT_WEIGHTS = "dit.int8.safetensors"
TEXT_DIR = "text_encoder"
TEXT_WEIGHTS = "model.int8.safetensors"


def save_int8(module: torch.nn.Module, file: Path) -> None:
    from safetensors.torch import save_file

    tensors, metadata = flatten_state_dict(module.state_dict())
    save_file(tensors, str(file), metadata=metadata)


def load_int8(module: torch.nn.Module, file: Path, dtype: torch.dtype) -> torch.nn.Module:
    """Make the layers recorded in ``file``'s layout int8 in ``module`` and assign every stored tensor."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = unflatten_state_dict(tensors, metadata, dtype)
    layers = [k.rsplit(".", 1)[0] for k in json.loads(metadata.get("int8_layout", "{}"))]
    module.to(dtype)
    quantize_int8(module, only=layers, weights=state)  # the same layers become int8, with the stored values
    module.load_state_dict(state, strict=True, assign=True)  # and everything else
    return module


def load_quantized_text_model(path: Path):
    """The Hugging Face encoder in ``path`` (config + model.int8.safetensors), in float32 as
    TextEncoder runs it."""
    from transformers import AutoConfig, AutoModel

    model = AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    return load_int8(model, Path(path) / TEXT_WEIGHTS, torch.float32).eval()
