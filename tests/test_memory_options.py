"""Memory options of distillation: LoRA on FFN too, per-block activation checkpointing (exact, also across
adapter roles), bf16 autocast with float32 master weights."""

import pytest
import torch

from magicdistill.config import DistillConfig
from magicdistill.distill.w2s import W2SMethod
from magicdistill.models.dit import VideoDiT
from toys import toy_batch


def _method(dit_cfg, **kw):
    torch.manual_seed(0)
    teacher = VideoDiT.tiny(dit_cfg, "i2v")
    cfg = DistillConfig(lora_rank=4, generator_lora_rank=4, generator_every=2, **kw)
    return W2SMethod(teacher, cfg)


def _trained(method, dit_cfg, iters=3):
    batch = toy_batch(dit_cfg)
    losses = []
    for it in range(iters):
        losses.append(method.step(batch, it, torch.Generator().manual_seed(it)))
    state = {f"m.{k}": v.detach().clone() for name, mod in method.modules().items() for k, v in
             ((f"{name}.{k}", v) for k, v in mod.state_dict().items())}
    return losses, state


@pytest.mark.parametrize("generator", ["lora", "full"])
def test_checkpointing_gives_the_same_training(tiny_dit_cfg, generator):
    """Per-block recomputation must run each block under its forward pass's adapter role: the generator
    adapter's and the fake LoRA's backward passes run after their role's context has exited."""
    plain_losses, plain = _trained(_method(tiny_dit_cfg, generator=generator), tiny_dit_cfg)
    method = _method(tiny_dit_cfg, generator=generator, checkpointing=True)
    assert method.backbone.transformer.gradient_checkpointing
    ckpt_losses, ckpt = _trained(method, tiny_dit_cfg)
    assert plain_losses[0]["loss_dmd"] == pytest.approx(ckpt_losses[0]["loss_dmd"], rel=1e-6)
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)
    moved = [k for k in plain if "lora_B" in k and plain[k].abs().sum() > 0]
    assert moved  # the adapters did train (a zero update would compare equal trivially)


def test_lora_on_ffn_too(tiny_dit_cfg):
    attn = _method(tiny_dit_cfg, generator="lora")
    both = _method(tiny_dit_cfg, generator="lora", lora_targets="attention_ffn")
    names = [n for n, _ in both.backbone.transformer.named_parameters() if ".lora_A.w2s" in n]
    assert any("ff.net.0.proj" in n for n in names) and any("single_transformer_blocks.0.proj_out" in n for n in names)
    assert not any(n.startswith("proj_out.") for n in names)  # the model's own output layer is not adapted
    assert not any("ff.net" in n for n, _ in attn.backbone.transformer.named_parameters() if ".lora_" in n)
    n_attn = sum(p.numel() for p in attn.generator.parameters())
    n_both = sum(p.numel() for p in both.generator.parameters())
    assert n_both > 1.5 * n_attn  # the generator adapter follows the same targets


def test_bf16_autocast_keeps_float32_masters(tiny_dit_cfg):
    from magicdistill.distill.memory import autocast

    method = _method(tiny_dit_cfg, generator="lora", mixed_precision="bf16")
    frozen = [p for n, p in method.backbone.named_parameters() if ".lora_" not in n]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in method.fake_params + list(method.generator.parameters()))
    before = [p.detach().clone() for p in method.generator.parameters()]
    with autocast(method.cfg, "cpu"):
        metrics = method.step(toy_batch(tiny_dit_cfg), 0, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    after = list(method.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before)) and all(p.dtype == torch.float32 for p in after)
