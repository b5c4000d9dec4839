"""The DiT-feature discriminator (DMD2 / MagicDistillation): a small head on token features of the
backbone, captured by forward hooks after chosen blocks.

The paper reads features "after the final double block" of the LoRA'd fake DiT. Which backbone
pass feeds it (the fake score, or the frozen teacher = LoRA scale 0) and which blocks are
configurable [decision, method.md]. Block names: ``double:i`` (transformer_blocks[i]) and
``single:i`` (single_transformer_blocks[i]) for Hunyuan; ``block:i`` (blocks[i]) for Wan.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
from torch import nn


def resolve_blocks(transformer: nn.Module, names: list[str]) -> list[nn.Module]:
    groups = {"double": "transformer_blocks", "single": "single_transformer_blocks", "block": "blocks"}
    out = []
    for name in names:
        kind, _, idx = name.partition(":")
        attr = groups.get(kind)
        if attr is None or not hasattr(transformer, attr) or not idx.lstrip("-").isdigit():
            raise ValueError(f"unknown feature block {name!r}; use e.g. double:-1, single:0 or block:3")
        blocks = getattr(transformer, attr)
        i = int(idx)
        if not -len(blocks) <= i < len(blocks):
            raise ValueError(f"feature block {name!r} out of range ({len(blocks)} {kind} blocks)")
        out.append(blocks[i])
    return out


class FeatureTap:
    """Records the latent-stream token output (B, N, D) of given blocks during a forward pass: one feature map
    per name.

    ``transformer``: one, or a model's experts (Wan 2.2 A14B's two, alike): the blocks are tapped in each. A
    forward pass runs each row through the expert of its sigma, so a name's map is the rows of every expert
    that ran, grouped by expert (the head scores each row on its own, and the GAN losses average rows that
    all carry one label, so the grouping changes nothing). A pass run only for its collectives
    (``untapped``) is not recorded."""

    def __init__(self, transformer: nn.Module | dict[str, nn.Module], names: list[str]):
        parts = transformer.values() if isinstance(transformer, dict) else [transformer]
        self.blocks = [b for t in parts for b in resolve_blocks(t, names)]
        self.names = names
        self._raw: list[tuple[int, torch.Tensor]] = []
        self._active = False
        for i, b in enumerate(self.blocks):
            b.register_forward_hook(partial(self._hook, i % len(names)))

    def _hook(self, name: int, module, args, output):
        if self._active and not _UNTAPPED:
            self._raw.append((name, output[0] if isinstance(output, tuple) else output))

    @contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        captured: list[torch.Tensor] = []
        self._raw = []
        self._active = True
        try:
            yield captured
        finally:
            # the caller keeps ``captured``; the tap lets go, so these features (and their autograd
            # graph) are freed with the caller's last reference, not kept alive until the next capture
            self._active = False
            for i in range(len(self.names)):
                maps = [t for j, t in self._raw if j == i]
                if maps:
                    captured.append(maps[0] if len(maps) == 1 else torch.cat(maps))
            self._raw = []


_UNTAPPED: list[bool] = []


@contextmanager
def untapped() -> Iterator[None]:
    """A forward pass whose output is discarded (models/families/base.py: a sharded expert run for its
    collectives alone): no feature tap records it."""
    _UNTAPPED.append(True)
    try:
        yield
    finally:
        _UNTAPPED.pop()


class DiscriminatorHead(nn.Module):
    """Per tapped block: LayerNorm -> Linear -> SiLU -> Linear(1), averaged over tokens; summed."""

    def __init__(self, dim: int, n_layers: int = 1, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))
            for _ in range(n_layers))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} feature maps, got {len(features)}")
        return sum(h(f.float()).mean(dim=(1, 2)) for h, f in zip(self.heads, features))
