"""Teacher training: the loss goes down on a fixed batch; condition dropout; a resumed run is exact."""

import torch

from magicdistill.config import TeacherTrainConfig
from magicdistill.data.latent_cache import LatentSet
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEmbedding
from magicdistill.train.teacher import drop_text, step_generator, teacher_loss


def _latent_set(cfg, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = cfg.latent_channels
    base = torch.randn(n, c, 1, 8, 8, generator=g)
    latents = base + 0.1 * torch.randn(n, c, 3, 8, 8, generator=g).cumsum(2)  # temporally coherent
    text = TextEmbedding(torch.randn(n, 6, cfg.text_dim, generator=g), torch.ones(n, 6, dtype=torch.bool),
                         torch.randn(n, cfg.text_dim, generator=g))
    frames = torch.randint(0, 255, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return LatentSet(latents, latents[:, :, :1].clone(), frames, text, ["x"] * n)


def test_few_steps_lower_the_loss_on_a_fixed_batch(tiny_dit_cfg):
    torch.manual_seed(0)
    cfg = TeacherTrainConfig(dit=tiny_dit_cfg, text_dropout=0.0, image_dropout=0.0)
    dit = VideoDiT.tiny(tiny_dit_cfg, "i2v")
    data = _latent_set(tiny_dit_cfg)
    null = TextEmbedding(torch.zeros(1, 6, tiny_dit_cfg.text_dim), torch.ones(1, 6, dtype=torch.bool),
                         torch.zeros(1, tiny_dit_cfg.text_dim))
    idx = torch.arange(4)
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)

    def loss_now():
        return teacher_loss(dit, data, idx, null, cfg, torch.Generator().manual_seed(7))

    with torch.no_grad():
        before = loss_now().item()
    for _ in range(15):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_now().item()
    assert after < 0.7 * before, (before, after)


def test_drop_text_replaces_only_dropped_samples():
    text = TextEmbedding(torch.ones(3, 4, 2), torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 2))
    null = TextEmbedding(torch.zeros(1, 4, 2), torch.tensor([[True, False, False, False]]), torch.zeros(1, 2))
    out = drop_text(text, null, torch.tensor([False, True, False]))
    assert out.tokens[1].abs().sum() == 0 and out.tokens[0].eq(1).all() and out.tokens[2].eq(1).all()
    assert out.mask[1].tolist() == [True, False, False, False] and out.mask[0].all()
    assert out.pooled[1].abs().sum() == 0


def test_step_generator_is_a_pure_function_of_seed_and_step():
    a = torch.rand(3, generator=step_generator(0, 5))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 6)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(1, 5)))


def test_train_command_end_to_end_for_both_tasks(tmp_path):
    """`magicdistill train` at a tiny size: samples (a T2V model has no first frame: the size comes from the
    data config), checkpoint, and a teacher folder that loads with its task, image padding and the run's
    guidance as its default sampler."""
    import pytest

    from magicdistill.pipeline import SHIPPED_DIR, model_sampler
    from magicdistill.train.teacher import train_teacher

    dit = {"hidden_heads": 2, "head_dim": 16, "num_layers": 1, "num_single_layers": 1, "rope_axes_dim": (4, 6, 6),
           "image_tokens": 4, "image_padding": "repeat"}
    for task in ("t2v", "i2v"):
        cfg = TeacherTrainConfig(task=task, steps=2, batch_size=2, num_clips=8, sample_every=2, checkpoint_every=1,
                                 warmup=1, vae_dir=str(SHIPPED_DIR / "vae"), dit=dit, guidance=1.5)
        train_teacher(cfg, str(tmp_path / task), cache_dir=str(tmp_path / "cache"))
        assert (tmp_path / task / "samples" / "step_000002.mp4").stat().st_size > 1000
        loaded = VideoDiT.load(tmp_path / task / "teacher")
        assert loaded.is_i2v == (task == "i2v") and loaded.meta["task"] == task
        assert loaded.image_padding == "repeat"
        assert model_sampler(loaded.meta) == {"kind": "euler", "steps": 50, "guidance": 1.5, "shift": 5.0, "eta": 0.0}
        with pytest.raises(ValueError, match="already holds a run"):
            train_teacher(cfg, str(tmp_path / task), cache_dir=str(tmp_path / "cache"))


def test_latent_cache_is_keyed_by_how_clips_are_drawn(tmp_path, tiny_dit_cfg, monkeypatch):
    """The cache is reused for the same clips and rebuilt when a SyntheticVideoConfig field changes
    (here pose_start), although the run's DataConfig is the same."""
    import dataclasses
    import types

    import magicdistill.train.teacher as teacher
    from magicdistill.config import DataConfig
    from magicdistill.data.synthetic import SyntheticVideoConfig
    from magicdistill.pipeline import SHIPPED_DIR

    built = []

    def fake_build(source, n, *a, **k):
        built.append(source.config.pose_start)
        return _latent_set(tiny_dit_cfg, n)

    monkeypatch.setattr(teacher, "build_latent_set", fake_build)
    enc = types.SimpleNamespace(max_tokens=8)

    def load():
        return teacher.latent_set_for(DataConfig(), str(SHIPPED_DIR / "vae"), "train", 4, None, enc, tmp_path)

    first = load()
    torch.testing.assert_close(load().latents, first.latents)  # from the cache
    assert built == ["random"]
    of = SyntheticVideoConfig.of.__func__
    monkeypatch.setattr(SyntheticVideoConfig, "of", classmethod(lambda cls, d: dataclasses.replace(of(cls, d), pose_start="rising")))
    load()
    assert built == ["random", "rising"]
    assert len(list(tmp_path.glob("latents_train_*.safetensors"))) == 2
