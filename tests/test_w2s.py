"""W2S / DMD2 iteration on a tiny model: who gets gradients, the 5:1 schedule, scores agree at step 0."""

import torch

from magicdistill.config import DistillConfig
from magicdistill.distill.w2s import W2SMethod
from magicdistill.models.dit import VideoDiT
from toys import toy_batch


def _method(cfg_dit, **kw):
    torch.manual_seed(0)
    teacher = VideoDiT.tiny(cfg_dit, "i2v")
    cfg = DistillConfig(lora_rank=4, batch_size=2, **kw)
    return W2SMethod(teacher, cfg)




def _grads(params):
    return [p.grad is not None and p.grad.abs().sum() > 0 for p in params]


def test_fake_turn_updates_only_lora_and_head(tiny_dit_cfg):
    m = _method(tiny_dit_cfg)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(1)
    cond, _ = m.conditions(batch)
    x_gen = m.generate(batch, g, grad=False)
    m.fake_update(batch, x_gen, cond, g)
    assert all(p.grad is None for p in m.generator.parameters())
    lora_b = [p for n, p in m.backbone.transformer.named_parameters() if "lora_B" in n]
    assert lora_b and all(_grads(lora_b))
    assert all(_grads(m.head.parameters()))
    lora_ids = {id(p) for p in m.lora.parameters()}
    assert all(p.grad is None for p in m.backbone.parameters() if id(p) not in lora_ids)


def test_generator_turn_updates_only_generator(tiny_dit_cfg):
    m = _method(tiny_dit_cfg)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(2)
    cond, uncond = m.conditions(batch)
    before = [p.detach().clone() for p in m.generator.parameters()]
    x_gen = m.generate(batch, g, grad=True)
    metrics = m.generator_update(batch, x_gen, cond, uncond, g)
    assert any(_grads(m.generator.parameters()))
    assert all(p.grad is None for p in m.fake_params)
    assert all(p.grad is None for p in m.backbone.parameters())
    assert any((a - b).abs().sum() > 0 for a, b in zip(before, m.generator.parameters()))
    assert {"loss_dmd", "dmd_normaliser", "loss_g_adv", "grad_norm_generator"} <= set(metrics)
    assert metrics["dmd_normaliser"] > 0


def test_real_and_fake_scores_agree_at_step_zero_so_dmd_is_zero(tiny_dit_cfg):
    # LoRA B = 0: alpha_weak and alpha_strong scores coincide; without CFG the DMD gradient is exactly 0
    m = _method(tiny_dit_cfg, real_guidance=1.0, lambda_adv=0.0)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(3)
    cond, uncond = m.conditions(batch)
    x_gen = m.generate(batch, g, grad=True)
    metrics = m.generator_update(batch, x_gen, cond, uncond, g)
    assert metrics["loss_dmd"] == 0.0


def test_schedule_five_fake_updates_per_generator_update(tiny_dit_cfg):
    m = _method(tiny_dit_cfg)
    turns = [m.generator_turn(i) for i in range(10)]
    assert turns == [True, False, False, False, False, True, False, False, False, False]


def test_first_latent_frame_is_the_image(tiny_dit_cfg):
    m = _method(tiny_dit_cfg, input_mode="backward_simulation")
    batch = toy_batch(tiny_dit_cfg)
    x_gen = m.generate(batch, torch.Generator().manual_seed(0), grad=False)
    torch.testing.assert_close(x_gen[:, :, :1], batch.image_latent)


def test_separate_scores_train_the_full_fake_copy_only(tiny_dit_cfg):
    """DMD2 as published (the memory baseline): the fake turn trains the fake copy and the head;
    the frozen real copy gets no gradient."""
    m, batch = _method(tiny_dit_cfg, scores="separate", alpha_weak=0.0), toy_batch(tiny_dit_cfg)
    cond, _ = m.conditions(batch)
    x_gen = m.generate(batch, torch.Generator().manual_seed(0), grad=False)
    m.fake_update(batch, x_gen, cond, torch.Generator().manual_seed(1))
    fake = m.scores.fake.transformer
    assert all(p.grad is not None for p in fake.transformer_blocks.parameters())
    assert all(p.grad is None for p in m.scores.backbone.parameters())
    assert all(p.grad is None for p in m.generator.parameters())
