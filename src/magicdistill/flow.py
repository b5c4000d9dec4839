"""Pure flow-matching math (method.md "Conventions"). No models here: every function is testable
on small tensors.

x_sigma = (1 - sigma) * x0 + sigma * eps,  sigma = 1 is pure noise.
v = eps - x0;  x0_hat = x_sigma - sigma * v;  eps_hat = x_sigma + (1 - sigma) * v.
"""

from __future__ import annotations

import torch


def _b(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample sigma (B,) or a scalar against ``like`` (B, ...)."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return s.reshape(-1, *([1] * (like.ndim - 1))) if s.ndim else s


def add_noise(x0: torch.Tensor, eps: torch.Tensor, sigma) -> torch.Tensor:
    s = _b(sigma, x0)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, sigma) -> torch.Tensor:
    return x_t - _b(sigma, x_t) * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, sigma) -> torch.Tensor:
    return x_t + (1 - _b(sigma, x_t)) * v


def v_from_x0(x_t: torch.Tensor, x0: torch.Tensor, sigma) -> torch.Tensor:
    """Inverse of x0_from_v for sigma > 0."""
    return (x_t - x0) / _b(sigma, x_t)


def shift_sigma(sigma, shift: float):
    """SD3 / HunyuanVideo timestep shift: s*sigma / (1 + (s - 1)*sigma). Maps 0->0, 1->1."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigma_schedule(steps: int, shift: float = 5.0) -> torch.Tensor:
    """steps + 1 sigmas from 1 to 0: shift(linspace(1, 0, steps + 1)). 4 steps, s=5 ->
    [1.0, 0.9375, 0.8333, 0.625, 0.0] (method.md)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def euler_step(x_t: torch.Tensor, v: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """x_{sigma'} = x_sigma + (sigma' - sigma) * v."""
    return x_t + (_b(sigma_next, x_t) - _b(sigma, x_t)) * v


def cfg_combine(v_uncond: torch.Tensor, v_cond: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """Ho-Salimans CFG: v_uncond + w * (v_cond - v_uncond). w = 1 is the conditional output.
    (Magic 1-For-1's eq. 7 writes (1 + w') v_cond - w' v_uncond: the same with w = 1 + w'.)"""
    w = _b(w, v_cond) if torch.is_tensor(w) else w
    return v_uncond + w * (v_cond - v_uncond)


def sample_training_sigma(n: int, *, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                          shift: float = 1.0, device=None) -> torch.Tensor:
    """sigma = shift(sigmoid(N(mean, std))): logit-normal (SD3) then the timestep shift."""
    u = torch.sigmoid(torch.randn(n, generator=generator, device=device) * std + mean)
    return shift_sigma(u, shift)
