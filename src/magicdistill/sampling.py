"""Samplers. One signature: ``sampler(model, noise, cond, ...) -> x0``.

``model(x_t, sigma, cond)`` returns the velocity. Randomness comes only from the ``noise`` the
caller draws with its own ``torch.Generator``: same noise, same video.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from .flow import add_noise, cfg_combine, eps_from_v, euler_step, sigma_schedule, x0_from_v
from .models.dit import Condition

VelocityFn = Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor]


def guided_velocity(model: VelocityFn, x: torch.Tensor, sigma: torch.Tensor, cond: Condition,
                    uncond: Condition | None, guidance: float | torch.Tensor) -> torch.Tensor:
    """CFG with the conditional and unconditional branches batched into one forward pass.
    ``guidance`` is a float or a per-sample (B,) tensor."""
    if uncond is None or (not torch.is_tensor(guidance) and guidance == 1.0):
        return model(x, sigma, cond)
    v = model(torch.cat([x, x]), torch.cat([sigma, sigma]), Condition.cat([uncond, cond]))
    v_uncond, v_cond = v.chunk(2)
    return cfg_combine(v_uncond, v_cond, guidance)


@torch.no_grad()
def euler_sample(model: VelocityFn, noise: torch.Tensor, cond: Condition, *, steps: int = 50, shift: float = 5.0,
                 uncond: Condition | None = None, guidance: float = 1.0, sigmas: torch.Tensor | None = None,
                 eta: float = 0.0, generator: torch.Generator | None = None,
                 progress: bool = False, desc: str = "sampling") -> torch.Tensor:
    """Euler from sigma=1 to 0 over shift(linspace) (or the given ``sigmas``); optional CFG.

    ``eta`` in [0, 1] is DDIM's: each step goes to x' = (1 - s') x0_hat + sqrt(s'^2 - c^2) eps_hat + c z,
    z fresh noise from ``generator`` (drawn on CPU, so results do not depend on device) and
    c = eta * (the std of the forward process's posterior q(x_s' | x_s, x0)). eta 0 is the ODE (the plain
    Euler step); eta 1 is ancestral sampling. Every eta keeps the data's marginals (tests/test_sampling.py).
    Replacing eps_hat by fresh noise *entirely* instead (consistency_sample) shrinks them when x0_hat is
    a posterior mean, as a teacher's is."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if eta > 0 and generator is None:
        raise ValueError("a stochastic sampler (eta > 0) needs a generator for its fresh noise")
    sigmas = sigma_schedule(steps, shift) if sigmas is None else sigmas
    x = noise
    b = noise.shape[0]
    for i in tqdm(range(len(sigmas) - 1), desc=desc, unit="step", disable=not progress, leave=False):
        s = sigmas[i].expand(b).to(noise.device)
        v = guided_velocity(model, x, s, cond, uncond, guidance)
        s0, s1 = float(sigmas[i]), float(sigmas[i + 1])
        if eta == 0.0 or s1 == 0.0:
            x = euler_step(x, v, sigmas[i], sigmas[i + 1])
            continue
        # forward process from s1 to s0: x_s0 = r x_s1 + sqrt(s0^2 - r^2 s1^2) xi, r = (1 - s0) / (1 - s1)
        r = (1 - s0) / (1 - s1)
        c = eta * s1 * max(0.0, 1 - (r * s1 / s0) ** 2) ** 0.5
        z = torch.randn(x.shape, generator=generator).to(x.device)
        x = (1 - s1) * x0_from_v(x, v, s) + (s1 ** 2 - c ** 2) ** 0.5 * eps_from_v(x, v, s) + c * z
    return x


@torch.no_grad()
def consistency_sample(model: VelocityFn, noise: torch.Tensor, cond: Condition, *, sigmas: torch.Tensor,
                       generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """Multistep consistency sampling (LCM): predict x0 at each sigma, re-noise to the next with
    fresh noise from ``generator``."""
    x = noise
    b = noise.shape[0]
    for i in tqdm(range(len(sigmas) - 1), desc="sampling", unit="step", disable=not progress, leave=False):
        s = sigmas[i].expand(b).to(noise.device)
        x0 = x0_from_v(x, model(x, s, cond), s)
        x = add_noise(x0, torch.randn(x.shape, generator=generator).to(x.device), sigmas[i + 1]) if sigmas[i + 1] > 0 else x0
    return x
