"""Latent consistency distillation (LCM), the MagicDistillation paper's LCM baseline.

Consistency function f(x, s) = x - s * v_student(x, s) (the x0 prediction; f(x, 0) = x holds by
construction). On the teacher's N-step shifted grid s_0 = 1 > ... > s_N = 0, pick n, noise data to
s_n, take one teacher Euler step with CFG to s_{n+1}, and match
  || f_student(x_{s_n}, s_n) - sg(f_target(x_{s_{n+1}}, s_{n+1})) ||^2,
with the EMA student as the target network. Sampling is multistep consistency sampling
(``sampling.consistency_sample``) over the few-step schedule.
"""

from __future__ import annotations

import torch

from ..config import DistillConfig
from ..flow import add_noise, euler_step, sigma_schedule, x0_from_v
from ..models.dit import VideoDiT
from ..sampling import guided_velocity
from . import losses
from .student_copy import StudentCopyMethod
from .w2s import DistillBatch, keep_first_frame


class LCMMethod(StudentCopyMethod):
    """The student is also the consistency function; its EMA is the target network."""

    def __init__(self, teacher: VideoDiT, cfg: DistillConfig, *, sharder=None, rows: slice | None = None):
        super().__init__(teacher, cfg, sharder=sharder, rows=rows)
        self.grid = sigma_schedule(cfg.lcm_teacher_steps, cfg.shift)

    def step(self, batch: DistillBatch, it: int, g: torch.Generator) -> dict[str, float]:
        cfg, device = self.cfg, batch.x_gt.device
        b = batch.x_gt.shape[0]
        n = self._draw(lambda shape, generator: torch.randint(cfg.lcm_teacher_steps, shape, generator=generator),
                       (b,), g)
        s_hi, s_lo = self.grid[n].to(device), self.grid[n + 1].to(device)
        x_hi = add_noise(batch.x_gt, self._draw(torch.randn, tuple(batch.x_gt.shape), g).to(device), s_hi)
        with torch.no_grad():
            cond, uncond = self.teacher.conditions(batch.text, batch.null_text, batch.image, batch.image_latent)
            x_lo = euler_step(x_hi, guided_velocity(self.teacher, x_hi, s_hi, cond, uncond, cfg.lcm_guidance), s_hi, s_lo)
            t_cond = self.ema.shadow.condition(batch.text, batch.image, batch.image_latent)
            target = keep_first_frame(x0_from_v(x_lo, self.ema.shadow(x_lo, s_lo, t_cond), s_lo), batch.image_latent)
        self._reshard(self.teacher, self.ema.shadow)
        s_cond = self.generator.condition(batch.text, batch.image, batch.image_latent)
        pred = keep_first_frame(x0_from_v(x_hi, self.generator(x_hi, s_hi, s_cond), s_hi), batch.image_latent)
        loss = losses.consistency_loss(pred, target)
        return self._update(loss, {"loss_lcm": loss.item()})
