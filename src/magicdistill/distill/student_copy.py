"""What LCM and CFG distillation share: a trainable copy of the frozen teacher (the student), its EMA and one
AdamW over the student, in one process or sharded over the N processes of ``torchrun``.

Sharded (``sharder``, models/parallelize.py), the teacher, the student and the EMA copy are each split over
the processes, and each process trains on its ``rows`` of the global batch with the noise one process would
draw for them (``train.distributed.draw_rows``), so N processes follow one.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch

from ..config import DistillConfig
from ..models.dit import VideoDiT
from ..models.parallelize import reshard
from ..train.distributed import draw_rows
from ..train.ema import EMA
from .w2s import with_teacher_guidance


class StudentCopyMethod:
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig, *, sharder=None, rows: slice | None = None):
        """``rows``: this process's rows of the global batch (``cfg.batch_size``); None: all of them."""
        self.cfg = cfg = with_teacher_guidance(cfg, getattr(teacher, "meta", {}))
        self.teacher = teacher.eval().requires_grad_(False)
        self.rows = rows
        self.sharded = sharder is not None
        self.generator = self.student_of(copy.deepcopy(teacher)).train().requires_grad_(True)
        self.ema = EMA(self.generator, cfg.ema_decay)  # copied before sharding (a sharded module is not copied)
        if sharder is not None:
            for model in (self.teacher, self.generator, self.ema.shadow):
                sharder.model(model)
        self.opt = torch.optim.AdamW(self.generator.parameters(), lr=cfg.lr_generator, weight_decay=0.0)

    def student_of(self, model: VideoDiT) -> VideoDiT:
        """The student's form of a teacher-shaped model (in place): also how a fresh copy of the teacher takes
        the gathered EMA weights of a sharded run."""
        return model

    def _draw(self, sample, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        """``sample`` (torch.rand / torch.randn / ...) for this process's rows of the global batch."""
        return draw_rows(sample, shape, g, self.rows, self.cfg.batch_size)

    def _reshard(self, *models: VideoDiT) -> None:
        """A forward without backward leaves a sharded model's root unit gathered: back into shards (memory; and
        the EMA's update must write into its shards, not into a gathered copy)."""
        if self.sharded:
            for model in models:
                reshard(model)

    def _update(self, loss: torch.Tensor, metrics: dict[str, float]) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # sharded: the gradients are averaged over the processes (a data-parallel mean)
        gnorm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.cfg.grad_clip).item()
        self.opt.step()
        self.ema.update(self.generator)
        return {**metrics, "grad_norm_generator": gnorm}

    @contextmanager
    def ema_generator(self) -> Iterator[VideoDiT]:
        """The EMA student (to sample; to save)."""
        try:
            yield self.ema.shadow
        finally:
            self._reshard(self.ema.shadow)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "ema": self.ema.shadow}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt}
