"""generator="lora": the generator is a second adapter on the scores' frozen backbone.

Roles switch adapters in place (each role runs only its own adapter), each turn trains only its own
weights, the zero-init adapter makes the generator the teacher at step 0, the saved (merged) model
equals backbone + adapter, and a resumed run continues with the same numbers.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from magicdistill.cli import app
from magicdistill.config import DistillConfig
from magicdistill.distill.scores import LoRAGenerator
from magicdistill.distill.trainer import distill
from magicdistill.distill.w2s import W2SMethod
from magicdistill.models.dit import VideoDiT
from magicdistill.models.lora import merged
from magicdistill.train.checkpoint import load_checkpoint, save_checkpoint
from toys import toy_batch, write_tiny_teacher


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


def _method(cfg_dit, **kw):
    torch.manual_seed(0)
    teacher = VideoDiT.tiny(cfg_dit, "i2v")
    original = copy.deepcopy(teacher).eval()
    cfg = DistillConfig(lora_rank=4, generator_lora_rank=4, batch_size=2, generator="lora", **kw)
    return W2SMethod(teacher, cfg), original




def _randomise(params, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _inputs(m, batch):
    cond, _ = m.conditions(batch)
    return batch.x_gt, torch.tensor([0.7, 0.3]), cond


def _ids(params):
    return {id(p) for p in params}


def test_generator_starts_as_the_teacher_and_roles_see_only_their_adapter(tiny_dit_cfg):
    m, teacher = _method(tiny_dit_cfg)
    x, s, cond = _inputs(m, toy_batch(tiny_dit_cfg))
    with torch.no_grad():
        base = teacher(x, s, cond)  # the frozen teacher's conditioning is the generator's too
        torch.testing.assert_close(m.generator(x, s, cond), base, atol=1e-6, rtol=0)  # adapter B = 0
        _randomise(m.scores.lora.parameters(), 1)  # a trained score LoRA must not leak into the generator
        torch.testing.assert_close(m.generator(x, s, cond), base, atol=1e-6, rtol=0)
        with m.scores.use("fake") as fake:
            fake_before = fake(x, s, cond)
        _randomise(m.generator.parameters(), 2)
        gen = m.generator(x, s, cond)
        with m.scores.use("fake") as fake:  # ... nor the generator adapter into the scores
            torch.testing.assert_close(fake(x, s, cond), fake_before, atol=0, rtol=0)
        with m.scores.use("teacher") as t:
            torch.testing.assert_close(t(x, s, cond), base, atol=1e-6, rtol=0)
    assert (gen - base).abs().mean() > 1e-3 and (fake_before - base).abs().mean() > 1e-3
    # no weights were copied: the generator's tensors are the backbone's own
    assert _ids(m.generator.parameters()) <= _ids(m.backbone.parameters())
    assert not _ids(m.generator.parameters()) & _ids(m.scores.lora.parameters())


def test_each_turn_trains_only_its_own_adapter(tiny_dit_cfg):
    m, _ = _method(tiny_dit_cfg)
    batch = toy_batch(tiny_dit_cfg)
    g = torch.Generator().manual_seed(2)
    cond, uncond = m.conditions(batch)
    gen_ids = _ids(m.generator.parameters())
    score_before = [p.detach().clone() for p in m.scores.lora.parameters()]
    x_gen = m.generate(batch, g, grad=True)
    m.generator_update(batch, x_gen, cond, uncond, g)
    gen_b = [p for n, p in m.backbone.transformer.named_parameters() if "lora_B.generator" in n]
    assert gen_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen_b)
    assert all(p.grad is None for p in m.backbone.parameters() if id(p) not in gen_ids)
    assert all(p.grad is None for p in m.head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(score_before, m.scores.lora.parameters()))
    # the EMA averages the adapter only: it is adapter-sized, a small fraction of the backbone
    n_ema, n_gen = (sum(p.numel() for p in ps) for ps in (m.ema.shadow.parameters(), m.generator.parameters()))
    assert n_ema == n_gen < 0.2 * sum(p.numel() for p in m.backbone.parameters())
    for p in m.generator.parameters():
        p.grad = None
    gen_before = [p.detach().clone() for p in m.generator.parameters()]
    m.fake_update(batch, m.generate(batch, g, grad=False), cond, g)
    assert all(p.grad is None for p in m.generator.parameters())
    score_b = [p for n, p in m.backbone.transformer.named_parameters() if "lora_B.w2s" in n]
    assert score_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in score_b)
    assert all(p.grad is not None for p in m.head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(gen_before, m.generator.parameters()))


def test_ema_and_merged_save_equal_backbone_plus_adapter(tiny_dit_cfg, tmp_path):
    m, teacher = _method(tiny_dit_cfg)
    x, s, cond = _inputs(m, toy_batch(tiny_dit_cfg))
    _randomise(m.scores.lora.parameters(), 1)
    _randomise(m.generator.parameters(), 2)
    live = [p.detach().clone() for p in m.generator.parameters()]
    _randomise(m.ema.shadow.parameters(), 3)
    with torch.no_grad():
        live_out = m.generator(x, s, cond)
        with m.ema_generator() as g:
            assert all(torch.equal(a, b) for a, b in zip(m.generator.parameters(), m.ema.shadow.parameters()))
            ema_out = g(x, s, cond)
            plain = merged(g)
            merged_out = plain(x, s, cond)
    # leaving the context restores the live adapter exactly
    assert all(torch.equal(a, b) for a, b in zip(live, m.generator.parameters()))
    assert (ema_out - live_out).abs().mean() > 1e-3
    torch.testing.assert_close(merged_out, ema_out, atol=1e-5, rtol=1e-5)
    # saved and reloaded: an ordinary model folder with the teacher's tensors, no adapter left
    plain.save(tmp_path / "g", prediction=teacher.prediction)
    loaded = VideoDiT.load(tmp_path / "g")
    assert set(loaded.state_dict()) == set(teacher.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, s, cond), ema_out, atol=1e-5, rtol=1e-5)


def test_checkpoint_resume_continues_with_the_same_numbers(tiny_dit_cfg, tmp_path):
    def run(m, its):
        out = []
        for it in its:
            metrics = m.step(toy_batch(tiny_dit_cfg, seed=it), it, torch.Generator().manual_seed(100 + it))
            out.append(metrics)
        return out

    a, _ = _method(tiny_dit_cfg, generator_every=2)
    run(a, range(1))  # a generator turn: adapter, its EMA and its optimizer state all moved
    save_checkpoint(tmp_path / "ck", modules=a.modules(), optimizers=a.optimizers(), meta={"step": 1})
    rest_a = run(a, range(1, 3))
    b, _ = _method(tiny_dit_cfg, generator_every=2)
    load_checkpoint(tmp_path / "ck", modules=b.modules(), optimizers=b.optimizers())
    rest_b = run(b, range(1, 3))
    assert "loss_dmd" in rest_a[1] and rest_a[1]["loss_dmd"] > 0  # iteration 2 is a generator turn
    for ra, rb in zip(rest_a, rest_b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-9), k
    for name in ("generator", "ema", "lora", "head"):
        sa, sb = a.modules()[name].state_dict(), b.modules()[name].state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.allclose(sa[k], sb[k], atol=1e-7) for k in sa), name


def test_separate_scores_with_lora_generator(tiny_dit_cfg):
    """DMD2-separate + LoRA generator: the adapter sits on the frozen real copy, off in the real role."""
    m, teacher = _method(tiny_dit_cfg, scores="separate", alpha_weak=0.0)
    batch = toy_batch(tiny_dit_cfg)
    x, s, cond = _inputs(m, batch)
    assert isinstance(m.generator, LoRAGenerator)
    _randomise(m.generator.parameters(), 2)
    with torch.no_grad():
        base = teacher(x, s, cond)
        with m.scores.use("real") as real:
            torch.testing.assert_close(real(x, s, cond), base, atol=1e-6, rtol=0)
        assert (m.generator(x, s, cond) - base).abs().mean() > 1e-3
    g = torch.Generator().manual_seed(0)
    c, u = m.conditions(batch)
    m.generator_update(batch, m.generate(batch, g, grad=True), c, u, g)
    gen_ids = _ids(m.generator.parameters())
    assert all(p.grad is not None for p in m.generator.parameters())
    assert all(p.grad is None for p in m.backbone.parameters() if id(p) not in gen_ids)
    assert all(p.grad is None for p in m.scores.fake.parameters())


def test_distill_run_lora_generator_saves_a_plain_model(tmp_path, tiny_teacher_dir):
    cfg = DistillConfig(method="w2s", generator="lora", iters=2, batch_size=2, lora_rank=4, generator_lora_rank=4,
                        num_clips=4, log_every=1, checkpoint_every=2, sample_every=100)
    out = distill(cfg, tiny_teacher_dir, tmp_path / "run", cache_dir=tmp_path / "cache")
    meta = json.loads((out / "dit.json").read_text())
    assert meta["sampler"]["steps"] == 4 and meta["generator"] == "lora"
    saved = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    teacher = load_file(str(tiny_teacher_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert saved.keys() == teacher.keys()  # merged: no adapter tensors
    ck = load_file(str(tmp_path / "run" / "checkpoint" / "generator.safetensors"))
    assert ck and all(".lora_" in k and ".generator." in k for k in ck)
    # the generator learned (iteration 0 is a generator turn): its saved weights moved off the teacher's
    assert any((saved[k] - teacher[k]).abs().max() > 0 for k in saved)
    with pytest.raises(ValueError, match="--generator lora applies to --method w2s or dmd"):
        distill(DistillConfig.strict_update(cfg, method="lcm"), tiny_teacher_dir, tmp_path / "lcm")


@pytest.mark.slow
def test_cli_distill_generator_lora_on_the_shipped_teacher(tmp_path):
    res = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "run"), "--generator", "lora", "--iters", "2",
                                   "--batch-size", "1", "--num-clips", "4"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss_dmd"] >= 0 and rows[-1]["motion_ratio"] > 0
    assert json.loads((tmp_path / "run" / "generator" / "dit.json").read_text())["generator"] == "lora"
    bad = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "bad"), "--generator", "half"])
    assert bad.exit_code == 2 and "generator" in bad.output
