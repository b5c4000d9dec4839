"""LCM, CFG distillation and the Euler baseline under `torchrun --nproc-per-node 2` (FSDP2 over gloo on the CPU, the
tiny default teacher, and LCM and CFG on a tiny Wan 2.1 T2V folder): two processes give one process's losses and
final weights with the same global batch; a 2-process LCM checkpoint resumes in two processes and in one;
`--method euler` writes the same model folder.

Tolerance, one process against two (the same float-order noise as W2S's, tests/test_distributed.py): the logged
losses within ``LOSS_RTOL`` relative, any final weight within ``WEIGHT_ATOL`` but a few
(test_distributed.same_trained_weights), the norm of the generator's update
from the teacher within ``UPDATE_RTOL``; the weights move by far more than ``WEIGHT_ATOL``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from magicdistill.config import DistillConfig
from magicdistill.pipeline import SHIPPED_DIR
from test_distributed import ADAM_SPREAD, _distill, _ok, _teacher_weights, _weights, same_trained_weights
from toys import toy_batch

LOSS_RTOL = 5e-5  # measured: <= 1.4e-5 (LCM; its loss is ~1e-4, a difference of near-equal x0s)
WEIGHT_ATOL = 3e-4  # measured: <= 1.1e-4 (every weight of the copy trains at lr 1e-3: Adam magnifies near-zero gradients)
UPDATE_RTOL = 1e-3  # measured: <= 1.4e-4
METRICS = {"lcm": ("loss_lcm", "grad_norm_generator"), "cfg": ("loss_cfg", "loss_base", "grad_norm_generator")}


def _cfg(method: str, **kw) -> DistillConfig:
    """4 iterations of a full student copy learning fast enough to move far beyond the tolerance; an EMA that
    lags (LCM's target network, checkpointed and sharded like the student); a checkpoint every 2 iterations."""
    base = dict(method=method, iters=4, batch_size=2, num_clips=8, log_every=1, checkpoint_every=2,
                sample_every=100, lr_generator=1e-3, ema_decay=0.5)
    return DistillConfig(**{**base, **kw})


def _rows(run: Path, method: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if METRICS[method][0] in r]


def _same_run(a: Path, b: Path, method: str, iters: int = 4, teacher: Path = SHIPPED_DIR / "teacher") -> None:
    ra, rb = _rows(a, method), _rows(b, method)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(1, iters + 1))  # each step once
    for x, y in zip(ra, rb):
        keys = [k for k in METRICS[method] if k in x]  # CFG at a fixed guidance scale logs no loss_base
        assert keys == [k for k in METRICS[method] if k in y]
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=LOSS_RTOL), (x["step"], k, x[k], y[k])
    wa, wb, wt = _weights(a), _weights(b), _teacher_weights(teacher)
    same_trained_weights(wa, wb, WEIGHT_ATOL, ADAM_SPREAD)
    common = [k for k in wa if k in wt]  # CFG's student also has a guidance embedder the teacher lacks
    da = torch.cat([(wa[k] - wt[k]).flatten() for k in common])
    db = torch.cat([(wb[k] - wt[k]).flatten() for k in common])
    assert (db - da).norm() <= UPDATE_RTOL * da.norm()
    assert da.abs().max() > 5 * WEIGHT_ATOL  # the equality is not that of two untrained copies


# ------------------------------------------------------------------------------------------------- fast
def _slice(batch, rows: slice):
    from magicdistill.distill.w2s import DistillBatch
    from magicdistill.models.text import TextEmbedding

    text = lambda t: TextEmbedding(t.tokens[rows], t.mask[rows], t.pooled[rows])  # noqa: E731
    return DistillBatch(batch.x_gt[rows], text(batch.text), text(batch.null_text), batch.image[rows],
                        batch.image_latent[rows])


@pytest.mark.parametrize("method", ["lcm", "cfg"])
def test_two_processes_rows_average_to_one_process_loss(tiny_dit_cfg, method):
    """What makes N processes equal to one, without processes: each of two methods given its row of the global
    batch draws that row's noise, sigmas (and guidance scales), so the mean of their losses is one method's."""
    from magicdistill.distill.trainer import build_method
    from magicdistill.models.dit import VideoDiT

    cfg = DistillConfig(method=method, batch_size=2, lcm_teacher_steps=8)
    batch = toy_batch(tiny_dit_cfg)

    def loss(rows):
        torch.manual_seed(0)  # the same teacher (and CFG's guidance embedder) for each
        m = build_method(VideoDiT.tiny(tiny_dit_cfg, "i2v"), cfg, rows=rows)
        metrics = m.step(batch if rows is None else _slice(batch, rows), 0, torch.Generator().manual_seed(3))
        return torch.tensor([metrics[k] for k in METRICS[method] if k.startswith("loss")])

    one, halves = loss(None), (loss(slice(0, 1)) + loss(slice(1, 2))) / 2
    torch.testing.assert_close(halves, one, rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dist_methods")


@pytest.mark.slow
def test_lcm_two_processes_match_one_and_its_checkpoint_resumes_in_two_and_in_one(work):
    one = work / "lcm_one"
    _ok(_distill(one, work / "cache", _cfg("lcm")))
    two = work / "lcm_two"
    _ok(_distill(two, work / "cache", _cfg("lcm", iters=2), procs=2))
    meta = json.loads((two / "checkpoint" / "meta.json").read_text())
    assert meta["format"] == "dcp" and meta["processes"] == 2 and meta["step"] == 2
    assert sorted(p.name for p in (two / "checkpoint").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    then_one = work / "lcm_two_then_one"
    shutil.copytree(two, then_one)
    _ok(_distill(two, work / "cache", _cfg("lcm"), procs=2, resume=True))  # steps 3-4 in two processes
    _same_run(one, two, "lcm")
    _ok(_distill(then_one, work / "cache", _cfg("lcm"), resume=True))  # steps 3-4 in one process
    _same_run(one, then_one, "lcm")


@pytest.mark.slow
def test_cfg_two_processes_match_one(work):
    """The student has a guidance embedder the teacher lacks: sharded too, and the gathered final model has it."""
    one, two = work / "cfg_one", work / "cfg_two"
    _ok(_distill(one, work / "cache", _cfg("cfg")))
    _ok(_distill(two, work / "cache", _cfg("cfg"), procs=2))
    assert "time_text_embed.guidance_embedder.linear_2.weight" in _weights(two)
    _same_run(one, two, "cfg")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lcm", "cfg"])
def test_two_processes_match_one_on_a_real_folder(tmp_path, real_folder, method):
    """On a tiny Wan 2.1 T2V diffusers folder (`--teacher DIR`): the student copy of its transformer (CFG's with the
    guidance embedder it adds) sharded by the folder's blocks, 2 processes give 1's losses and student."""
    from real_fixtures import FRAMES, HEIGHT, WIDTH

    teacher = real_folder("wan-t2v")
    args = ("--teacher", str(teacher), "--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(FRAMES))
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_distill(one, tmp_path / "cache", _cfg(method), args=args))
    _ok(_distill(two, tmp_path / "cache", _cfg(method), procs=2, args=args))
    _same_run(one, two, method, teacher=teacher)


@pytest.mark.slow
def test_euler_under_torchrun_writes_the_folder_of_one_process(work):
    one, two = work / "euler_one", work / "euler_two"
    _ok(_distill(one, work / "cache", _cfg("euler")))
    r = _distill(two, work / "cache", _cfg("euler"), procs=2)
    _ok(r)
    assert r.stdout.count(str(two / "generator")) == 1  # rank 0 wrote it (and said so), once
    files = lambda run: sorted(p.relative_to(run) for p in (run / "generator").rglob("*") if p.is_file())  # noqa: E731
    assert files(one) == files(two) and len(files(one)) >= 3
    for f in files(one):
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
