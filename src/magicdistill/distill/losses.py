"""Losses as pure functions of tensors (models are called by the method; results passed in here),
so each can be checked with exact numbers on small tensors."""

from __future__ import annotations

import torch

from ..flow import velocity_target


def flow_matching_loss(v_pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_base = E || (eps - x0) - v_theta(x_sigma, sigma, c) ||^2 (method.md Stage 1; Magic 1-For-1 eq. 9)."""
    return (v_pred.float() - velocity_target(x0, eps).float()).pow(2).mean()
