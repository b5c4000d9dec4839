"""The DMD2-style discriminator learns: it separates two clearly different distributions within a few dozen
fake turns, sees real and generated inputs at independent noise and sigma, and its generator term changes the
generator's gradient."""

import torch

from magicdistill.config import DistillConfig
from magicdistill.distill.w2s import W2SMethod
from magicdistill.models.dit import VideoDiT
from toys import toy_batch


def _method(cfg_dit, **kw):
    torch.manual_seed(0)
    return W2SMethod(VideoDiT.tiny(cfg_dit, "i2v"), DistillConfig(lora_rank=4, batch_size=2, **kw))


def test_head_separates_two_different_distributions_within_forty_steps(tiny_dit_cfg):
    m, batch = _method(tiny_dit_cfg), toy_batch(tiny_dit_cfg)  # "real": unit Gaussian latents
    cond, _ = m.conditions(batch)
    g = torch.Generator().manual_seed(0)
    acc = []
    for _ in range(40):
        x_fake = torch.randn(batch.x_gt.shape, generator=g) + 0.5  # "generated": the same, shifted by 0.5
        metrics = m.fake_update(batch, x_fake, cond, g)
        acc.append(metrics["d_acc"])
        assert {"loss_d", "d_real", "d_fake", "d_acc"} <= set(metrics)
    assert sum(acc[:5]) / 5 < 0.8  # it starts near chance...
    assert sum(acc[-10:]) / 10 >= 0.9  # ...and learns (measured: 1.0; at lr_fake, 1e-4, it stays at 0.3-0.6)
    assert metrics["d_real"] > 0 > metrics["d_fake"]


def test_real_and_generated_inputs_get_independent_noise_and_sigma_in_the_disc_range(tiny_dit_cfg, monkeypatch):
    m, batch = _method(tiny_dit_cfg, disc_sigma_min=0.1, disc_sigma_max=0.4), toy_batch(tiny_dit_cfg)
    cond, _ = m.conditions(batch)
    calls = []
    monkeypatch.setattr(m, "_features_logits", lambda x_t, s, c: calls.append((x_t, s)) or m.head(
        [torch.zeros(x_t.shape[0], 3, m.head.heads[0][0].normalized_shape[0])]))
    m.fake_update(batch, batch.x_gt.clone(), cond, torch.Generator().manual_seed(1))  # generated == real data
    (x_fake, s_fake), (x_real, s_real) = calls
    assert ((s_fake >= 0.1) & (s_fake <= 0.4)).all() and ((s_real >= 0.1) & (s_real <= 0.4)).all()
    assert (s_fake - s_real).abs().min() > 0
    # same clean latents, so any difference is the noise: it must not be the same draw
    assert (x_fake - x_real).abs().mean() > 0.05


def _generator_grads(cfg_dit, lambda_adv: float) -> list[torch.Tensor]:
    m, batch = _method(cfg_dit, lambda_adv=lambda_adv), toy_batch(cfg_dit)
    g = torch.Generator().manual_seed(2)
    cond, uncond = m.conditions(batch)
    m.generator_update(batch, m.generate(batch, g, grad=True), cond, uncond, g)
    return [p.grad.clone() for p in m.generator.parameters() if p.grad is not None]


def test_gan_term_changes_the_generator_gradient(tiny_dit_cfg):
    without, again = _generator_grads(tiny_dit_cfg, 0.0), _generator_grads(tiny_dit_cfg, 0.0)
    with_gan = _generator_grads(tiny_dit_cfg, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(without, again))  # deterministic: a difference is the GAN term
    norm = torch.cat([a.flatten() for a in without]).norm()
    diff = torch.cat([(a - b).flatten() for a, b in zip(with_gan, without)]).norm()
    assert diff > 1e-3 * norm
