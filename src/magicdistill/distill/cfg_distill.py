"""CFG distillation (Magic 1-For-1 section 3.1, eq. 6-9): the guidance scale becomes a model input.

The student is a copy of the teacher with a guidance embedder (HunyuanVideo's own
``guidance_embeds`` path: a timestep-style embedding of w added to the time embedding). Its last
projection starts at zero, so the student is exactly the teacher at step 0. Training:
  L = lambda_cfg * || v_hat(x, s, w, c) - v_s(x, s, w, c) ||^2 + L_base,  w ~ U[w_min, w_max],
with v_hat = v_u + w (v_c - v_u) the teacher's CFG output and L_base the flow-matching loss of the
student at w = 1 (where CFG is the conditional output).

A transformer with no slot for a guidance embedding that diffusers would load (Wan's
``WanTransformer3DModel``) is distilled at one fixed scale instead, the teacher's guidance
(``real_guidance``): L = lambda_cfg * || v_hat(x, s, w, c) - v_s(x, s, c) ||^2, no L_base (a student
without the input cannot also be the w = 1 model); it then samples with guidance 1 (one forward per
step) and saves as a plain transformer of the teacher's class. A guidance-embedded teacher
(HunyuanVideo T2V) is refused before this module is reached: it has no CFG pair to distil.
"""

from __future__ import annotations

import torch

from ..config import DistillConfig
from ..flow import add_noise, sample_training_sigma
from ..models.dit import VideoDiT
from ..sampling import guided_velocity
from . import losses
from .student_copy import StudentCopyMethod
from .w2s import DistillBatch, with_teacher_guidance


def add_guidance_input(dit: VideoDiT) -> VideoDiT:
    """Give a (Hunyuan) DiT a guidance-scale input whose projection is zero: outputs are unchanged."""
    from diffusers.models.embeddings import TimestepEmbedding

    t = dit.transformer
    if t.config.guidance_embeds:
        raise ValueError("the model already takes a guidance input")
    emb = t.time_text_embed
    dim = emb.timestep_embedder.linear_2.out_features
    ref = emb.timestep_embedder.linear_1.weight
    guidance = TimestepEmbedding(in_channels=256, time_embed_dim=dim).to(ref.device, ref.dtype)
    with torch.no_grad():
        guidance.linear_2.weight.zero_()
        guidance.linear_2.bias.zero_()
    emb.guidance_embedder = guidance
    t.register_to_config(guidance_embeds=True)
    return dit


def takes_guidance_input(dit) -> bool:
    """Whether a guidance embedder can be added: HunyuanVideo's transformer has the slot (the tiny default
    is one); a real family's other transformers (Wan) have none."""
    family = getattr(dit, "family", None)  # RealDiT (models/families/); the tiny VideoDiT has none
    return family is None or family.name == "hunyuan"


class CFGDistillMethod(StudentCopyMethod):
    def __init__(self, teacher: VideoDiT, cfg: DistillConfig, *, sharder=None, rows: slice | None = None):
        if cfg.cfg_min > cfg.cfg_max:
            raise ValueError(f"cfg_min ({cfg.cfg_min}) must not exceed cfg_max ({cfg.cfg_max})")
        if getattr(teacher, "guidance_embeds", False):
            raise ValueError("the teacher is guidance-distilled already (its scale is an input): no CFG pair to distil")
        # no guidance input possible: distil the teacher's CFG at its own scale (module docstring)
        self.fixed_guidance = None if takes_guidance_input(teacher) else \
            float(with_teacher_guidance(cfg, getattr(teacher, "meta", {})).real_guidance)
        super().__init__(teacher, cfg, sharder=sharder, rows=rows)

    def student_of(self, model: VideoDiT) -> VideoDiT:
        return model if self.fixed_guidance is not None else add_guidance_input(model)

    def step(self, batch: DistillBatch, it: int, g: torch.Generator) -> dict[str, float]:
        cfg, device = self.cfg, batch.x_gt.device
        b = batch.x_gt.shape[0]
        with torch.no_grad():
            cond, uncond = self.teacher.conditions(batch.text, batch.null_text, batch.image, batch.image_latent)
        s_cond = self.generator.condition(batch.text, batch.image, batch.image_latent)
        # L_cfg at a random guidance scale (or the fixed one)
        w = (self._draw(torch.rand, (b,), g) * (cfg.cfg_max - cfg.cfg_min) + cfg.cfg_min).to(device)
        if self.fixed_guidance is not None:
            w = torch.full((b,), self.fixed_guidance, device=device)
        sigma = self._sigma(b, g).to(device)
        eps = self._draw(torch.randn, tuple(batch.x_gt.shape), g).to(device)
        x_t = add_noise(batch.x_gt, eps, sigma)
        with torch.no_grad():
            v_hat = guided_velocity(self.teacher, x_t, sigma, cond, uncond, w)
        self._reshard(self.teacher)
        loss_cfg = losses.cfg_distill_loss(self.generator(x_t, sigma, s_cond, guidance=w), v_hat)
        if self.fixed_guidance is not None:
            return self._update(cfg.lambda_cfg * loss_cfg, {"loss_cfg": loss_cfg.item()})
        # L_base at w = 1
        sigma2 = self._sigma(b, g).to(device)
        eps2 = self._draw(torch.randn, tuple(batch.x_gt.shape), g).to(device)
        v_base = self.generator(add_noise(batch.x_gt, eps2, sigma2), sigma2, s_cond, guidance=torch.ones(b, device=device))
        loss_base = losses.flow_matching_loss(v_base, batch.x_gt, eps2)
        return self._update(cfg.lambda_cfg * loss_cfg + loss_base,
                            {"loss_cfg": loss_cfg.item(), "loss_base": loss_base.item()})

    def _sigma(self, b: int, g: torch.Generator) -> torch.Tensor:
        """Training sigmas (logit-normal, shifted) for this process's rows."""
        return self._draw(lambda shape, generator: sample_training_sigma(shape[0], generator=generator,
                                                                         shift=self.cfg.shift), (b,), g)
