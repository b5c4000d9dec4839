"""Several processes against one on the real families' tiny diffusers folders (Wan 2.1 T2V/I2V, Wan 2.2 TI2V-5B and
A14B, HunyuanVideo T2V/I2V, HunyuanVideo-1.5 T2V/I2V): `torchrun --nproc-per-node 2 -m magicdistill distill --teacher
DIR` shards the diffusers transformer with FSDP2 (each block of its top-level block lists is a unit; A14B's two
experts both) and gives the losses and generator weights of one process with the same global batch, within
test_distributed's tolerances (measured: <= 7.2e-6 relative on the losses, HunyuanVideo's ~1e-9 loss_dmd aside, which
the 1e-9 absolute floor covers; <= 1.4e-6 on any weight of a LoRA generator, 3.2e-6 of a full copy; the update's
norm <= 1.2e-4; A14B: 9e-7 on the losses, 6.6e-7 on any weight of either expert). Wan 2.2 TI2V-5B's LoRA generator
differs more, from the same float noise magnified by Adam where its gradients are near zero (measured: 3.8e-5 on one
weight, 1.6e-3 of the update's norm, with losses within 7.2e-6): that weight is one of the few that
same_trained_weights lets exceed the weight tolerance, and the update's norm is held to 2.5e-3. On Wan 2.1 T2V a 2-process checkpoint resumes in 1 process and in 2 and ends where the
uninterrupted run does (same tolerances), and a kill -9 mid-run then `--resume` is bit-exact.
"""

from __future__ import annotations

import json
import shutil
import signal
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from real_fixtures import FRAMES, HEIGHT, WIDTH
from test_distributed import (ADAM_SPREAD, BF16_LEARNT_RTOL, BF16_RTOL, FULL_WEIGHT_ATOL, LOSS_RTOL, UPDATE_RTOL,
                              WEIGHT_ATOL, _cfg, _distill, _learnt_difference, _ok, _same_losses, _same_weights,
                              _teacher_weights, _trained_state, _weights, same_trained_weights)


def test_the_blocks_of_diffusers_transformers_are_the_fsdp_units(tmp_path):
    """Each block of a transformer's top-level block lists (Wan's ``blocks``, Hunyuan's ``transformer_blocks`` and
    ``single_transformer_blocks``, HunyuanVideo-1.5's ``transformer_blocks``) is an FSDP unit of its own (gathered
    only while it runs), then the transformer; the token refiner stays in the root. A14B: both experts so."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    from magicdistill.models.parallelize import Sharder
    from real_fixtures import _hunyuan_transformer, _wan_transformer
    from real_fixtures_hunyuan15 import _transformer as _hunyuan15_transformer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        sharder = Sharder(torch.device("cpu"), 1)
        cases = [({"transformer": _wan_transformer()}, ["blocks"]),
                 ({"transformer": _hunyuan_transformer(False)}, ["transformer_blocks", "single_transformer_blocks"]),
                 ({"transformer": _hunyuan15_transformer(True)}, ["transformer_blocks"]),
                 ({"transformer": _wan_transformer(seed=0), "transformer_2": _wan_transformer(seed=1)}, ["blocks"])]
        for experts, lists in cases:
            sharder.model(SimpleNamespace(**experts, vision=None))
            for transformer in experts.values():
                units = {name for name, m in transformer.named_modules() if isinstance(m, FSDPModule)}
                blocks = {f"{ls}.{i}" for ls in lists for i in range(len(getattr(transformer, ls)))}
                assert units == {""} | blocks and len(blocks) >= 1
                assert any("refiner" in n for n, _ in transformer.named_parameters()) == (lists[0] != "blocks")
    finally:
        dist.destroy_process_group()


ARGS = ("--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(FRAMES))


def _run(run, cache, teacher, cfg, **kw):
    return _distill(run, cache, cfg, args=("--teacher", str(teacher), *ARGS), **kw)


def _both(tmp_path, teacher, cfg):
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_run(one, tmp_path / "cache", teacher, cfg))
    _ok(_run(two, tmp_path / "cache", teacher, cfg, procs=2))
    return one, two


def _expert_2(run):
    """A14B's low-noise expert as the run wrote it."""
    return load_file(str(run / "generator" / "transformer_2" / "diffusion_pytorch_model.safetensors"))


def _moved(run, teacher) -> float:
    wt = _teacher_weights(teacher)
    return max((w - wt[k]).abs().max().item() for k, w in _weights(run).items())


WEIGHT_TOLERANCES = {"wan22-ti2v": (WEIGHT_ATOL, 2.5e-3)}  # (any weight but a few, the update's norm): see the top
KINDS = ["wan-t2v", "hunyuan-t2v", "wan-i2v", "hunyuan-i2v", "wan22-ti2v", "wan22-a14b", "hunyuan15-t2v",
         "hunyuan15-i2v"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_give_the_losses_and_weights_of_one_on_a_real_folder(tmp_path, real_folder, kind):
    teacher = real_folder(kind)
    one, two = _both(tmp_path, teacher, _cfg())
    _same_losses(one, two, LOSS_RTOL)
    _same_weights(one, two, *WEIGHT_TOLERANCES.get(kind, (WEIGHT_ATOL, UPDATE_RTOL)), teacher=teacher)
    assert _moved(one, teacher) > 100 * WEIGHT_ATOL  # the equality is not that of two untrained copies
    if kind == "wan22-a14b":  # the low-noise expert trained too (the generator's last sigmas are below the boundary)
        w1, w2 = _expert_2(one), _expert_2(two)
        wt = load_file(str(teacher / "transformer_2" / "diffusion_pytorch_model.safetensors"))
        assert w1.keys() == w2.keys() == wt.keys()
        same_trained_weights(w1, w2, WEIGHT_ATOL, ADAM_SPREAD)
        assert max((w1[k] - wt[k]).abs().max().item() for k in w1) > 100 * WEIGHT_ATOL


@pytest.mark.slow
def test_two_processes_match_one_with_a_full_generator_copy_on_a_real_folder(tmp_path, real_folder):
    teacher = real_folder("wan-t2v")
    one, two = _both(tmp_path, teacher, _cfg(generator="full", generator_every=1, lr_generator=1e-4))
    _same_losses(one, two, LOSS_RTOL)
    _same_weights(one, two, FULL_WEIGHT_ATOL, UPDATE_RTOL, teacher=teacher)
    assert _moved(one, teacher) > 10 * FULL_WEIGHT_ATOL


# --- checkpoints on a real folder (Wan 2.1 T2V): resume in 1 or 2 processes, kill -9 -------------------------------
@pytest.fixture(scope="module")
def wan(tmp_path_factory, real_folder):
    """The Wan 2.1 T2V folder, a shared cache, the uninterrupted 1-process reference and a 2-process run stopped
    at its step-2 checkpoint."""
    work = tmp_path_factory.mktemp("wan_resume")
    teacher = real_folder("wan-t2v")
    _ok(_run(work / "one", work / "cache", teacher, _cfg()))
    _ok(_run(work / "two_at_2", work / "cache", teacher, _cfg(iters=2), procs=2))
    return SimpleNamespace(work=work, teacher=teacher, one=work / "one", two_at_2=work / "two_at_2")


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_a_two_process_checkpoint_of_a_real_folder_resumes(wan, procs):
    meta = json.loads((wan.two_at_2 / "checkpoint" / "meta.json").read_text())
    assert (meta["format"], meta["processes"], meta["step"]) == ("dcp", 2, 2)
    run = wan.work / f"two_then_{procs}"
    shutil.copytree(wan.two_at_2, run)
    _ok(_run(run, wan.work / "cache", wan.teacher, _cfg(), procs=procs, resume=True))  # steps 3-4
    _same_losses(wan.one, run, LOSS_RTOL)
    _same_weights(wan.one, run, WEIGHT_ATOL, UPDATE_RTOL, teacher=wan.teacher)
    assert _moved(wan.one, wan.teacher) > 100 * WEIGHT_ATOL


@pytest.mark.slow
def test_kill_9_mid_run_on_a_real_folder_then_resume_is_bit_exact(wan):
    """One process killed in iteration 3 (the checkpoint of step 2 kept): --resume ends bit for bit where the
    uninterrupted run does."""
    run = wan.work / "killed"
    r = _run(run, wan.work / "cache", wan.teacher, _cfg(), kill=("train", 3))
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 2
    assert not (run / "generator").exists()
    _ok(_run(run, wan.work / "cache", wan.teacher, _cfg(), resume=True))
    _same_losses(wan.one, run, 0)
    _same_weights(wan.one, run, 0, teacher=wan.teacher)


@pytest.mark.slow
def test_two_processes_in_bf16_with_checkpointing_follow_one_on_a_real_folder(tmp_path, real_folder):
    """--mixed-precision bf16 --checkpointing on Wan 2.1's blocks: within test_distributed's bf16 tolerances (see
    test_two_processes_in_bf16_follow_one; measured here: losses within 3.2e-3 relative, gradient norms 3.3e-4,
    learnt adapters 0.12 (generator) and 0.018 (scores) of their norm, 6.7 % of the final weights differ).
    The share of bf16 weights whose rounding flips is a coarse measure (it moved from 3.4 % to 6.7 % when the runs'
    random draws changed, with the float32 comparisons exact throughout): bounded at 10 %; the learnt float32
    adapters are the precise check."""
    teacher = real_folder("wan-t2v")
    one, two = _both(tmp_path, teacher, _cfg(mixed_precision="bf16", checkpointing=True))
    _same_losses(one, two, BF16_RTOL)
    wa, wb = _weights(one), _weights(two)
    assert all(w.dtype == torch.bfloat16 for w in (*wa.values(), *wb.values()))
    assert sum((wa[k] != wb[k]).sum().item() for k in wa) <= 0.10 * sum(w.numel() for w in wa.values())
    ma, mb = _trained_state(one), _trained_state(two)
    for name in ("generator", "lora"):
        assert _learnt_difference(ma[name], mb[name]) <= BF16_LEARNT_RTOL, name
