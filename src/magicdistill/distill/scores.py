"""Where the real and fake scores of distribution matching live.

``SharedScores`` (MagicDistillation, the default): ONE frozen backbone with ONE LoRA; the real
score is the LoRA at alpha_weak, the fake score at alpha_strong, the frozen teacher at 0. Roles
switch the LoRA scale in place; no weights are copied.

``SeparateScores`` (DMD2 as published): a frozen real copy and a fully trainable fake copy of
the teacher. Kept as the memory baseline (benchmarks/distill_memory.py) and for users who want
the original recipe; alpha_weak has no meaning there (the real score is the teacher).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch

from ..config import DistillConfig
from ..models.dit import VideoDiT
from ..models.discriminator import FeatureTap
from ..models.lora import SharedLoRA

class SharedScores:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig):
        self.backbone = teacher.eval().requires_grad_(False)
        self.lora = SharedLoRA(self.backbone.transformer, rank=cfg.lora_rank)
        self._tap = FeatureTap(self.backbone.transformer, list(cfg.disc_layers))
        self._scale = {"real": cfg.alpha_weak, "fake": cfg.alpha_strong, "teacher": 0.0}

    @contextmanager
    def use(self, role: str) -> Iterator[VideoDiT]:
        with self.lora.scaled(self._scale[role]):
            yield self.backbone

    def tap(self, role: str) -> FeatureTap:
        return self._tap

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.lora.parameters()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"lora": _LoRAModule(self.lora)}


class SeparateScores:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig):
        self.backbone = teacher.eval().requires_grad_(False)  # the real score (and the teacher)
        self.fake = copy.deepcopy(teacher).train().requires_grad_(True)
        self._taps = {"fake": FeatureTap(self.fake.transformer, list(cfg.disc_layers)),
                      "teacher": FeatureTap(self.backbone.transformer, list(cfg.disc_layers))}

    @contextmanager
    def use(self, role: str) -> Iterator[VideoDiT]:
        yield self.fake if role == "fake" else self.backbone

    def tap(self, role: str) -> FeatureTap:
        return self._taps["fake" if role == "fake" else "teacher"]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.fake.parameters() if p.requires_grad]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"fake": self.fake}


def build_scores(teacher: VideoDiT, cfg: DistillConfig) -> SharedScores | SeparateScores:
    return SharedScores(teacher, cfg) if cfg.scores == "shared_lora" else SeparateScores(teacher, cfg)


class _LoRAModule(torch.nn.Module):
    """Adapts SharedLoRA to the module-state interface of checkpoints (only the LoRA tensors)."""

    def __init__(self, lora: SharedLoRA):
        super().__init__()
        self._lora = lora

    def state_dict(self, *args, **kwargs):
        return dict(self._lora.state_dict())

    def load_state_dict(self, sd, strict: bool = True):
        self._lora.load_state_dict(sd)
