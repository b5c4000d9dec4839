"""Checkpoints: exact round trip of model + optimizer, atomic replacement, clear errors."""

import pytest
import torch

from magicdistill.train.checkpoint import load_checkpoint, save_checkpoint
from magicdistill.train.ema import EMA


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    return m, torch.optim.AdamW(m.parameters(), lr=1e-2)


def _train(m, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        loss = (m(x) - x[:, :2]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_is_exact(tmp_path):
    m, opt = _model_and_opt()
    _train(m, opt, 5, seed=1)
    save_checkpoint(tmp_path / "ck", modules={"m": m}, optimizers={"m": opt}, meta={"step": 5})
    _train(m, opt, 5, seed=2)
    m2, opt2 = _model_and_opt(seed=123)
    meta = load_checkpoint(tmp_path / "ck", modules={"m": m2}, optimizers={"m": opt2})
    assert meta["step"] == 5
    _train(m2, opt2, 5, seed=2)
    for a, b in zip(m.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_save_replaces_atomically_and_errors(tmp_path):
    m, opt = _model_and_opt()
    save_checkpoint(tmp_path / "ck", modules={"m": m}, meta={"step": 1})
    save_checkpoint(tmp_path / "ck", modules={"m": m}, meta={"step": 2})
    assert load_checkpoint(tmp_path / "ck", modules={"m": m})["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no .tmp/.old left behind
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(ValueError, match="no 'other' weights"):
        load_checkpoint(tmp_path / "ck", modules={"other": m})


def test_ema_tracks_average():
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    assert ema.shadow.weight.item() == pytest.approx(0.5)
    ema.update(m)
    assert ema.shadow.weight.item() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        EMA(m, decay=1.0)


def test_resume_accepts_a_config_written_before_a_defaulted_field_existed(tmp_path):
    """A run folder written by an older version lacks fields added since; with their defaults they are no change."""
    import json

    from magicdistill.config import TeacherTrainConfig
    from magicdistill.train.run import Run

    cfg = TeacherTrainConfig()
    run = Run(tmp_path / "run", cfg)
    save_checkpoint(run.checkpoint_dir, modules={"m": torch.nn.Linear(2, 2)}, meta={"step": 1})
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["dit"]["image_padding"], saved["warmup"]  # as an older version wrote it
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    Run(tmp_path / "run", cfg, resume=True)
    with pytest.raises(ValueError, match="differs .* in dit"):  # a real change is still refused
        Run(tmp_path / "run", TeacherTrainConfig(dit={"image_padding": "repeat"}), resume=True)


def test_lr_schedule_resumes_at_the_checkpoint_step_without_warnings(tmp_path):
    import warnings

    from magicdistill.train.run import lr_schedule

    factor = lambda s: 1.0 / (1 + s)  # noqa: E731

    def lrs(opt, sched, steps):
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    m, opt = _model_and_opt()
    full = lrs(opt, lr_schedule(opt, factor), 6)
    assert full == pytest.approx([1e-2 / (1 + s) for s in range(6)])
    m, opt = _model_and_opt()
    sched = lr_schedule(opt, factor)
    lrs(opt, sched, 3)
    save_checkpoint(tmp_path / "ck", modules={"m": m}, optimizers={"m": opt}, meta={"step": 3})
    m2, opt2 = _model_and_opt(seed=1)
    load_checkpoint(tmp_path / "ck", modules={"m": m2}, optimizers={"m": opt2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a scheduler steps before its optimizer
        assert lrs(opt2, lr_schedule(opt2, factor, start=3), 3) == pytest.approx(full[3:])
