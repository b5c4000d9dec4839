"""Where the real and fake scores of distribution matching live.

``SharedScores`` (MagicDistillation, the default): ONE frozen backbone with ONE LoRA; the real
score is the LoRA at alpha_weak, the fake score at alpha_strong, the frozen teacher at 0. Roles
switch the LoRA scale in place; no weights are copied.

``SeparateScores`` (DMD2 as published): a frozen real copy and a fully trainable fake copy of
the teacher. Kept as the memory baseline (benchmarks/distill_memory.py) and for users who want
the original recipe; alpha_weak has no meaning there (the real score is the teacher).

A model with two experts (Wan 2.2 A14B) has every adapter and feature tap on both: each forward pass runs
the expert of its sigma, with that expert's share of the adapter.

With ``generator="lora"`` the generator is one more adapter on the frozen backbone (``LoRAGenerator``):
role "generator" = that adapter alone at scale 1; every score role switches it off. Each role runs
only its own adapter, so a backward pass can only reach that role's weights.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from ..config import DistillConfig
from ..models.dit import VideoDiT
from ..models.discriminator import FeatureTap
from ..models.experts import experts
from ..models.lora import AdapterRoles, AdapterWeights, SharedLoRA, lora_targets

class SharedScores:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig):
        self.backbone = teacher.eval().requires_grad_(False)
        self.lora = SharedLoRA(experts(self.backbone), rank=cfg.lora_rank,
                               targets=lora_targets(self.backbone.transformer, cfg.lora_targets))
        self._tap = FeatureTap(experts(self.backbone), list(cfg.disc_layers))
        self.generator_lora = _generator_adapter(self.backbone, cfg)
        # per role: (score LoRA scale, generator adapter scale); 0 switches the adapter off
        roles = {"real": (cfg.alpha_weak, 0.0), "fake": (cfg.alpha_strong, 0.0), "teacher": (0.0, 0.0),
                 "generator": (0.0, 1.0)}
        if self.generator_lora is None:
            self.roles = AdapterRoles([self.lora], {r: s[:1] for r, s in roles.items() if r != "generator"})
        else:
            self.roles = AdapterRoles([self.lora, self.generator_lora], roles)

    @contextmanager
    def use(self, role: str) -> Iterator[VideoDiT]:
        with self.roles.use(role):
            yield self.backbone

    def tap(self, role: str) -> FeatureTap:
        return self._tap

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.lora.parameters()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"lora": AdapterWeights(self.lora)}


class SeparateScores:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig):
        self.backbone = teacher.eval().requires_grad_(False)  # the real score (and the teacher)
        self.fake = copy.deepcopy(teacher).train().requires_grad_(True)
        self._taps = {"fake": FeatureTap(experts(self.fake), list(cfg.disc_layers)),
                      "teacher": FeatureTap(experts(self.backbone), list(cfg.disc_layers))}
        # generator="lora": the generator adapter sits on the frozen real copy (off for real/teacher)
        self.generator_lora = _generator_adapter(self.backbone, cfg)
        self.roles = None if self.generator_lora is None else AdapterRoles(
            [self.generator_lora], {"real": (0.0,), "teacher": (0.0,), "generator": (1.0,)})

    @contextmanager
    def use(self, role: str) -> Iterator[VideoDiT]:
        if role == "fake":
            yield self.fake
            return
        with self.roles.use(role) if self.roles else nullcontext():
            yield self.backbone

    def tap(self, role: str) -> FeatureTap:
        return self._taps["fake" if role == "fake" else "teacher"]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.fake.parameters() if p.requires_grad]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"fake": self.fake}


def build_scores(teacher: VideoDiT, cfg: DistillConfig) -> SharedScores | SeparateScores:
    return SharedScores(teacher, cfg) if cfg.scores == "shared_lora" else SeparateScores(teacher, cfg)


def _generator_adapter(backbone: VideoDiT, cfg: DistillConfig) -> SharedLoRA | None:
    if cfg.generator != "lora":
        return None
    lora = SharedLoRA(experts(backbone), rank=cfg.generator_lora_rank, adapter="generator",
                      targets=lora_targets(backbone.transformer, cfg.lora_targets))
    lora.set_scale(0.0)  # outside its role the backbone is not the generator
    return lora


class LoRAGenerator:
    """``generator="lora"``: the generator G = frozen backbone + its own adapter (zero-init, so G equals
    the teacher at step 0). Called like a VideoDiT; ``weights`` (the adapter's tensors) is what the
    generator optimizer, its EMA and checkpoints hold. The image tokens come from the frozen
    teacher's vision encoder (a full generator fine-tunes its own)."""

    def __init__(self, scores: SharedScores | SeparateScores):
        assert scores.generator_lora is not None, "build the scores with generator='lora'"
        self.scores, self.lora = scores, scores.generator_lora
        self.weights = AdapterWeights(self.lora)

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor, cond, **kw) -> torch.Tensor:
        with self.scores.use("generator") as model:
            return model(x_t, sigma, cond, **kw)

    def condition(self, *args, **kwargs):
        return self.scores.backbone.condition(*args, **kwargs)

    def parameters(self):
        return self.weights.parameters()

    @contextmanager
    def model(self, weights: torch.nn.Module | None = None) -> Iterator[VideoDiT]:
        """The backbone in the generator role as a plain VideoDiT (samplers, ``merged``), optionally
        with other adapter weights (the EMA's ``AdapterWeights``) swapped in for the duration."""
        with self.lora.loaded(weights.state_dict()) if weights is not None else nullcontext(), \
                self.scores.use("generator") as model:
            yield model
