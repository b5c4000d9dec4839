"""W2S pinned: with a trained (non-zero) LoRA, the real score is the shared base + alpha_weak * LoRA and the
fake score base + alpha_strong * LoRA, checked against weights merged here by hand (W + a * B A), not
through the roles under test. Also: the EMA of the generator moves by (1 - decay) of the way per update."""

import copy

import pytest
import torch
from peft.tuners.lora import LoraLayer

from magicdistill.config import DistillConfig
from magicdistill.distill import losses
from magicdistill.distill import w2s as w2s_module
from magicdistill.distill.w2s import W2SMethod
from magicdistill.flow import x0_from_v
from magicdistill.models.dit import VideoDiT
from magicdistill.sampling import guided_velocity
from magicdistill.train.ema import EMA
from toys import toy_batch

WEAK, STRONG, W = 0.3, 0.8, 3.0  # not the defaults, so a hard-coded 0.25 / 1.0 / teacher CFG cannot pass


def _trained_method(cfg_dit, **kw):
    """A W2S method whose LoRA looks trained (random A and B, B != 0) and the plain teacher it started from."""
    torch.manual_seed(0)
    teacher = VideoDiT.tiny(cfg_dit, "i2v")
    plain = copy.deepcopy(teacher).eval()
    cfg = DistillConfig(lora_rank=4, batch_size=2, alpha_weak=WEAK, alpha_strong=STRONG, real_guidance=W, **kw)
    m = W2SMethod(teacher, cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.lora.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return m, plain


def _adapted(m):
    """(name in the plain model, LoRA layer) for every layer the score LoRA adapts."""
    return [(n, mod) for n, mod in m.backbone.transformer.named_modules()
            if isinstance(mod, LoraLayer) and m.lora.adapter in mod.lora_A]


def _delta_w(layer, adapter: str) -> torch.Tensor:
    """B A times peft's lora_alpha / r: the weight change of the LoRA at scale 1."""
    return (layer.lora_alpha[adapter] / layer.r[adapter]) * layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight


def _merged_by_hand(m, plain: VideoDiT, scale: float) -> VideoDiT:
    out = copy.deepcopy(plain)
    params = dict(out.transformer.named_parameters())
    with torch.no_grad():
        for name, layer in _adapted(m):
            params[f"{name}.weight"].add_(scale * _delta_w(layer, m.lora.adapter))
    return out


def _x_t(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch.x_gt.shape, generator=g), torch.full((batch.x_gt.shape[0],), 0.6)


def test_adapted_layers_are_base_plus_alpha_times_lora(tiny_dit_cfg):
    m, _ = _trained_method(tiny_dit_cfg)
    layers = _adapted(m)
    assert len(layers) >= 8
    for name, layer in layers:
        x = torch.randn(3, layer.base_layer.in_features)
        base = layer.base_layer(x)
        delta = x @ _delta_w(layer, m.lora.adapter).T
        assert delta.abs().mean() > 1e-3, name  # the LoRA is really non-zero
        for role, scale in (("teacher", 0.0), ("real", WEAK), ("fake", STRONG)):
            with m.scores.use(role), torch.no_grad():
                torch.testing.assert_close(layer(x), base + scale * delta, atol=1e-5, rtol=1e-5, msg=f"{role} {name}")


def test_real_and_fake_scores_equal_models_merged_at_alpha_weak_and_alpha_strong(tiny_dit_cfg):
    m, plain = _trained_method(tiny_dit_cfg)
    batch = toy_batch(tiny_dit_cfg)
    cond, _ = m.conditions(batch)
    x_t, sigma = _x_t(batch)
    with torch.no_grad():
        out = {}
        for role in ("teacher", "real", "fake"):
            with m.scores.use(role) as model:
                out[role] = model(x_t, sigma, cond)
        base = plain(x_t, sigma, cond)
        weak = _merged_by_hand(m, plain, WEAK)(x_t, sigma, cond)
        strong = _merged_by_hand(m, plain, STRONG)(x_t, sigma, cond)
    # real != fake != base: the LoRA moved the scores, by different amounts
    assert (out["real"] - out["teacher"]).abs().mean() > 1e-3
    assert (out["fake"] - out["real"]).abs().mean() > 1e-3
    torch.testing.assert_close(out["teacher"], base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["real"], weak, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["fake"], strong, atol=1e-4, rtol=1e-4)


def test_generator_update_uses_real_at_alpha_weak_with_cfg_and_fake_at_alpha_strong(tiny_dit_cfg, monkeypatch):
    """The DMD gradient's two scores, as the generator turn computes them, against hand-merged models."""
    m, plain = _trained_method(tiny_dit_cfg, lambda_adv=0.0)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(3)
    cond, uncond = m.conditions(batch)
    x_gen = m.generate(batch, g, grad=True)
    seen = {}
    add_noise = w2s_module.add_noise
    dmd_loss = losses.dmd_loss

    def spy_noise(x0, eps, sigma):
        seen["x_t"], seen["sigma"] = add_noise(x0, eps, sigma), sigma
        return seen["x_t"]

    def spy_dmd(x, x0_real, x0_fake, **kw):
        seen["real"], seen["fake"] = x0_real, x0_fake
        return dmd_loss(x, x0_real, x0_fake, **kw)

    monkeypatch.setattr(w2s_module, "add_noise", spy_noise)
    monkeypatch.setattr(losses, "dmd_loss", spy_dmd)
    m.generator_update(batch, x_gen, cond, uncond, g)
    x_t, sigma = seen["x_t"], seen["sigma"]
    with torch.no_grad():
        v_real = guided_velocity(_merged_by_hand(m, plain, WEAK), x_t, sigma, cond, uncond, W)
        v_fake = _merged_by_hand(m, plain, STRONG)(x_t, sigma, cond)
    torch.testing.assert_close(seen["real"], x0_from_v(x_t, v_real, sigma), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(seen["fake"], x0_from_v(x_t, v_fake, sigma), atol=1e-4, rtol=1e-4)
    assert (seen["real"] - seen["fake"]).abs().mean() > 1e-3


def test_ema_moves_one_minus_decay_of_the_way():
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    assert ema.shadow.weight.item() == pytest.approx(0.1)
    ema.update(m, decay=0.8)  # an explicit decay (the teacher's warm-up) overrides the stored one
    assert ema.shadow.weight.item() == pytest.approx(0.1 + 0.2 * 0.9)


def test_generator_ema_follows_the_generator_at_the_configured_decay(tiny_dit_cfg):
    m, _ = _trained_method(tiny_dit_cfg, ema_decay=0.9)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(4)
    cond, uncond = m.conditions(batch)
    before = [p.detach().clone() for p in m.generator_weights.parameters()]
    m.generator_update(batch, m.generate(batch, g, grad=True), cond, uncond, g)
    after = [p.detach() for p in m.generator_weights.parameters()]
    assert any((a - b).abs().max() > 0 for a, b in zip(after, before))
    for s, a, b in zip(m.ema.shadow.parameters(), after, before):
        torch.testing.assert_close(s, 0.9 * b + 0.1 * a, atol=1e-6, rtol=1e-5)
