"""Samplers. One signature: ``sampler(model, noise, cond, ...) -> x0``.

``model(x_t, sigma, cond)`` returns the velocity. Randomness comes only from the ``noise`` the
caller draws with its own ``torch.Generator``: same noise, same video.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from .flow import add_noise, cfg_combine, euler_step, sigma_schedule, x0_from_v
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
                 progress: bool = False, desc: str = "sampling") -> torch.Tensor:
    """Euler from sigma=1 to 0 over shift(linspace) (or the given ``sigmas``); optional CFG."""
    sigmas = sigma_schedule(steps, shift) if sigmas is None else sigmas
    x = noise
    b = noise.shape[0]
    for i in tqdm(range(len(sigmas) - 1), desc=desc, unit="step", disable=not progress, leave=False):
        s = sigmas[i].expand(b).to(noise.device)
        v = guided_velocity(model, x, s, cond, uncond, guidance)
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])
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
