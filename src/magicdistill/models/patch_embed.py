"""The DiT's latent patch embedding (``transformer.x_embedder.proj``, a Conv3d): its input channels and
how many tokens around its own it reads.

diffusers' HunyuanVideo embedding is a Conv3d whose kernel equals its stride (the patch, 2x2 latent
pixels): each token sees only its own patch. ``embed_tokens`` k > 1 (odd) widens the kernel to k x k
tokens, still with stride = patch and padded so every kernel stays centred on its token's patch. A
token then holds its neighbours' content, so copying the first frame's face to where the head has
moved (within (k - 1) / 2 tokens) is a linear map of the input instead of something attention must
learn (measured: docs/research/LOG.md). The kernel is the only change to diffusers'
layout, so it is recorded in the model folder's dit.json and re-applied before the weights load.

Widening a trained embedding (more input channels, a wider kernel, or both) copies the old weights
into the first channels at the kernel's centre and zeroes everything new, so the widened model computes
exactly the old function (Magic 1-For-1's zero-initialised T2V -> I2V conversion is the channel case).
"""

from __future__ import annotations

import torch
from torch import nn


def _patch(conv: nn.Conv3d) -> tuple[int, int]:
    """(temporal, spatial) patch size = the embedding's stride."""
    return conv.stride[0], conv.stride[-1]


def embed_tokens(conv: nn.Conv3d) -> int:
    """Tokens per side the embedding reads (1 = diffusers' layout: its own patch only)."""
    return conv.kernel_size[-1] // _patch(conv)[1]


def patch_conv(in_channels: int, out_channels: int, patch_t: int, patch: int, tokens: int = 1, *,
               bias: bool = True, dtype=None, device=None) -> nn.Conv3d:
    """A freshly initialised embedding reading ``tokens`` x ``tokens`` patches centred on each token's own."""
    if tokens < 1 or tokens % 2 == 0:
        raise ValueError(f"embed_tokens must be an odd number >= 1, got {tokens}")
    k = tokens * patch
    pad = (k - patch) // 2
    return nn.Conv3d(in_channels, out_channels, (patch_t, k, k), (patch_t, patch, patch), (0, pad, pad), bias=bias,
                     dtype=dtype, device=device)


@torch.no_grad()
def widen_patch_embedding(conv: nn.Conv3d, in_channels: int | None = None, tokens: int | None = None) -> nn.Conv3d:
    """A copy of ``conv`` with ``in_channels`` inputs and a ``tokens``-wide kernel (None: unchanged):
    the old weights at the first channels and the kernel's centre, everything new zero."""
    in_channels = conv.in_channels if in_channels is None else in_channels
    old_tokens = embed_tokens(conv)
    tokens = old_tokens if tokens is None else tokens
    if in_channels < conv.in_channels:
        raise ValueError(f"cannot narrow a patch embedding from {conv.in_channels} to {in_channels} channels")
    if tokens < old_tokens:
        raise ValueError(f"cannot narrow a patch embedding's kernel from {old_tokens} to {tokens} tokens")
    wide = patch_conv(in_channels, conv.out_channels, *_patch(conv), tokens, bias=conv.bias is not None,
                      dtype=conv.weight.dtype, device=conv.weight.device)
    wide.weight.zero_()
    off = (wide.kernel_size[-1] - conv.kernel_size[-1]) // 2
    k = conv.kernel_size[-1]
    wide.weight[:, : conv.in_channels, :, off: off + k, off: off + k] = conv.weight
    if conv.bias is not None:
        wide.bias.copy_(conv.bias)
    return wide


def set_embed_tokens(transformer: nn.Module, tokens: int) -> nn.Module:
    """In place: a fresh ``tokens``-wide embedding of the same channels (a new model, or one whose
    weights are loaded next). A no-op when the kernel already has that width."""
    proj = transformer.x_embedder.proj
    if embed_tokens(proj) != tokens:
        transformer.x_embedder.proj = patch_conv(proj.in_channels, proj.out_channels, *_patch(proj), tokens,
                                                 bias=proj.bias is not None, dtype=proj.weight.dtype,
                                                 device=proj.weight.device)
    return transformer
