"""CFG distillation (guidance as an input) and LCM on a tiny model."""

import torch

from magicdistill.config import DistillConfig
from magicdistill.distill.cfg_distill import CFGDistillMethod, add_guidance_input
from magicdistill.distill.lcm import LCMMethod
from magicdistill.flow import sigma_schedule
from magicdistill.models.dit import Condition, VideoDiT
from magicdistill.sampling import consistency_sample

from toys import toy_batch


def _teacher(cfg):
    torch.manual_seed(0)
    return VideoDiT.tiny(cfg, "i2v").eval()


def test_guidance_input_starts_as_the_teacher(tiny_dit_cfg):
    teacher = _teacher(tiny_dit_cfg)
    batch = toy_batch(tiny_dit_cfg)
    cond = teacher.condition(batch.text, batch.image, batch.image_latent)
    s = torch.tensor([0.6, 0.2])
    with torch.no_grad():
        ref = teacher(batch.x_gt, s, cond)
        add_guidance_input(teacher)
        assert teacher.transformer.config.guidance_embeds
        for w in (1.0, 4.0, 8.0):
            torch.testing.assert_close(teacher(batch.x_gt, s, cond, guidance=torch.tensor([w, w])), ref)


def test_cfg_distill_step_trains_only_the_student(tiny_dit_cfg):
    teacher = _teacher(tiny_dit_cfg)
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = CFGDistillMethod(teacher, DistillConfig(method="cfg", lr_generator=1e-3))
    batch = toy_batch(tiny_dit_cfg)
    total = lambda r: m.cfg.lambda_cfg * r["loss_cfg"] + r["loss_base"]  # noqa: E731  the objective (eq. 8)
    first = m.step(batch, 0, torch.Generator().manual_seed(0))
    for _ in range(15):
        last = m.step(batch, 1, torch.Generator().manual_seed(0))
    assert total(last) < 0.8 * total(first), (first, last)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in snapshot.items())
    assert all(p.grad is None for p in teacher.parameters())


def test_lcm_step_and_consistency_sampler(tiny_dit_cfg):
    teacher = _teacher(tiny_dit_cfg)
    m = LCMMethod(teacher, DistillConfig(method="lcm", lcm_teacher_steps=8))
    metrics = m.step(toy_batch(tiny_dit_cfg), 0, torch.Generator().manual_seed(0))
    assert metrics["loss_lcm"] > 0 and metrics["grad_norm_generator"] > 0
    # a perfect x0 predictor makes the consistency sampler land exactly on x0
    x0 = torch.randn(2, 3, 4)
    perfect = lambda x, s, c: (x - x0) / s.view(-1, 1, 1)  # noqa: E731
    dummy = Condition(torch.zeros(2, 1, 1), torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, 1), None)
    out = consistency_sample(perfect, torch.randn(2, 3, 4), dummy, sigmas=sigma_schedule(4), generator=torch.Generator())
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
