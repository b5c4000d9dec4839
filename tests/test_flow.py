"""The flow-matching conventions of method.md, checked as pure math."""

import math

import pytest
import torch

from magicdistill import flow


def test_x0_v_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    sigma = torch.tensor([0.3, 0.9])
    x_t = flow.add_noise(x0, eps, sigma)
    v = flow.velocity_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_v(x_t, v, sigma), x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.eps_from_v(x_t, v, sigma), eps, atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.v_from_x0(x_t, x0, sigma), v, atol=1e-5, rtol=0)


def test_shift_formula_and_four_step_schedule():
    assert flow.shift_sigma(0.5, 5.0) == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))
    assert flow.shift_sigma(0.0, 3.0) == 0.0 and flow.shift_sigma(1.0, 3.0) == 1.0
    assert flow.shift_sigma(0.37, 1.0) == pytest.approx(0.37)
    s = flow.sigma_schedule(4, 5.0)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.9375, 0.833333, 0.625, 0.0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        flow.shift_sigma(0.5, 0.0)
    with pytest.raises(ValueError):
        flow.sigma_schedule(0)


def test_euler_reaches_exact_endpoint_of_straight_flow():
    # A velocity field with a known solution: the optimal field for a single data point x0 is
    # v(x, s) = (x - x0) / s (straight lines to x0). Euler is exact on straight paths for any step count.
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 5, generator=g)
    noise = torch.randn(3, 5, generator=g)
    for steps in (1, 4, 50):
        sig = flow.sigma_schedule(steps, 3.0)
        x = noise
        for i in range(steps):
            v = (x - x0) / sig[i]
            x = flow.euler_step(x, v, sig[i], sig[i + 1])
        torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_euler_on_rotation_field_converges_first_order():
    # dx/dsigma = A x with A a rotation generator: x(0) = expm(-A) x(1). Euler error shrinks ~ 1/N.
    a = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    x1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    exact = torch.linalg.matrix_exp(-a) @ x1
    errs = []
    for n in (50, 100, 200):
        sig = torch.linspace(1, 0, n + 1, dtype=torch.float64)
        x = x1.clone()
        for i in range(n):
            x = flow.euler_step(x, a @ x, sig[i], sig[i + 1])
        errs.append((x - exact).norm().item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] / errs[2] == pytest.approx(4.0, rel=0.1)


def test_cfg_combine():
    u, c = torch.full((2, 3), 1.0), torch.full((2, 3), 3.0)
    torch.testing.assert_close(flow.cfg_combine(u, c, 1.0), c)
    torch.testing.assert_close(flow.cfg_combine(u, c, 0.0), u)
    torch.testing.assert_close(flow.cfg_combine(u, c, 6.0), torch.full((2, 3), 13.0))


def test_training_sigma_distribution():
    g = torch.Generator().manual_seed(0)
    s = flow.sample_training_sigma(20000, generator=g)
    assert 0 < s.min() and s.max() < 1
    assert s.median().item() == pytest.approx(0.5, abs=0.02)
    shifted = flow.sample_training_sigma(20000, generator=torch.Generator().manual_seed(0), shift=3.0)
    assert shifted.median().item() == pytest.approx(flow.shift_sigma(0.5, 3.0), abs=0.02)
    assert math.isclose(flow.shift_sigma(0.5, 3.0), 0.75)
