"""Several processes against one: `torchrun --standalone --nproc-per-node 2 -m magicdistill distill` (FSDP2 over
gloo on the CPU, the tiny default teacher) gives one process's losses and weights; its sharded checkpoints
resume in two processes or in one, and a one-process checkpoint resumes in two; a kill -9 during training or during a checkpoint write (one process, or
two) loses at most the work since the last checkpoint and `--resume` continues exactly; a non-finite loss stops
every process naming the loss and the iteration, keeping the last good checkpoint.

Tolerance, one process against two: the two split each batch's mean and sum their gradients in another order,
so floats differ in the last bits (measured on this run: <= 1.2e-6 relative on every logged loss; the generator's
update from the teacher differs by 7.4e-5 of its norm and by <= 2.6e-6 on any weight, Adam magnifying the noise
of near-zero gradients). The tests allow ``LOSS_RTOL`` on every logged loss, ``UPDATE_RTOL`` on the norm of the
update and ``WEIGHT_ATOL`` on any weight but a few (``same_trained_weights``: a near-zero gradient's noise can
become a whole Adam step on another machine), and check that training moved the weights by far more than that.
Resumes in the same number of processes (the kill tests) are compared bit for bit.

--mixed-precision bf16 and --checkpointing under FSDP2: with checkpointing a 2-process bf16 run is the one without
(bit for bit), a 2-process bf16 run resumes bit for bit, and 2 processes follow 1 to bf16's precision (BF16_RTOL and
BF16_LEARNT_RTOL: see test_two_processes_in_bf16_follow_one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magicdistill.config import DistillConfig
from magicdistill.pipeline import SHIPPED_DIR

SRC = str(Path(__file__).parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
LOSS_RTOL = 1e-5
UPDATE_RTOL = 1e-3
WEIGHT_ATOL = 1e-5
FULL_WEIGHT_ATOL = 5e-5  # a full generator copy (see its test)
ADAM_OUTLIER_SHARE = 1e-3  # of a model's weights may lie beyond the weight tolerance (same_trained_weights) ...
ADAM_SPREAD = 1e-2  # ... within two runs' summed Adam steps (generator lr <= 1e-3, <= 4 steps, x2, rounded up)
BF16_RTOL = 3e-2  # --mixed-precision bf16: one process against two (see its test)
BF16_LEARNT_RTOL = 0.3
CHECKPOINTING_RTOL, CHECKPOINTING_ATOL = 1e-6, 1e-6  # --checkpointing against none, both in two processes
LOSSES = ("loss_fake", "loss_d", "loss_dmd", "loss_g_adv", "grad_norm_fake", "grad_norm_generator")

# in a subprocess: kill -9 this process at a chosen point, then run the CLI as usual
KILLER = '''
import os, signal, sys
mode, target = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
rank = int(os.environ.get("RANK", "0"))
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
from magicdistill.distill.w2s import W2SMethod
from magicdistill.train import checkpoint as ck, run as run_mod
if mode == "train":  # in the middle of iteration `target` (1-based), after its generator output
    real_step = W2SMethod.step
    def step(self, batch, it, g):
        if it + 1 == target:
            self.generate(batch, g, grad=False)
            die()
        return real_step(self, batch, it, g)
    W2SMethod.step = step
elif mode == "save":  # one process: after the first file of the checkpoint of step `target`
    real_save, real_file = run_mod.save_checkpoint, ck.save_file
    def save_checkpoint(path, *, modules, optimizers, meta):
        if meta["step"] == target:
            def dying(sd, f):
                real_file(sd, f)
                die()
            ck.save_file = dying
        return real_save(path, modules=modules, optimizers=optimizers, meta=meta)
    run_mod.save_checkpoint = save_checkpoint
elif mode == "save_sharded":  # two processes: rank 1 dies as the shards of step `target` are being written
    import torch.distributed.checkpoint as dcp
    real_sharded, real_dcp_save = run_mod.save_sharded, dcp.save
    def save_sharded(path, world, *, modules, optimizers, meta):
        if meta["step"] == target:
            def dying(*a, **k):
                if rank == 1:
                    die()
                return real_dcp_save(*a, **k)
            dcp.save = dying
        return real_sharded(path, world, modules=modules, optimizers=optimizers, meta=meta)
    run_mod.save_sharded = save_sharded
from magicdistill.cli import main
main()
'''


# in a subprocess: count the transformer blocks run under torch.utils.checkpoint and their runs (a recomputation is a
# second run), written per process to the file given, then run the CLI as usual
# written as it counts: a finished torchrun process ends without atexit handlers (train/process_end.py)
RECOMPUTE_COUNTER = '''
import json, os, sys
out = sys.argv.pop(1)
import magicdistill.distill.memory as memory
real, count = memory.checkpoint, {"checkpointed": 0, "runs": 0}
def save():
    with open(f"{out}.{os.environ.get('RANK', '0')}", "w") as f:
        f.write(json.dumps(count))
def checkpoint(fn, *args, **kw):
    count["checkpointed"] += 1
    def counted(*a):
        count["runs"] += 1
        save()
        return fn(*a)
    save()
    return real(counted, *args, **kw)
memory.checkpoint = checkpoint
from magicdistill.cli import main
main()
'''


def _cfg(**kw) -> DistillConfig:
    """4 iterations of W2S with a LoRA generator learning fast enough (and no EMA lag) for its weights to move
    far beyond the tolerance; a checkpoint every 2 iterations."""
    base = dict(method="w2s", iters=4, batch_size=2, lora_rank=4, num_clips=8, log_every=1, checkpoint_every=2,
                sample_every=100, generator="lora", generator_every=2, lr_generator=1e-3, ema_decay=0.0)
    return DistillConfig(**{**base, **kw})


def _distill(out: Path, cache: Path, cfg: DistillConfig, *, procs: int = 1, resume: bool = False,
             kill: tuple[str, int] | None = None, args: tuple[str, ...] = (),
             count_recompute: Path | None = None) -> subprocess.CompletedProcess:
    """``args``: further CLI flags (e.g. ``--teacher DIR`` and its clip size). ``count_recompute``: write the counts
    of checkpointed blocks to this path (+ ``.RANK``)."""
    cfg_file = out.with_name(out.name + ".json")
    cfg_file.write_text(cfg.model_dump_json())
    head = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc-per-node={procs}"]
    if kill:
        script = out.with_name("killer.py")
        script.write_text(KILLER)
        body = [str(script), kill[0], str(kill[1])]
    elif count_recompute:
        script = out.with_name("recompute_counter.py")
        script.write_text(RECOMPUTE_COUNTER)
        body = [str(script), str(count_recompute)]
    else:
        body = ["-m", "magicdistill"]
    cmd = head + body + ["distill", "--out", str(out), "--config", str(cfg_file), "--cache-dir", str(cache), *args]
    return subprocess.run(cmd + (["--resume"] if resume else []), env=ENV, capture_output=True, text=True,
                          timeout=900)


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def _rows(run: Path) -> list[dict]:
    """The iterations' rows (not those of the samples written at a run's last iteration)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss_fake" in r]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "generator" / "transformer" / "diffusion_pytorch_model.safetensors"))


def _same_losses(a: Path, b: Path, rtol: float) -> None:
    ra, rb = _rows(a), _rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4]  # each step once (rank 0 logs)
    for x, y in zip(ra, rb):
        keys = [k for k in LOSSES if k in x]
        assert keys and keys == [k for k in LOSSES if k in y]
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=rtol, abs=0 if rtol == 0 else 1e-9), (x["step"], k, x[k], y[k])


def same_trained_weights(wa: dict[str, torch.Tensor], wb: dict[str, torch.Tensor], atol: float, spread: float) -> None:
    """Two runs' trained weights agree: every weight within ``atol`` but for at most ``ADAM_OUTLIER_SHARE`` of them,
    which stay within ``spread`` (about two runs' summed Adam steps). Adam divides each gradient by its own running
    size, so where a gradient is near zero (e.g. cross-attention queries over near-identical padded text keys) the
    last-bit noise of another summation order becomes a whole step of either sign; a broken data-parallel step
    moves every weight instead. ``atol`` 0: bit for bit, no exception."""
    assert wa.keys() == wb.keys() and wa
    if atol == 0:
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=0, rtol=0, msg=k)
        return
    beyond = 0
    for k in wa:
        d = (wb[k].float() - wa[k].float()).abs()
        assert d.max().item() <= spread, (k, d.max().item(), spread)
        beyond += int((d > atol).sum())
    total = sum(v.numel() for v in wa.values())
    assert beyond <= ADAM_OUTLIER_SHARE * total, f"{beyond} of {total} weights differ by more than {atol}"


def _same_weights(a: Path, b: Path, atol: float, update_rtol: float = 0.0,
                  teacher: Path = SHIPPED_DIR / "teacher") -> None:
    wa, wb, wt = _weights(a), _weights(b), _teacher_weights(teacher)
    same_trained_weights(wa, wb, atol, ADAM_SPREAD)
    da = torch.cat([(wa[k] - wt[k]).flatten() for k in wa])
    db = torch.cat([(wb[k] - wt[k]).flatten() for k in wa])
    assert (db - da).norm() <= update_rtol * da.norm()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def one(work):
    """The reference: one process, 4 iterations uninterrupted."""
    _ok(_distill(work / "one", work / "cache", _cfg()))
    return work / "one"


@pytest.fixture(scope="module")
def two_at_2(work, one):
    """Two processes, 2 iterations: a sharded checkpoint of step 2 (the cache is the reference's)."""
    _ok(_distill(work / "two", work / "cache", _cfg(iters=2), procs=2))
    return work / "two"


# ------------------------------------------------------------------------------------------------- fast
def test_each_process_takes_an_equal_slice_of_the_global_batch():
    from magicdistill.train.distributed import World

    assert [World(r, 2).rows(4) for r in range(2)] == [slice(0, 2), slice(2, 4)]
    assert World().rows(3) == slice(0, 3)
    with pytest.raises(ValueError, match="--batch-size 3 is not divisible by the 2 processes"):
        World(1, 2).rows(3)


def test_a_process_draws_the_noise_of_its_rows_of_the_global_batch(tiny_dit_cfg):
    """What makes N processes equal to one: rank 1's sigmas and noise are rows 2-3 of one process's."""
    from magicdistill.distill.w2s import W2SMethod
    from magicdistill.models.dit import VideoDiT

    cfg = DistillConfig(method="w2s", batch_size=4, lora_rank=4)
    one = W2SMethod(VideoDiT.tiny(tiny_dit_cfg), cfg)
    rank1 = W2SMethod(VideoDiT.tiny(tiny_dit_cfg), cfg, rows=slice(2, 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(2):  # the generators stay in step: both drew the whole batch's numbers
        torch.testing.assert_close(rank1._draw(torch.randn, (2, 3, 2), g2), one._draw(torch.randn, (4, 3, 2), g1)[2:],
                                   atol=0, rtol=0)
        torch.testing.assert_close(rank1._fake_sigma(2, g2, "cpu"), one._fake_sigma(4, g1, "cpu")[2:], atol=0, rtol=0)


def test_a_trainer_not_built_for_several_processes_refuses_torchrun(tmp_path, monkeypatch):
    """`train-vae` (and the other trainers not built for it) under torchrun would have every process write the whole run."""
    from magicdistill.train.run import Run

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="this command runs in one process; .*start it without torchrun"):
        Run(tmp_path / "run", DistillConfig())
    assert not (tmp_path / "run").exists()


def test_sharded_bf16_keeps_frozen_shards_bf16_and_trained_shards_float32(tiny_dit_cfg, tmp_path):
    """--mixed-precision bf16 under FSDP2 (one process's group here; the 2-process runs are the slow tests): the frozen
    backbone's shards are bf16, the LoRAs' float32, in the same block units; a checkpointed, autocast step
    gathers and reduces them and the generator's masters move and stay float32."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    from magicdistill.distill.memory import autocast
    from magicdistill.distill.w2s import W2SMethod
    from magicdistill.models.dit import VideoDiT
    from magicdistill.models.parallelize import Sharder
    from toys import toy_batch

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cfg = DistillConfig(method="w2s", lora_rank=4, generator="lora", generator_lora_rank=4, mixed_precision="bf16",
                            checkpointing=True, lr_generator=1e-3)
        method = W2SMethod(VideoDiT.tiny(tiny_dit_cfg), cfg, sharder=Sharder(torch.device("cpu"), 1))
        transformer = method.backbone.transformer
        assert transformer.gradient_checkpointing
        block = transformer.transformer_blocks[0]
        assert isinstance(block, FSDPModule)
        dtypes = {n: (type(p).__name__, p.to_local().dtype) for n, p in block.named_parameters()}
        assert {d for n, d in dtypes.items() if ".lora_" not in n} == {("DTensor", torch.bfloat16)}
        assert {d for n, d in dtypes.items() if ".lora_" in n} == {("DTensor", torch.float32)}
        before = [p.to_local().clone() for p in method.generator.parameters()]
        with autocast(cfg, "cpu"):
            metrics = method.step(toy_batch(tiny_dit_cfg), 0, torch.Generator().manual_seed(0))
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
        after = [p.to_local() for p in method.generator.parameters()]
        assert all(p.dtype == torch.float32 for p in after) and any(not torch.equal(a, b) for a, b in zip(after, before))
    finally:
        dist.destroy_process_group()


def _toy():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.randn(4, 3)).square().mean().backward()
    opt.step()
    return m, opt


def test_sharded_checkpoint_in_one_process_round_trips_and_survives_a_killed_save(tmp_path):
    """Without a process group DCP writes one shard; loading restores weights, AdamW state and the RNG exactly.
    A save killed after its shards were written (never swapped in) leaves the previous checkpoint loadable."""
    from magicdistill.train.distributed import World
    from magicdistill.train.sharded_checkpoint import is_sharded, load_sharded, save_sharded

    m, opt = _toy()
    path = tmp_path / "checkpoint"
    save_sharded(path, World(), modules={"m": m}, optimizers={"m": opt}, meta={"step": 3})
    assert is_sharded(path) and json.loads((path / "meta.json").read_text())["processes"] == 1
    rng = torch.get_rng_state()
    torch.randn(10)
    m2, opt2 = torch.nn.Linear(3, 2), None
    opt2 = torch.optim.AdamW(m2.parameters(), lr=0.5)
    assert load_sharded(path, modules={"m": m2}, optimizers={"m": opt2})["step"] == 3
    assert torch.equal(torch.get_rng_state(), rng)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[a][k], opt2.state[b][k])
    assert opt2.param_groups[0]["lr"] == 0.1
    # a later save dies before its swap: the tmp folder holds complete shards but no meta.json
    import magicdistill.train.sharded_checkpoint as sc

    with torch.no_grad():
        m.weight.add_(1.0)
    real = sc.swap_in
    sc.swap_in = lambda tmp, dst: (_ for _ in ()).throw(KeyboardInterrupt)  # stands for the kill
    try:
        with pytest.raises(KeyboardInterrupt):
            save_sharded(path, World(), modules={"m": m}, optimizers={"m": opt}, meta={"step": 4})
    finally:
        sc.swap_in = real
    assert (tmp_path / "checkpoint.tmp").is_dir()
    m3 = torch.nn.Linear(3, 2)
    assert load_sharded(path, modules={"m": m3}, optimizers={})["step"] == 3
    assert torch.equal(m3.weight, m2.weight)


def test_a_damaged_sharded_checkpoint_is_a_one_line_error(tmp_path):
    from magicdistill.train.distributed import World
    from magicdistill.train.sharded_checkpoint import load_sharded, save_sharded

    m, opt = _toy()
    save_sharded(tmp_path / "ck", World(), modules={"m": m}, optimizers={"m": opt}, meta={"step": 1})
    (tmp_path / "ck" / "__0_0.distcp").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"checkpoint .*ck is damaged or does not fit this run .*use a new --out"):
        load_sharded(tmp_path / "ck", modules={"m": torch.nn.Linear(3, 2)}, optimizers={})


# ------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_two_processes_give_the_losses_and_weights_of_one(work, one, two_at_2):
    ck = two_at_2 / "checkpoint"
    assert sorted(p.name for p in ck.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.json"]
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["format"] == "dcp" and meta["processes"] == 2 and meta["step"] == 2
    run = work / "two_resumed"
    shutil.copytree(two_at_2, run)
    _ok(_distill(run, work / "cache", _cfg(), procs=2, resume=True))  # steps 3-4: a 2-process resume
    _same_losses(one, run, LOSS_RTOL)
    _same_weights(one, run, WEIGHT_ATOL, UPDATE_RTOL)
    moved = max((w - t).abs().max().item() for w, t in zip(_weights(one).values(), _teacher_weights().values()))
    assert moved > 100 * WEIGHT_ATOL  # the equality is not that of two untrained copies
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["iter_000002.mp4", "iter_000004.mp4"]


@pytest.mark.slow
def test_two_processes_match_one_with_a_full_generator_copy(work, one):
    """The other memory layout: a full trainable generator copy and its EMA copy, both sharded (the generator
    learns every iteration); the final model is gathered from the shards."""
    cfg = _cfg(generator="full", iters=2, generator_every=1, lr_generator=1e-4)
    _ok(_distill(work / "full_one", work / "cache", cfg))
    _ok(_distill(work / "full_two", work / "cache", cfg, procs=2))
    a, b = _rows(work / "full_one"), _rows(work / "full_two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        for k in [k for k in LOSSES if k in x]:
            assert y[k] == pytest.approx(x[k], rel=LOSS_RTOL), (x["step"], k)
    # every weight of the copy trains, so more of them sit at near-zero gradients where Adam's step is nearly
    # lr * sign(g): single weights differ by up to 1.3e-5 (measured; lr 1e-4), the update's norm by 1e-4
    _same_weights(work / "full_one", work / "full_two", FULL_WEIGHT_ATOL, UPDATE_RTOL)
    vision = [load_file(str(work / r / "generator" / "vision.safetensors")) for r in ("full_one", "full_two")]
    for k in vision[0]:
        torch.testing.assert_close(vision[1][k], vision[0][k], atol=FULL_WEIGHT_ATOL, rtol=0)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(work, one, two_at_2):
    run = work / "two_then_one"
    shutil.copytree(two_at_2, run)
    _ok(_distill(run, work / "cache", _cfg(), resume=True))
    _same_losses(one, run, LOSS_RTOL)
    _same_weights(one, run, WEIGHT_ATOL, UPDATE_RTOL)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_in_two_processes(work, one):
    run = work / "one_then_two"
    _ok(_distill(run, work / "cache", _cfg(iters=2)))
    assert not json.loads((run / "checkpoint" / "meta.json").read_text()).get("format")  # safetensors files
    _ok(_distill(run, work / "cache", _cfg(), procs=2, resume=True))
    _same_losses(one, run, LOSS_RTOL)
    _same_weights(one, run, WEIGHT_ATOL, UPDATE_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [("train", 3), ("save", 4)])
def test_kill_9_then_resume_is_bit_exact(work, one, kill):
    """One process, killed in iteration 3 (checkpoint of step 2 kept), or while writing the checkpoint of step
    4 (the one of step 2 stays whole): --resume ends exactly where the uninterrupted run does."""
    run = work / f"killed_{kill[0]}"
    r = _distill(run, work / "cache", _cfg(), kill=kill)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 2
    assert not (run / "generator").exists()
    _ok(_distill(run, work / "cache", _cfg(), resume=True))
    _same_losses(one, run, 0)
    _same_weights(one, run, 0)


@pytest.mark.slow
def test_kill_9_during_a_sharded_checkpoint_write_keeps_the_previous_one(work, one):
    run = work / "killed_sharded"
    r = _distill(run, work / "cache", _cfg(), procs=2, kill=("save_sharded", 4))
    assert r.returncode != 0
    assert (run / "checkpoint.tmp").is_dir()  # the interrupted write, never swapped in
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 2
    _ok(_distill(run, work / "cache", _cfg(), resume=True))  # and in one process
    assert not (run / "checkpoint.tmp").exists()
    _same_losses(one, run, LOSS_RTOL)
    _same_weights(one, run, WEIGHT_ATOL, UPDATE_RTOL)


@pytest.mark.slow
def test_non_finite_loss_stops_every_process_and_keeps_the_last_checkpoint(work, one):
    from magicdistill.train.checkpoint import has_checkpoint

    run = work / "diverged"
    r = _distill(run, work / "cache", _cfg(lr_fake=1e38, checkpoint_every=1), procs=2)
    assert r.returncode != 0
    msg = "non-finite loss_fake = nan at iteration 2: stopped, nothing saved from it; kept the checkpoint of step 1"
    assert r.stderr.count(msg) == 2, r.stderr[-3000:]  # both processes stop at the same point, saying why
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 1 and has_checkpoint(run / "checkpoint")
    assert not (run / "generator").exists()
    _ok(_distill(run, work / "cache", _cfg(lr_fake=1e38, checkpoint_every=1, iters=1), resume=True))  # loadable


# ------------------------------------------------------------------------- bf16 and checkpointing (slow)
@pytest.fixture(scope="module")
def bf16_one(work):
    _ok(_distill(work / "bf16_one", work / "cache", _cfg(mixed_precision="bf16")))
    return work / "bf16_one"


@pytest.fixture(scope="module")
def bf16_two(work):
    _ok(_distill(work / "bf16_two", work / "cache", _cfg(mixed_precision="bf16"), procs=2))
    return work / "bf16_two"


def _trained_state(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The last checkpoint's modules (the generator's and the scores' trained tensors, float32 masters under bf16),
    from a one-process checkpoint's safetensors files or a sharded one's DCP files (read here, in one process)."""
    ck = run / "checkpoint"
    if not json.loads((ck / "meta.json").read_text()).get("format"):
        return {f.stem: load_file(str(f)) for f in ck.glob("*.safetensors") if not f.stem.startswith("optim_")}
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    whole = run.with_name(run.name + ".checkpoint.pt")
    dcp_to_torch_save(str(ck), str(whole))
    return torch.load(whole, weights_only=True)["model"]


def _learnt_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|b - a| / |a| over the adapters' B matrices (zero at the start: what was learnt)."""
    keys = [k for k in a if ".lora_B." in k]
    da, db = (torch.cat([x[k].flatten() for k in keys]) for x in (a, b))
    assert keys and da.norm() > 0
    return ((db - da).norm() / da.norm()).item()


@pytest.mark.slow
def test_two_processes_in_bf16_follow_one(work, one, bf16_one, bf16_two):
    """--mixed-precision bf16 under FSDP2: bf16 frozen shards, float32 masters. bf16 rounding depends on the shapes
    each process computes (a batch of 1 per process against 2 in one), so the runs agree to bf16's precision, not
    to float32's: losses and gradient norms within BF16_RTOL (measured <= 3.3e-3 on the losses, 1.4e-2 on the
    gradient norms, already 2.2e-3 at step 1, before any weight differs). Adam's first steps are nearly
    lr * sign(gradient), so the rounding flips the steps of near-zero gradients: the learnt adapters (their B,
    zero at the start) agree within BF16_LEARNT_RTOL of their norm (measured 0.13 for the generator's, 0.06 for
    the scores'); the final bf16 generators differ in at most 5 % of their weights (measured 2.2 %)."""
    _same_losses(bf16_one, bf16_two, BF16_RTOL)
    wa, wb = _weights(bf16_one), _weights(bf16_two)
    assert wa.keys() == wb.keys()
    assert all(w.dtype == torch.bfloat16 for w in (*wa.values(), *wb.values()))  # the adapter merged into bf16
    differ = sum((wa[k] != wb[k]).sum().item() for k in wa)
    assert differ <= 0.05 * sum(w.numel() for w in wa.values())
    ma, mb = _trained_state(bf16_one), _trained_state(bf16_two)
    assert all(t.dtype == torch.float32 for t in (*mb["generator"].values(), *mb["lora"].values()))
    for name in ("generator", "lora"):
        assert _learnt_difference(ma[name], mb[name]) <= BF16_LEARNT_RTOL, name
    # bf16 did run in the two processes: their first losses are float32's to bf16's precision, not float's
    fp32, bf16 = _rows(one)[0], _rows(bf16_two)[0]
    assert max(abs(bf16[k] / fp32[k] - 1) for k in LOSSES if k in fp32) > 10 * LOSS_RTOL


@pytest.mark.slow
def test_checkpointing_under_fsdp_changes_nothing(work, bf16_two):
    """--checkpointing with FSDP2 (and bf16): every block runs under torch.utils.checkpoint and is recomputed in the
    backward pass under its forward pass's adapter role; the run is the one without (measured: bit for bit)."""
    run, counts = work / "bf16_two_checkpointing", work / "recompute"
    _ok(_distill(run, work / "cache", _cfg(mixed_precision="bf16", checkpointing=True), procs=2,
                 count_recompute=counts))
    for rank in (0, 1):
        count = json.loads(Path(f"{counts}.{rank}").read_text())
        assert count["checkpointed"] > 0 and count["runs"] > count["checkpointed"], count  # recomputed
    _same_losses(bf16_two, run, CHECKPOINTING_RTOL)
    ma, mb = _trained_state(bf16_two), _trained_state(run)
    for name in ("generator", "lora", "head"):
        for k in ma[name]:
            torch.testing.assert_close(mb[name][k], ma[name][k], atol=CHECKPOINTING_ATOL, rtol=0, msg=k)


@pytest.fixture(scope="module")
def bf16_two_at_2(work):
    """A 2-process bf16 run stopped at its checkpoint of step 2 (DCP: float32 masters, AdamW states)."""
    run = work / "bf16_two_at_2"
    _ok(_distill(run, work / "cache", _cfg(mixed_precision="bf16", iters=2), procs=2))
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 2
    return run


@pytest.mark.slow
def test_a_two_process_bf16_run_resumes_exactly(work, bf16_two, bf16_two_at_2):
    """The 2-process bf16 checkpoint of step 2 resumed in 2 processes ends bit for bit where the uninterrupted run
    does (the bf16 backbone is the teacher's, cast again)."""
    run = work / "bf16_resumed"
    shutil.copytree(bf16_two_at_2, run)
    _ok(_distill(run, work / "cache", _cfg(mixed_precision="bf16"), procs=2, resume=True))
    _same_losses(bf16_two, run, 0)
    wa, wb = _weights(bf16_two), _weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = _trained_state(bf16_two), _trained_state(run)
    assert all(torch.equal(ma[n][k], mb[n][k]) for n in ma for k in ma[n])


@pytest.mark.slow
def test_a_two_process_bf16_checkpoint_resumes_in_one_process(work, bf16_one, bf16_two, bf16_two_at_2):
    """The 2-process bf16 checkpoint of step 2 resumed in one process: its float32 masters and AdamW states load
    unsharded, the backbone is cast to bf16 again, and steps 3-4 follow the one-process bf16 run to bf16's precision
    (the tolerances of test_two_processes_in_bf16_follow_one), while steps 1-2 stay the 2-process run's."""
    run = work / "bf16_two_then_one"
    shutil.copytree(bf16_two_at_2, run)
    _ok(_distill(run, work / "cache", _cfg(mixed_precision="bf16"), resume=True))
    kept = [[r.get(k) for k in ("step", *LOSSES)] for r in _rows(run)[:2]]
    assert kept == [[r.get(k) for k in ("step", *LOSSES)] for r in _rows(bf16_two)[:2]]  # the checkpoint's steps
    _same_losses(bf16_one, run, BF16_RTOL)
    ma, mb = _trained_state(bf16_one), _trained_state(run)
    assert not json.loads((run / "checkpoint" / "meta.json").read_text()).get("format")  # one process wrote it
    assert all(t.dtype == torch.float32 for t in (*mb["generator"].values(), *mb["lora"].values()))
    for name in ("generator", "lora"):
        assert _learnt_difference(ma[name], mb[name]) <= BF16_LEARNT_RTOL, name
    wa, wb = _weights(bf16_one), _weights(run)
    assert all(w.dtype == torch.bfloat16 for w in wb.values())
    assert sum((wa[k] != wb[k]).sum().item() for k in wa) <= 0.05 * sum(w.numel() for w in wa.values())


@pytest.mark.slow
def test_two_processes_match_one_with_separate_scores(work):
    """DMD2 as published (--scores separate: a frozen real copy, a fully trained fake copy, here with a LoRA
    generator on the real copy): both copies sharded, 2 processes give 1's losses, generator and fake copy. The fake
    copy's gradient norm sums every weight's gradient: 1.1e-5 relative apart at step 4 (measured),
    so this test allows 5e-5 on the logged numbers (measured otherwise: weights 2.0e-6, the update's norm 1.1e-4,
    the fake copy 2.3e-6)."""
    cfg = _cfg(method="dmd", scores="separate")
    _ok(_distill(work / "separate_one", work / "cache", cfg))
    _ok(_distill(work / "separate_two", work / "cache", cfg, procs=2))
    _same_losses(work / "separate_one", work / "separate_two", 5 * LOSS_RTOL)
    _same_weights(work / "separate_one", work / "separate_two", WEIGHT_ATOL, UPDATE_RTOL)
    fa, fb = (_trained_state(work / r)["fake"] for r in ("separate_one", "separate_two"))
    assert fa.keys() == fb.keys() and len(fa) > 10
    for k in fa:
        torch.testing.assert_close(fb[k], fa[k], atol=FULL_WEIGHT_ATOL, rtol=0, msg=k)


def _teacher_weights(teacher: Path = SHIPPED_DIR / "teacher") -> dict[str, torch.Tensor]:
    return load_file(str(teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
