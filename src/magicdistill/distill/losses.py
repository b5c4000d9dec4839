"""Losses as pure functions of tensors (models are called by the method; results passed in here),
so each can be checked with exact numbers on small tensors.

Conventions (method.md): x_sigma = (1 - sigma) x0 + sigma eps, v = eps - x0, sigma = 1 is noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..flow import velocity_target


class NonFiniteError(RuntimeError):
    """A loss or gradient went non-finite. Never silently nan_to_num'd: the trainer stops."""


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"non-finite values in {name}")


def _per_sample_mean_abs(x: torch.Tensor) -> torch.Tensor:
    return x.abs().flatten(1).mean(1).view(-1, *([1] * (x.ndim - 1)))


def flow_matching_loss(v_pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_base = E || (eps - x0) - v_theta(x_sigma, sigma, c) ||^2 (method.md Stage 1; Magic 1-For-1 eq. 9).
    Also the fake score's loss on generated samples (eq. 5)."""
    return (v_pred.float() - velocity_target(x0, eps).float()).pow(2).mean()


@dataclass
class MatchingTerm:
    loss: torch.Tensor  # scalar; d loss / d x_gen = grad / numel
    grad: torch.Tensor  # the normalised direction g (detached)
    normaliser: torch.Tensor  # (B,) per-sample normaliser


def _matching(x_gen: torch.Tensor, toward: torch.Tensor, away: torch.Tensor, anchor: torch.Tensor,
              min_normaliser: float) -> MatchingTerm:
    """L = 1/2 mean((x_gen - sg(x_gen - g))^2), g = (away - toward) / mean_per_sample|x_gen - anchor|."""
    with torch.no_grad():
        norm = _per_sample_mean_abs(x_gen.float() - anchor.float()).clamp(min=min_normaliser)
        g = (away.float() - toward.float()) / norm
        _check_finite("matching gradient", g)
        target = x_gen.detach().float() - g
    loss = 0.5 * (x_gen.float() - target).pow(2).mean()
    return MatchingTerm(loss, g, norm.flatten())


def dmd_loss(x_gen: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor,
             min_normaliser: float = 1e-4) -> MatchingTerm:
    """DMD (Yin et al.; DMD2): g = (x0_fake - x0_real) / mean_per_sample|x_gen - x0_real|.

    Descending this loss moves x_gen along -(x0_fake - x0_real): away from what the fake score
    thinks generated data look like, toward the real score's (method.md stage 3, step 3)."""
    return _matching(x_gen, x0_real, x0_fake, x0_real, min_normaliser)


def regularisation_loss(x_gen: torch.Tensor, x_gt: torch.Tensor, x0_fake: torch.Tensor,
                        min_normaliser: float = 1e-4) -> MatchingTerm:
    """MagicDistillation's ground-truth term [decision, method.md]:
    g_reg = (x0_fake - x_gt) / mean_per_sample|x_gen - x_gt|."""
    return _matching(x_gen, x_gt, x0_fake, x_gt, min_normaliser)


def gan_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: softplus(-D(fake))."""
    return F.softplus(-logits_fake.float()).mean()


def gan_discriminator_loss(logits_fake: torch.Tensor, logits_real: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(logits_fake.float()).mean() + F.softplus(-logits_real.float()).mean()


def discriminator_accuracy(logits_fake: torch.Tensor, logits_real: torch.Tensor) -> float:
    """Share of inputs on the right side of 0, real and generated weighted equally (chance = 0.5)."""
    return 0.5 * ((logits_real > 0).float().mean() + (logits_fake < 0).float().mean()).item()


def cfg_distill_loss(v_student: torch.Tensor, v_teacher_cfg: torch.Tensor) -> torch.Tensor:
    """L_cfg = || v_hat(x, sigma, w, c) - v_s(x, sigma, w, c) ||^2 (Magic 1-For-1 eq. 6)."""
    return (v_student.float() - v_teacher_cfg.detach().float()).pow(2).mean()


def consistency_loss(x0_student: torch.Tensor, x0_target: torch.Tensor) -> torch.Tensor:
    """LCM: || f_theta(x_{t_{n+1}}) - sg(f_ema(x_hat_{t_n})) ||^2 in x0 space."""
    return (x0_student.float() - x0_target.detach().float()).pow(2).mean()
