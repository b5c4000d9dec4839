"""int8 weight-only quantization (Magic 1-For-1 section 4.3 used optimum-quanto; we use torchao).

Weights are stored as int8 with one scale per output row (symmetric, torchao ``Int8Tensor``);
activations stay in the compute dtype: each layer dequantizes its weight to the input's dtype and
runs the ordinary matmul / convolution. So the saving is memory (weights ~1/2 of bf16), not
arithmetic: on CPU it is not faster (environment.md).

Which layers: every ``nn.Linear`` (through torchao's ``quantize_``), every zero-padded
``nn.Conv2d``/``nn.Conv3d`` and every ``nn.Embedding`` with at least ``MIN_WEIGHTS`` weights
(torchao's Int8Tensor has no convolution or lookup kernel, so ``Int8Conv`` / ``Int8Embedding``
hold the same torchao tensor and dequantize per call -- for a lookup, only the rows looked up).
Kept in the compute dtype, by name (``KEEP``): the DiT's latent patch embedding (``x_embedder``;
Wan: ``patch_embedding``) and output projection (``proj_out``), where errors enter and leave the
network and an 8-bit error is felt by every token; and layers under ``MIN_WEIGHTS`` weights (the
vision encoder's 3-channel first conv). Both are a negligible share of the bytes (28 k of a one-token
tiny DiT's 3.1 M weights; at HunyuanVideo scale well under 0.1 %). A *wide* patch embedding
(``DiTConfig.embed_tokens`` > 1, kernel larger than its stride) is quantized: it is 25 times the
size at 5 tokens (12 % of the shipped teacher's weights; kept, the DiT would be 0.71x its bf16 bytes
against the 0.55x target). It costs the quality gate about 10 dB of its PSNR headroom, measured on the
stop-11 generator (threshold 40 dB; the current figures: docs/QUANTIZATION.md).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

SCHEME = "int8_weight_only"
MIN_WEIGHTS = 4096  # layers with fewer weights stay in the compute dtype (see module docstring)
KEEP = ("x_embedder", "patch_embedding", "proj_out")  # the model's own (outside its numbered blocks)
QUANTIZE_CHOICES = (SCHEME.split("_")[0],)  # the values `--quantize` accepts: ("int8",)


def check_quantize(value: str | None) -> None:
    """Validates ``--quantize`` before anything is loaded."""
    if value is not None and value not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {value!r}")


def _int8_tensor_cls():
    from torchao.quantization import Int8Tensor

    return Int8Tensor


def is_int8(t: torch.Tensor) -> bool:
    return isinstance(t, _int8_tensor_cls())


class Int8Conv(nn.Module):
    """A zero-padded Conv2d/Conv3d whose weight is a per-output-channel torchao Int8Tensor of the
    flattened (out, in*k...) kernel, dequantized to the input's dtype at each call. Its state-dict
    keys (``weight``, ``bias``) are the conv's, so a saved folder loads into the same paths."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, weight: torch.Tensor | None = None):
        """``weight``: an already quantized (out, in*k...) Int8Tensor (a saved folder's) instead of
        quantizing ``conv.weight``."""
        super().__init__()
        from torchao.quantization import PerRow

        self.kernel_shape = tuple(conv.weight.shape)
        self.kernel_size = tuple(conv.kernel_size)  # read by models/patch_embed.embed_tokens
        self.conv_fn = F.conv3d if isinstance(conv, nn.Conv3d) else F.conv2d
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        w = _int8_tensor_cls().from_hp(conv.weight.detach().flatten(1), PerRow()) if weight is None else weight
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.dequantize().to(x.dtype).reshape(self.kernel_shape)
        return self.conv_fn(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Int8Embedding(nn.Module):
    """An embedding table as a per-row torchao Int8Tensor; a lookup dequantizes only its rows.
    (Inference only: max_norm / sparse options of nn.Embedding are not supported.)"""

    def __init__(self, emb: nn.Embedding, weight: torch.Tensor | None = None):
        super().__init__()
        from torchao.quantization import PerRow

        if emb.max_norm is not None:
            raise ValueError("Int8Embedding does not support max_norm")
        w = _int8_tensor_cls().from_hp(emb.weight.detach(), PerRow()) if weight is None else weight
        self.weight = nn.Parameter(w, requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.weight
        q = F.embedding(ids, w.qdata).float()
        if w.zero_point is not None:
            q = q - F.embedding(ids, w.zero_point).float()
        return (q * F.embedding(ids, w.scale).float()).to(w.dtype)


def _is_input_or_output_layer(name: str) -> bool:
    """transformer.x_embedder.proj and transformer.proj_out, not single_transformer_blocks.0.proj_out."""
    parts = name.split(".")
    return any(p in KEEP for p in parts) and not any(p.isdigit() for p in parts)


def _kept(name: str, module: nn.Module) -> bool:
    """An input or output layer stays in the compute dtype, unless it is a wide patch embedding."""
    if not _is_input_or_output_layer(name):
        return False
    wide = isinstance(module, (nn.Conv2d, nn.Conv3d)) and tuple(module.kernel_size) != tuple(module.stride)
    return not wide


def _quantizable(name: str, module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    if w is None or is_int8(w) or w.numel() < MIN_WEIGHTS or _kept(name, module):
        return False
    if isinstance(module, (nn.Linear, nn.Embedding)):
        return True
    return isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros"


def quantize_int8(model: nn.Module, only: list[str] | None = None,
                  weights: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Quantize ``model`` in place (int8 weights, compute-dtype activations); returns the names of
    the quantized layers. Layers already int8 are left alone, so calling it twice is harmless.
    Rebuilding a saved folder: ``only`` = exactly these layers, whatever their size, and
    ``weights`` = their stored Int8Tensors by state-dict key (nothing is quantized then)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    if only is None:
        names = [n for n, m in model.named_modules() if _quantizable(n, m)]
    else:
        names = [n for n in only if not is_int8(model.get_submodule(n).weight)]
    linear = []
    for n in names:
        m = model.get_submodule(n)
        w = None if weights is None else weights[f"{n}.weight"]
        if isinstance(m, nn.Linear):
            if w is None:
                linear.append(n)
            else:
                m.weight = nn.Parameter(w, requires_grad=False)
            continue
        parent, _, attr = n.rpartition(".")
        wrapper = Int8Embedding(m, w) if isinstance(m, nn.Embedding) else Int8Conv(m, w)
        setattr(model.get_submodule(parent), attr, wrapper)
    if linear:
        selected = set(linear)
        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in selected)
    return names


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters as stored: an int8 weight counts its int8 data, its scales and its
    zero points; every other parameter its elements times its element size."""
    total = 0
    for p in model.parameters():
        if is_int8(p):
            names, _ = p.__tensor_flatten__()
            total += sum(getattr(p, n).numel() * getattr(p, n).element_size() for n in names)
        else:
            total += p.numel() * p.element_size()
    return total


def bf16_bytes(model: nn.Module) -> int:
    """The same parameters' bytes in bfloat16 (the reference of the issue's 0.55x target)."""
    total = 0
    for p in model.parameters():
        total += (p.shape.numel() if not is_int8(p) else p.qdata.numel()) * 2
    return total


# --- flat (safetensors) form ----------------------------------------------------------------------
# safetensors holds plain tensors only: an Int8Tensor is stored as its components ``NAME::qdata``,
# ``NAME::scale``, ... and its non-tensor attributes in the file's metadata, so loading needs no
# pickle (and so can run no code).
SEP = "::"


def flatten_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, layout = {}, {}
    for k, v in state.items():
        if is_int8(v):
            names, attrs = v.__tensor_flatten__()
            for n in names:
                tensors[f"{k}{SEP}{n}"] = getattr(v, n).contiguous()
            layout[k] = {"block_size": list(attrs["block_size"]), "shape": list(v.shape),
                         "reduce_range": bool(attrs.get("reduce_range", False))}
            if attrs.get("act_quant_kwargs") is not None:
                raise ValueError(f"{k}: only weight-only int8 can be saved (activation quantization found)")
        else:
            tensors[k] = v.contiguous()
    return tensors, {"int8_layout": json.dumps(layout)}


def unflatten_state_dict(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                         dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Inverse of ``flatten_state_dict``; int8 weights dequantize to ``dtype`` (the compute dtype),
    other floating tensors are cast to it."""
    Int8Tensor = _int8_tensor_cls()
    layout = json.loads(metadata.get("int8_layout", "{}"))
    out = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items() if SEP not in k}
    components: dict[str, dict[str, torch.Tensor]] = {}
    for n, v in tensors.items():
        if SEP in n:
            k, part = n.split(SEP, 1)
            components.setdefault(k, {})[part] = v
    for k, attrs in layout.items():
        parts = components[k]
        out[k] = Int8Tensor(parts.pop("qdata"), parts.pop("scale"), attrs["block_size"], dtype,
                            reduce_range=attrs["reduce_range"], **parts)
    return out
