"""Memory options of a distillation run (docs/SCALING.md): activation checkpointing per transformer block,
and bf16 autocast with float32 master weights for what trains.

Checkpointing and adapter roles: the scores switch LoRA scales in place (distill/scores.py), and a
role's backward pass runs after its context has exited. A recomputed block must see the role of its
forward pass, not the one current at backward time, so the checkpoint function records the adapter
state at forward time and re-applies it around the recomputation.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.utils.checkpoint import checkpoint

from ..models.experts import experts
from ..models.lora import AdapterRoles


def enable_checkpointing(transformer: torch.nn.Module, roles: AdapterRoles | None = None) -> None:
    """Recompute each transformer block in the backward pass (diffusers' per-block checkpointing),
    under the adapter scales of its forward pass."""

    def run_block(block, *args):
        if roles is None:
            return checkpoint(block, *args, use_reentrant=False)
        state = roles.current

        def under_forward_role(*a):
            previous = roles.current
            if previous != state:
                roles.apply(state)
            try:
                return block(*a)
            finally:
                if previous != state:
                    roles.apply(previous)

        return checkpoint(under_forward_role, *args, use_reentrant=False)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=run_block)


def apply_memory_options(method) -> None:
    """For a W2SMethod: checkpoint every transformer that trains or passes gradients, and under bf16
    mixed precision store the frozen backbone in bf16 (what trains stays float32)."""
    cfg = method.cfg
    roles = getattr(method.scores, "roles", None)
    transformers = [(t, roles) for t in experts(method.backbone).values()]  # every expert (Wan 2.2 A14B: two)
    fake = getattr(method.scores, "fake", None)
    if fake is not None:
        transformers += [(t, None) for t in experts(fake).values()]
    if isinstance(method.generator, torch.nn.Module):  # a full generator copy
        transformers += [(t, None) for t in experts(method.generator).values()]
    if cfg.checkpointing:
        for t, roles in transformers:
            enable_checkpointing(t, roles)
    if cfg.mixed_precision == "bf16":
        for name, p in method.backbone.named_parameters():
            if ".lora_" not in name:  # the frozen weights; every adapter trains (or is a LoRA generator)
                p.data = p.data.to(torch.bfloat16)
        trainable = [p for p in method.fake_params] + list(method.generator.parameters())
        for p in trainable:
            p.data = p.data.float()


def autocast(cfg, device: torch.device | str):
    """bf16 autocast around a step when ``cfg.mixed_precision`` is "bf16"."""
    if cfg.mixed_precision != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
