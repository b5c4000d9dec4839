"""Distillation losses as pure functions: exact numbers on small tensors."""

import pytest
import torch
import torch.nn.functional as F

from magicdistill.distill import losses


def _t(seed, shape=(2, 4, 3, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_dmd_gradient_equals_normalised_difference_over_numel():
    x_gen = _t(0).requires_grad_(True)
    real, fake = _t(1), _t(2)
    term = losses.dmd_loss(x_gen, real, fake)
    term.loss.backward()
    norm = (x_gen.detach() - real).abs().flatten(1).mean(1).view(-1, 1, 1, 1, 1)
    expected = (fake - real) / norm / x_gen.numel()
    torch.testing.assert_close(x_gen.grad, expected, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(term.normaliser, norm.flatten())
    # the loss value is 1/2 mean(g^2)
    assert term.loss.item() == pytest.approx(0.5 * ((fake - real) / norm).pow(2).mean().item(), rel=1e-5)


def test_dmd_zero_when_fake_equals_real():
    x_gen = _t(0).requires_grad_(True)
    real = _t(1)
    term = losses.dmd_loss(x_gen, real, real.clone())
    term.loss.backward()
    assert term.loss.item() == 0.0
    assert x_gen.grad.abs().max().item() == 0.0


def test_dmd_step_moves_toward_real():
    # one gradient step moves x_gen's fake/real gap down: descending L moves along -(fake - real)
    x_gen = _t(0).requires_grad_(True)
    real, fake = _t(1), _t(1) + 0.5
    losses.dmd_loss(x_gen, real, fake).loss.backward()
    assert (x_gen.grad > 0).all()  # fake > real everywhere -> decrease x_gen


def test_normaliser_is_clamped_not_nan():
    x = _t(0)
    term = losses.dmd_loss(x.clone().requires_grad_(True), x, x + 1.0, min_normaliser=1e-3)
    assert torch.isfinite(term.grad).all()
    assert term.normaliser.min().item() == pytest.approx(1e-3)
    with pytest.raises(losses.NonFiniteError):
        losses.dmd_loss(x.clone().requires_grad_(True), x, x * float("nan"))


def test_regularisation_gradient():
    x_gen = _t(3).requires_grad_(True)
    gt, fake = _t(4), _t(5)
    losses.regularisation_loss(x_gen, gt, fake).loss.backward()
    norm = (x_gen.detach() - gt).abs().flatten(1).mean(1).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x_gen.grad, (fake - gt) / norm / x_gen.numel(), atol=1e-7, rtol=1e-5)


def test_gan_losses():
    lf, lr = torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])
    assert losses.gan_generator_loss(lf).item() == pytest.approx(((F.softplus(torch.tensor(0.0)) + F.softplus(torch.tensor(-2.0))) / 2).item())
    d = losses.gan_discriminator_loss(lf, lr).item()
    assert d == pytest.approx((F.softplus(lf).mean() + F.softplus(-lr).mean()).item())
    # a perfect discriminator drives its loss toward 0
    assert losses.gan_discriminator_loss(torch.full((4,), -30.0), torch.full((4,), 30.0)).item() < 1e-10


def test_flow_matching_cfg_and_consistency_losses():
    x0, eps = _t(6), _t(7)
    assert losses.flow_matching_loss(eps - x0, x0, eps).item() == 0.0
    assert losses.flow_matching_loss(eps - x0 + 1.0, x0, eps).item() == pytest.approx(1.0)
    v = _t(8)
    assert losses.cfg_distill_loss(v, v).item() == 0.0
    assert losses.cfg_distill_loss(v + 2.0, v).item() == pytest.approx(4.0)
    s = _t(9).requires_grad_(True)
    tgt = _t(10).requires_grad_(True)
    losses.consistency_loss(s, tgt).backward()
    assert tgt.grad is None  # the target is stop-gradient
