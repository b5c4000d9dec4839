"""A model's transformers ("experts"): one for most families, two for Wan 2.2 A14B (``transformer`` runs at
high noise, ``transformer_2`` below its boundary). What adapts, taps, shards or checkpoints a model's
weights goes through every expert, so a second expert is never left out.

    experts(model) -> {"transformer": ..., "transformer_2": ...}   the experts a model has, in order
    prefix(name) -> str   how an expert's tensor names are keyed beside the first's ("" / "transformer_2.")
"""

from __future__ import annotations

from torch import nn

EXPERTS = ("transformer", "transformer_2")


def experts(model: nn.Module) -> dict[str, nn.Module]:
    return {name: getattr(model, name) for name in EXPERTS if getattr(model, name, None) is not None}


def prefix(name: str) -> str:
    """The first expert's names stay as they are (one-expert models and their checkpoints are unchanged)."""
    return "" if name == EXPERTS[0] else f"{name}."
