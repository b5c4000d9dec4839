"""One backbone, one LoRA, two scores: in-place scale switching, exact base at scale 0, LoRA-only gradients."""

import pytest
import torch

from magicdistill.models.dit import VideoDiT
from magicdistill.models.discriminator import DiscriminatorHead, FeatureTap
from magicdistill.models.lora import SharedLoRA
from magicdistill.models.text import TextEmbedding


def _setup(cfg, seed=0):
    torch.manual_seed(seed)
    dit = VideoDiT.tiny(cfg, "i2v").eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, cfg.latent_channels, 3, 8, 8, generator=g)
    text = TextEmbedding(torch.randn(2, 5, cfg.text_dim, generator=g), torch.ones(2, 5, dtype=torch.bool),
                         torch.randn(2, cfg.text_dim, generator=g))
    cond = dit.condition(text, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
                         torch.randn(2, cfg.latent_channels, 1, 8, 8, generator=g))
    return dit, x, torch.tensor([0.7, 0.3]), cond


def _randomise_lora(lora):
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.2)


def test_scale_zero_is_the_base_model_and_lora_starts_neutral(tiny_dit_cfg):
    dit, x, s, cond = _setup(tiny_dit_cfg)
    with torch.no_grad():
        base = dit(x, s, cond)
    lora = SharedLoRA(dit.transformer, rank=4)
    with torch.no_grad():
        torch.testing.assert_close(dit(x, s, cond), base, atol=1e-6, rtol=0)  # B = 0 at init
    _randomise_lora(lora)
    with torch.no_grad(), lora.scaled(0.0):
        assert torch.equal(dit(x, s, cond), base)  # exactly the base
    with torch.no_grad(), lora.scaled(0.25):
        weak = dit(x, s, cond)
    with torch.no_grad(), lora.scaled(1.0):
        strong = dit(x, s, cond)
    assert (weak - base).abs().mean() > 1e-4
    assert (strong - base).abs().mean() > (weak - base).abs().mean()
    assert lora.scale == 1.0  # the context manager restores the previous scale


def test_switching_copies_no_weights(tiny_dit_cfg):
    dit, x, s, cond = _setup(tiny_dit_cfg)
    lora = SharedLoRA(dit.transformer, rank=4)
    ptrs = {n: p.data_ptr() for n, p in dit.named_parameters()}
    n_params = sum(p.numel() for p in dit.parameters())
    for scale in (0.25, 1.0, 0.0, 0.5):
        lora.set_scale(scale)
        with torch.no_grad():
            dit(x, s, cond)
    assert {n: p.data_ptr() for n, p in dit.named_parameters()} == ptrs
    assert sum(p.numel() for p in dit.parameters()) == n_params
    assert all(layer.scaling[lora.adapter] == pytest.approx(0.5 * layer.lora_alpha[lora.adapter] / layer.r[lora.adapter])
               for layer in lora.layers)


def test_only_lora_and_head_get_gradients(tiny_dit_cfg):
    dit, x, s, cond = _setup(tiny_dit_cfg)
    lora = SharedLoRA(dit.transformer, rank=4)
    dit.vision.requires_grad_(False)
    tap = FeatureTap(dit.transformer, ["double:-1"])
    head = DiscriminatorHead(tiny_dit_cfg.hidden_heads * tiny_dit_cfg.head_dim)
    with lora.scaled(1.0), tap.capture() as feats:
        v = dit(x, s, cond)
    loss = v.pow(2).mean() + head(feats).mean()
    loss.backward()
    lora_ids = {id(p) for p in lora.parameters()}
    named = {n: p for n, p in dit.named_parameters() if id(p) in lora_ids}
    assert named and all(p.grad is not None for p in named.values())
    # B starts at zero, so only B moves first (A's gradient is B^T-weighted, exactly zero)
    assert all(p.grad.abs().sum() > 0 for n, p in named.items() if "lora_B" in n)
    assert all(p.grad.abs().sum() == 0 for n, p in named.items() if "lora_A" in n)
    for n, p in dit.named_parameters():
        if id(p) not in lora_ids:
            assert p.grad is None, n
    assert all(p.grad is not None for p in head.parameters())
    assert len(feats) == 1 and feats[0].shape[0] == 2


def test_feature_tap_errors(tiny_dit_cfg):
    dit, *_ = _setup(tiny_dit_cfg)
    with pytest.raises(ValueError, match="unknown feature block"):
        FeatureTap(dit.transformer, ["middle:0"])
    with pytest.raises(ValueError, match="out of range"):
        FeatureTap(dit.transformer, ["double:5"])
