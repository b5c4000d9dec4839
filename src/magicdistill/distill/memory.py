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


def apply_memory_options(cfg, scores, full: torch.nn.Module | None) -> None:
    """For a W2SMethod, before it copies an EMA or shards anything: checkpoint every transformer that trains or
    passes gradients, and under bf16 mixed precision store the frozen backbone in bf16 while everything that
    trains (the scores' LoRA or fake copy, a LoRA generator's adapter, a full generator ``full``) keeps float32.

    Several processes (FSDP2) keep exactly these semantics: ``fully_shard`` shards each tensor in the dtype it
    is stored in, so the frozen backbone's shards are bf16 and the trained tensors' shards (their AdamW states
    and EMA too) are float32 masters. A block's unit then holds bf16 frozen weights beside float32 LoRA
    weights; FSDP2 gathers such a unit in one byte-level all-gather, and only the trained tensors, all
    float32, need one dtype for the gradients' reduce-scatter (float32, as in one process). Rejected
    alternatives: FSDP2's ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` would keep float32
    shards of the frozen backbone (twice its bf16 memory) and hand norms and biases to autocast in bf16,
    which one process runs in float32; a unit of its own per adapted Linear's adapter would add two small
    collectives per adapter and layer for no numerical gain. Checkpointing composes with ``fully_shard`` as
    it is: each block's recomputation runs inside the backward pass of the block's FSDP unit, whose weights
    are gathered then (its pre-forward hook sees the recomputation and gathers only what is not gathered)."""
    roles = getattr(scores, "roles", None)
    transformers = [(t, roles) for t in experts(scores.backbone).values()]  # every expert (Wan 2.2 A14B: two)
    fake = getattr(scores, "fake", None)
    if fake is not None:
        transformers += [(t, None) for t in experts(fake).values()]
    if full is not None:
        transformers += [(t, None) for t in experts(full).values()]
    if cfg.checkpointing:
        for t, roles in transformers:
            enable_checkpointing(t, roles)
    if cfg.mixed_precision == "bf16":
        store_for_mixed_precision(scores, full)


def store_for_mixed_precision(scores, full: torch.nn.Module | None = None) -> None:
    """The frozen backbone in bf16; the scores' LoRA or fake copy, a LoRA generator's adapter and a full
    generator in float32."""
    for name, p in scores.backbone.named_parameters():
        if ".lora_" not in name:  # the frozen weights; every adapter trains (or is a LoRA generator)
            p.data = p.data.to(torch.bfloat16)
    generator_lora = getattr(scores, "generator_lora", None)
    trainable = scores.parameters() + (generator_lora.parameters() if generator_lora is not None else []) + \
        (list(full.parameters()) if full is not None else [])
    for p in trainable:
        p.data = p.data.float()


def autocast(cfg, device: torch.device | str):
    """bf16 autocast around a step when ``cfg.mixed_precision`` is "bf16"."""
    if cfg.mixed_precision != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
