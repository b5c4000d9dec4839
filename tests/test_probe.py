"""The evaluation probe: the shipped network's shapes, held-out accuracy, order sensitivity, and its trainer."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from magicdistill.config import DataConfig
from magicdistill.data.synthetic import IDENTITY_FIELDS, MOTION_FIELDS, SyntheticVideoConfig, SyntheticVideos
from magicdistill.eval.probe import SHIPPED_PROBE_DIR, ProbeConfig, ProbeNetwork, attribute_classes, load_probe
from magicdistill.train.probe_trainer import ProbeTrainConfig, probe_batch, probe_losses, render_pool, train_probe
from magicdistill.video import frames_to_tensor


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small networks run several times faster on one thread when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def probe():
    return load_probe()


@pytest.fixture(scope="module")
def test_portraits():
    """24 held-out (test-split identity) portrait clips: video (24, 3, 17, 64, 64) and labels."""
    source = SyntheticVideos(SyntheticVideoConfig(), "test", seed=0)
    clips = [source.clip(i, portrait_only=True) for i in range(24)]
    return torch.stack([frames_to_tensor(c.frames) for c in clips]), clips


def test_shipped_probe_shapes_size_and_resize(probe, test_portraits):
    cfg = probe.config
    assert (SHIPPED_PROBE_DIR / "probe.safetensors").stat().st_size < 2_000_000
    video = torch.rand(2, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert probe.frame_features(video).shape == (10, cfg.frame_dim)
    assert probe.clip_features(video).shape == (2, cfg.clip_dim)
    assert isinstance(probe.name, str) and probe.name
    assert not any(p.requires_grad for p in probe.parameters()) and not probe.training
    # other sizes are resized to 64x64 inside: a 96x96 copy of a clip lands far nearer the clip than another clip
    clips = test_portraits[0][:2]
    big = torch.nn.functional.interpolate(clips.transpose(1, 2).flatten(0, 1), size=(96, 96), mode="bilinear",
                                          antialias=True).view(2, 17, 3, 96, 96).transpose(1, 2)
    f, fb = probe.clip_features(clips), probe.clip_features(big)
    assert (f[0] - fb[0]).norm() < 0.2 * (f[0] - f[1]).norm()
    with pytest.raises(ValueError, match="at least 2 frames"):
        probe.clip_features(video[:, :, :1])
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        probe.frame_features(video[0])


def test_shipped_probe_recognises_held_out_identities_and_motion(probe, test_portraits):
    video, clips = test_portraits
    with torch.no_grad():
        logits, _ = probe(video)
    acc = {k: (logits[k].argmax(1) == torch.tensor([c.labels[k] for c in clips])).float().mean().item()
           for k in attribute_classes()}
    identity = np.mean([acc[k] for k in IDENTITY_FIELDS])
    motion = np.mean([acc[k] for k in MOTION_FIELDS])
    chance_identity = np.mean([1 / len(v) for v in IDENTITY_FIELDS.values()])  # 0.26
    chance_motion = np.mean([1 / len(v) for v in MOTION_FIELDS.values()])  # 0.38
    assert identity > 0.8 > chance_identity + 0.5, acc
    assert motion > chance_motion + 0.2, acc
    assert min(acc["talk"], acc["sway"]) > 0.75, acc  # rates read from frame order: 3 classes each, chance 0.33


def test_clip_features_see_frame_order(probe, test_portraits):
    video, clips = test_portraits
    # a clip that moves: the head sways quickly
    i = next(i for i, c in enumerate(clips) if c.labels["sway"] == 2)
    clip = video[i:i + 1]
    perm = torch.from_numpy(np.random.default_rng(0).permutation(clip.shape[2]))
    shuffled = clip[:, :, perm]
    noisy = clip + 0.01 * torch.randn(clip.shape, generator=torch.Generator().manual_seed(0))
    f = probe.clip_features(clip)
    d_shuffled = (probe.clip_features(shuffled) - f).norm().item()
    d_noise = (probe.clip_features(noisy) - f).norm().item()
    assert d_shuffled > 10 * d_noise, (d_shuffled, d_noise)
    # frame features are per frame: shuffling the frames only permutes them
    torch.testing.assert_close(probe.frame_features(shuffled), probe.frame_features(clip)[perm], atol=1e-4, rtol=1e-4)


def _tiny_cfg(**kw):
    return ProbeTrainConfig(data=DataConfig(num_frames=6), probe=ProbeConfig(widths=(16, 16, 16), squeeze=8,
                            frame_dim=32, clip_dim=32, heads=2), pool_clips=6, test_clips=4, batch_size=4,
                            min_frames=3, checkpoint_every=2, **kw)


def test_batches_are_replayable_and_negatives_are_shuffles():
    cfg = _tiny_cfg()
    pool, labels, kinds = render_pool(SyntheticVideos(SyntheticVideoConfig(num_frames=6), "train", 0), 6, "clips")
    a, b = probe_batch(pool, labels, kinds, 3, cfg), probe_batch(pool, labels, kinds, 3, cfg)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    video, _, _, in_order = a
    n = cfg.batch_size
    assert video.shape[0] == n + 1 and in_order.tolist() == [1.0] * n + [0.0]
    # the negative holds the first clip's frames, in another order
    orig, neg = video[0].transpose(0, 1).flatten(1), video[n].transpose(0, 1).flatten(1)
    assert not torch.equal(orig, neg)
    assert torch.equal(orig.sort(0).values, neg.sort(0).values)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    pool, labels, kinds = render_pool(SyntheticVideos(SyntheticVideoConfig(num_frames=6), "train", 0), 6, "clips")
    batch = probe_batch(pool, labels, kinds, 0, cfg)
    model = ProbeNetwork(cfg.probe)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = probe_losses(model, *batch, cfg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_probe_run_saves_a_loadable_probe_and_resumes(tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    model = train_probe(_tiny_cfg(steps=2), str(out))
    probe = load_probe(out / "probe")
    video = torch.rand(1, 3, 4, 64, 64) * 2 - 1
    model.eval()
    torch.testing.assert_close(probe.clip_features(video), model.clip_features(video))
    assert set(probe.record["test"]) >= {f"test_acc_{k}" for k in attribute_classes()}
    train_probe(_tiny_cfg(steps=4), str(out), resume=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4, 4]  # resumed at step 3, not from scratch; each run ends with a test row
    with pytest.raises(ValueError, match="already holds a run"):
        train_probe(_tiny_cfg(steps=2), str(out))


@pytest.mark.parametrize("args,needle", [
    (["--steps", "0"], "steps"),
    (["--resume"], "no checkpoint"),
])
def test_train_probe_bad_input_is_one_line_error(tmp_path, args, needle):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "magicdistill", "train-probe", "--out", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not (out / "checkpoint").exists()
