"""The Euler sampler with eta (sampling.euler_sample): the ODE at eta 0, consistency sampling at eta 1,
and the right marginals in between, checked on a Gaussian whose exact velocity is known."""

import pytest
import torch

from magicdistill import flow
from magicdistill.models.dit import Condition
from magicdistill.sampling import consistency_sample, euler_sample

DUMMY = Condition(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1), None)


def gaussian_velocity(c: float):
    """The exact flow velocity for data x0 ~ N(0, c^2 I): x0_hat = E[x0 | x_s] = (1-s) c^2 / var_s * x_s."""
    def v(x, s, cond):
        s = s.view(-1, *([1] * (x.ndim - 1)))
        x0_hat = (1 - s) * c ** 2 / ((1 - s) ** 2 * c ** 2 + s ** 2) * x
        return (x - x0_hat) / s
    return v


def test_eta_zero_is_the_plain_euler_step():
    v = gaussian_velocity(0.5)
    noise = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    sig = flow.sigma_schedule(10, 3.0)
    x = noise
    for i in range(10):
        x = flow.euler_step(x, v(x, sig[i].expand(3), None), sig[i], sig[i + 1])
    assert torch.equal(euler_sample(v, noise, DUMMY, steps=10, shift=3.0), x)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_eta_lands_on_a_perfect_predictors_x0(eta):
    x0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    perfect = lambda x, s, c: (x - x0) / s.view(-1, 1, 1)  # noqa: E731
    out = euler_sample(perfect, torch.randn(2, 3, 4), DUMMY, steps=8, eta=eta,
                       generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_eta_samples_the_data_distribution(eta):
    # With the exact velocity every eta samples N(0, c^2) as the steps grow (200 here; at 50 steps and
    # shift 5 all three are ~10 % narrow: Euler's error, not eta's). 20,000 samples: the std is ~1 % noisy.
    c = 0.4
    noise = torch.randn(2000, 10, generator=torch.Generator().manual_seed(4))
    out = euler_sample(gaussian_velocity(c), noise, DUMMY, steps=200, shift=1.0, eta=eta,
                       generator=torch.Generator().manual_seed(5))
    assert out.std().item() == pytest.approx(c, rel=0.03)
    assert abs(out.mean().item()) < 0.02


def test_consistency_sampling_with_a_posterior_mean_shrinks_the_data():
    # Why eta is DDIM's and not "replace eps_hat by fresh noise": the latter (consistency_sample) re-noises
    # the posterior mean, whose variance is below the data's, so every step narrows the marginals.
    c = 0.4
    noise = torch.randn(2000, 10, generator=torch.Generator().manual_seed(4))
    out = consistency_sample(gaussian_velocity(c), noise, DUMMY, sigmas=flow.sigma_schedule(200, 1.0),
                             generator=torch.Generator().manual_seed(5))
    assert out.std().item() < 0.8 * c


def test_fresh_noise_comes_from_the_generator():
    v = gaussian_velocity(0.5)
    noise = torch.randn(2, 5, generator=torch.Generator().manual_seed(6))

    def run(seed):
        return euler_sample(v, noise, DUMMY, steps=6, eta=0.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
    assert not torch.allclose(run(1), euler_sample(v, noise, DUMMY, steps=6))


def test_bad_eta_is_refused():
    v = gaussian_velocity(0.5)
    with pytest.raises(ValueError, match="eta must be in"):
        euler_sample(v, torch.zeros(1, 2), DUMMY, steps=2, eta=1.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="needs a generator"):
        euler_sample(v, torch.zeros(1, 2), DUMMY, steps=2, eta=0.5)
