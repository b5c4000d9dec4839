"""Several processes against one for teacher training: `torchrun --standalone --nproc-per-node 2 -m magicdistill train`
(FSDP2 over gloo on the CPU) gives one process's losses and trained teacher, on the tiny default and on a tiny Wan 2.1
T2V diffusers folder (`train --init-from FOLDER`); its sharded checkpoint resumes in two processes or in one and
continues like the uninterrupted run; bad input stops every process with the same one line.

Tolerance, one process against two: the two split each batch's mean and sum their gradients in another order, so
floats differ in the last bits (measured: see the constants). The tests allow ``LOSS_RTOL`` on every logged loss
and ``WEIGHT_ATOL`` on any weight of the trained (EMA) teacher but a few (test_distributed.same_trained_weights:
on another machine one cross-attention weight once differed by more, Adam making a near-zero gradient's float
noise a whole step), and check that training moved the weights by far more than that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magicdistill.config import TeacherTrainConfig
from magicdistill.pipeline import SHIPPED_DIR
from test_distributed import ENV, _ok, same_trained_weights

LOSS_RTOL = 1e-5  # loss and grad norm; measured: <= 1.6e-7 (tiny), <= 1.1e-7 (Wan 2.1)
WEIGHT_ATOL = 1e-5  # measured: <= 5e-7 (tiny), <= 1.7e-6 (Wan 2.1); training moved weights by > 1e-3
DIT = {"hidden_heads": 2, "head_dim": 16, "num_layers": 1, "num_single_layers": 1, "rope_axes_dim": (4, 6, 6),
       "image_tokens": 4}


def _cfg(**kw) -> TeacherTrainConfig:
    """4 steps of the tiny I2V teacher (condition dropout on: the dropped rows must be each process's own), a
    checkpoint every 2; a learning rate high enough for the weights to move far beyond the tolerance, all steps in
    its warm-up (so a 2-step run has the learning rates of a 4-step run's first two steps)."""
    base = dict(steps=4, batch_size=2, num_clips=8, checkpoint_every=2, sample_every=100, warmup=4, lr=1e-3,
                text_dropout=0.5, image_dropout=0.5, vae_dir=str(SHIPPED_DIR / "vae"), dit=DIT)
    return TeacherTrainConfig(**{**base, **kw})


def _train(out: Path, cache: Path, cfg: TeacherTrainConfig, *, procs: int = 1, resume: bool = False,
           args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cfg_file = out.with_name(out.name + ".json")
    cfg_file.write_text(cfg.model_dump_json())
    head = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc-per-node={procs}"]
    cmd = head + ["-m", "magicdistill", "train", "--out", str(out), "--config", str(cfg_file), "--cache-dir",
                  str(cache), *args] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder (the transformer's, and the tiny teacher's vision encoder)."""
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update({f"{f.relative_to(folder)}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def _same_run(a: Path, b: Path, steps: int) -> None:
    ra, rb = _rows(a), _rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(1, steps + 1))  # each step once
    for x, y in zip(ra, rb):
        for k in ("loss", "grad_norm", "lr"):
            assert y[k] == pytest.approx(x[k], rel=LOSS_RTOL, abs=0), (x["step"], k, x[k], y[k])
    # a weight may differ by up to about two runs' summed Adam steps where its gradient is near zero
    spread = 3 * sum(r["lr"] for r in ra)
    same_trained_weights(_weights(a / "teacher"), _weights(b / "teacher"), WEIGHT_ATOL, spread)


def _moved(run: Path, before: dict[str, torch.Tensor]) -> float:
    after = _weights(run / "teacher")
    return max((after[k] - before[k]).abs().max().item() for k in before)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dist_train")


@pytest.fixture(scope="module")
def one(work):
    """The reference: one process, 4 steps uninterrupted."""
    _ok(_train(work / "one", work / "cache", _cfg()))
    return work / "one"


@pytest.fixture(scope="module")
def two_at_2(work, one):
    """Two processes, 2 steps: a sharded checkpoint of step 2 (the cache is the reference's)."""
    _ok(_train(work / "two", work / "cache", _cfg(steps=2), procs=2))
    return work / "two"


# ------------------------------------------------------------------------------------------------- fast
def test_a_batch_the_processes_cannot_split_stops_before_anything_is_written(tmp_path, real_folder):
    """Every process checks it alike (here rank 1 of 2), for the tiny teacher and a diffusers folder."""
    from real_fixtures import FRAMES, HEIGHT, WIDTH

    from magicdistill.train.distributed import World
    from magicdistill.train.real_teacher_train import _train_real_teacher
    from magicdistill.train.teacher import _train_teacher

    with pytest.raises(ValueError, match="^--batch-size 3 is not divisible by the 2 processes"):
        _train_teacher(_cfg(batch_size=3), str(tmp_path / "a"), world=World(1, 2))
    with pytest.raises(ValueError, match="^--batch-size 3 is not divisible by the 2 processes"):
        _train_real_teacher(_cfg(batch_size=3, init_from=str(real_folder("wan-t2v"))), tmp_path / "b",
                            world=World(1, 2), height=HEIGHT, width=WIDTH, frames=FRAMES)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_trained_weight_left_whole_by_the_sharder_is_refused():
    """A weight outside the FSDP units would train on one process's rows only: refused, naming it."""
    from magicdistill.train.teacher import check_sharded

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="^0.weight of this model is not sharded over the processes"):
        check_sharded(model)
    model.requires_grad_(False)
    check_sharded(model)  # frozen weights need no averaged gradient


def test_a_process_draws_the_noise_and_dropouts_of_its_rows_of_the_global_batch(tiny_dit_cfg):
    """What makes N processes equal to one: rank 1's loss is the loss of rows 2-3 of one process's batch (its
    noise, sigmas and dropped conditions are those rows' draws), and both leave the generator in the same state."""
    from magicdistill.models.dit import VideoDiT
    from magicdistill.models.text import TextEmbedding
    from magicdistill.train.teacher import teacher_loss
    from test_teacher import _latent_set

    cfg = TeacherTrainConfig(dit=tiny_dit_cfg, batch_size=4, text_dropout=0.5, image_dropout=0.5)
    torch.manual_seed(0)
    dit = VideoDiT.tiny(tiny_dit_cfg, "i2v")
    data = _latent_set(tiny_dit_cfg)
    d = tiny_dit_cfg.text_dim
    null = TextEmbedding(torch.zeros(1, 6, d), torch.ones(1, 6, dtype=torch.bool), torch.zeros(1, d))
    g1, g2, g3 = (torch.Generator().manual_seed(7) for _ in range(3))
    with torch.no_grad():
        all_rows = teacher_loss(dit, data, torch.arange(4), null, cfg, g1)
        rank0 = teacher_loss(dit, data, torch.arange(0, 2), null, cfg, g2, slice(0, 2))
        rank1 = teacher_loss(dit, data, torch.arange(2, 4), null, cfg, g3, slice(2, 4))
    torch.testing.assert_close((rank0 + rank1) / 2, all_rows, rtol=1e-6, atol=0)
    assert not torch.isclose(rank0, rank1)  # two different halves
    assert g1.get_state().equal(g2.get_state()) and g2.get_state().equal(g3.get_state())  # in step for the next draw


# ------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_two_processes_train_the_teacher_one_process_trains(work, one, two_at_2):
    ck = two_at_2 / "checkpoint"
    assert sorted(p.name for p in ck.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.json"]
    assert json.loads((ck / "meta.json").read_text())["processes"] == 2
    assert (two_at_2 / "samples" / "step_000002.mp4").stat().st_size > 1000  # rank 0 wrote what both sampled
    run = work / "two_resumed"
    shutil.copytree(two_at_2, run)
    _ok(_train(run, work / "cache", _cfg(), procs=2, resume=True))  # steps 3-4: a 2-process resume
    _same_run(one, run, 4)
    first = _weights(two_at_2 / "teacher")  # the EMA teacher of step 2: training moved it far beyond the tolerance
    assert _moved(one, first) > 100 * WEIGHT_ATOL


@pytest.mark.slow
def test_a_two_process_teacher_checkpoint_resumes_in_one_process(work, one, two_at_2):
    run = work / "two_then_one"
    shutil.copytree(two_at_2, run)
    _ok(_train(run, work / "cache", _cfg(), resume=True))
    _same_run(one, run, 4)


@pytest.mark.slow
def test_a_batch_the_processes_cannot_split_is_one_line_on_every_process(work):
    r = _train(work / "odd", work / "cache", _cfg(batch_size=3), procs=2)
    assert r.returncode != 0
    msg = "error: --batch-size 3 is not divisible by the 2 processes"
    assert r.stderr.count(msg) == 2, r.stderr[-3000:]
    assert not (work / "odd").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wan-t2v", "wan22-a14b"])
def test_two_processes_train_a_wan_folder_as_one_process_does(tmp_path, real_folder, kind):
    """Wan 2.1, and Wan 2.2 A14B (both experts train: each row through its own sigma's expert, both sharded)."""
    from real_fixtures import FRAMES, HEIGHT, WIDTH

    folder = real_folder(kind)
    cfg = _cfg(init_from=str(folder), steps=3, checkpoint_every=3)
    args = ("--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(FRAMES))
    _ok(_train(tmp_path / "one", tmp_path / "cache", cfg, args=args))
    _ok(_train(tmp_path / "two", tmp_path / "cache", cfg, procs=2, args=args))
    _same_run(tmp_path / "one", tmp_path / "two", 3)
    experts = ["transformer", "transformer_2"] if kind == "wan22-a14b" else ["transformer"]
    for expert in experts:  # every expert trained, far beyond the tolerance
        f = f"{expert}/diffusion_pytorch_model.safetensors"
        source = {f"{f}:{k}": v for k, v in load_file(str(folder / f)).items()}
        assert _moved(tmp_path / "one", source) > 50 * WEIGHT_ATOL, expert
