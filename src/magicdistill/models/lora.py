"""One frozen backbone, one LoRA, several scores (MagicDistillation / W2SVD).

The real score is the backbone with the LoRA at alpha_weak (default 0.25), the fake score the same
weights with the LoRA at alpha_strong (1.0). Switching is in place (the LoRA layers' ``scaling``),
so no weight is ever copied. The LoRA's B matrices start at zero: all scores equal the base model
at step 0. Scale 0 reproduces the base model exactly (the LoRA term is multiplied by 0.0).

Only the scale attribute is touched; we never pass ``attention_kwargs={"scale": ...}`` (diffusers
would rescale and, for 0.0, reset the layers afterwards).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# projections to adapt, per backbone family (attention in and out; Hunyuan's text stream too)
LORA_TARGETS = {
    "HunyuanVideoTransformer3DModel": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                       "to_add_out"],
    "WanTransformer3DModel": ["to_q", "to_k", "to_v", "to_out.0"],
}


class SharedLoRA:
    """Adds one LoRA adapter to a frozen transformer and switches its scale per call."""

    def __init__(self, transformer: nn.Module, rank: int = 16, alpha: float | None = None,
                 targets: list[str] | None = None, adapter: str = "w2s"):
        from peft import LoraConfig
        from peft.tuners.lora import LoraLayer

        name = type(transformer).__name__
        targets = targets or LORA_TARGETS.get(name)
        if not targets:
            raise ValueError(f"no default LoRA targets for {name}; pass targets=[...]")
        transformer.requires_grad_(False)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets,
                                           init_lora_weights=True), adapter_name=adapter)
        self.transformer, self.adapter = transformer, adapter
        self.layers = [m for m in transformer.modules() if isinstance(m, LoraLayer) and adapter in m.scaling]
        if not self.layers:
            raise ValueError(f"LoRA targets {targets} matched no layer of {name}")
        self._scale = 1.0

    def parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.transformer.named_parameters() if f".{self.adapter}." in n or n.endswith(self.adapter)]

    def set_scale(self, scale: float) -> None:
        for layer in self.layers:
            layer.set_scale(self.adapter, scale)
        self._scale = scale

    @property
    def scale(self) -> float:
        return self._scale

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        previous = self._scale
        self.set_scale(scale)
        try:
            yield
        finally:
            self.set_scale(previous)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.transformer.named_parameters() if f".{self.adapter}." in n}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = dict(self.transformer.named_parameters())
        missing = set(self.state_dict()) - set(sd)
        if missing:
            raise ValueError(f"LoRA state is missing {len(missing)} tensors, e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for n, t in sd.items():
                params[n].copy_(t)
