"""`magicdistill cache` on a folder of real mp4s: every bad clip skipped with its reason, resume, the key,
lazy reads, and `distill --data` (clips and data-free prompts) on a tiny random teacher."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from magicdistill.config import DistillConfig
from magicdistill.data.cache_reader import CachedClips
from magicdistill.data.clip_sources import ClipRule, Source, list_sources
from magicdistill.data.encoders import Encoders, teacher_encoders
from magicdistill.data.video_cache import build_cache
from magicdistill.distill.trainer import distill
from magicdistill.distill.w2s import W2SMethod
from magicdistill.models.text import TextEmbedding
from magicdistill.video import write_mp4
from toys import write_tiny_teacher


def _clip(folder: Path, name: str, frames: int, h: int, w: int, caption: str | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # smooth colours (a random-noise mp4 decodes far from its input)
    base = rng.integers(0, 255, (1, 1, 1, 3))
    ramp = np.linspace(0, 60, frames)[:, None, None, None]
    write_mp4(folder / f"{name}.mp4", np.clip(base + ramp + np.zeros((frames, h, w, 3)), 0, 255).astype(np.uint8), 8.0)
    if caption is not None:
        (folder / f"{name}.txt").write_text(caption)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """4 good 32x32-ish clips and one of each bad kind."""
    d = tmp_path_factory.mktemp("videos")
    for i in range(4):
        _clip(d, f"good{i}", 12, 36, 40, f"a moving colour number {i}", i)
    _clip(d, "one_frame", 1, 32, 32, "a single frame", 10)
    _clip(d, "portrait", 12, 64, 32, "a tall clip", 11)
    _clip(d, "no_caption", 12, 32, 32, None, 12)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (d / "corrupt.txt").write_text("broken")
    return d


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def encoders(teacher):
    return teacher_encoders(teacher)


RULE = ClipRule(height=32, width=32, num_frames=5, fps=8.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, clips, encoders, teacher):
    out = tmp_path_factory.mktemp("c") / "cache"
    summary = build_cache(list_sources(clips), out, encoders, RULE, shard_size=3, teacher=str(teacher))
    return out, summary


def test_bad_clips_are_skipped_and_counted_with_a_reason(cache):
    out, summary = cache
    assert summary.cached == 4 and summary.shards == 2
    assert summary.skipped == {"aspect": 1, "no_caption": 1, "too_short": 1, "unreadable": 1}
    skipped = {Path(s["source"]).stem: s for r in map(json.loads, map(Path.read_text, sorted(out.glob("shard_*.json"))))
               for s in r["skipped"]}
    assert {k: v["reason"] for k, v in skipped.items()} == {"corrupt": "unreadable", "one_frame": "too_short",
                                                           "portrait": "aspect", "no_caption": "no_caption"}
    assert "crop 50%" in skipped["portrait"]["detail"]
    data = CachedClips(out)
    assert len(data) == 4 and sorted(data.captions) == [f"a moving colour number {i}" for i in range(4)]
    rows = data.take([3, 0])
    assert rows.latents.shape == (2, 4, 2, 8, 8) and rows.image_latents.shape == (2, 4, 1, 8, 8)
    assert rows.first_frames.shape == (2, 3, 32, 32) and rows.first_frames.dtype == torch.uint8
    assert rows.captions == [data.captions[3], data.captions[0]]
    # the cached latents are the VAE's encoding of the clip rule's frames (cover-resize 40x36 -> 32x32)
    assert torch.isfinite(rows.latents).all() and rows.latents.abs().sum() > 0
    assert not torch.equal(rows.latents[0], rows.latents[1])


def test_frames_follow_the_rule(clips):
    from magicdistill.data.clip_sources import Skip, read_clip

    frames = read_clip(clips / "good0.mp4", RULE)
    assert frames.shape == (5, 32, 32, 3)
    assert frames[:, 16, 16].astype(int).sum(-1).tolist() == sorted(frames[:, 16, 16].astype(int).sum(-1).tolist())
    with pytest.raises(Skip, match="too_short"):  # 12 frames at 8 fps are 1.375 s; 17 frames at 8 fps need 2 s
        read_clip(clips / "good0.mp4", ClipRule(32, 32, 17, 8.0))
    every = read_clip(clips / "good0.mp4", ClipRule(32, 32, 9, 8.0))
    assert np.array_equal(read_clip(clips / "good0.mp4", ClipRule(32, 32, 5, 4.0)), every[::2])  # half the rate
    assert read_clip(clips / "portrait.mp4", ClipRule(64, 32, 5, 8.0)).shape == (5, 64, 32, 3)  # its own aspect fits


def test_manifests_csv_and_jsonl(clips, tmp_path):
    (tmp_path / "m.csv").write_text(f"path,caption\n{clips / 'good0.mp4'},first one\ngood1.mp4,\n")
    src = list_sources(tmp_path / "m.csv")
    assert [s.caption for s in src] == ["first one", None] and src[1].path == tmp_path / "good1.mp4"
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": str(clips / "good2.mp4"), "caption": "x"}) + "\n")
    assert list_sources(tmp_path / "m.jsonl")[0].caption == "x"
    (tmp_path / "bad.csv").write_text("file,text\na,b\n")
    with pytest.raises(ValueError, match="'path' and 'caption'"):
        list_sources(tmp_path / "bad.csv")


def test_resume_continues_after_the_last_committed_shard_and_the_key_guards(cache, clips, encoders, tmp_path,
                                                                           monkeypatch):
    full, _ = cache
    out = tmp_path / "cache"
    shutil.copytree(full, out)
    (out / "shard_00001.json").unlink()  # killed after shard 1's tensors, before its commit
    import magicdistill.data.video_cache as vc

    read = []
    real = vc.read_clip
    monkeypatch.setattr(vc, "read_clip", lambda p, r: read.append(Path(p).stem) or real(p, r))
    summary = build_cache(list_sources(clips), out, encoders, RULE, shard_size=3)
    shard1 = json.loads((full / "shard_00001.json").read_text())
    # only the sources of the uncommitted shard are read again (no_caption needs no decoding)
    assert sorted(read) == sorted(Path(c["source"]).stem for c in shard1["clips"] + shard1["skipped"]
                                  if Path(c["source"]).stem != "no_caption")
    assert summary.cached == 4 and summary.skipped == {"aspect": 1, "no_caption": 1, "too_short": 1, "unreadable": 1}
    for f in ("shard_00000", "shard_00001"):
        a, b = load_file(str(full / f"{f}.safetensors")), load_file(str(out / f"{f}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    read.clear()
    build_cache(list_sources(clips), out, encoders, RULE, shard_size=3)  # complete: nothing to do
    assert read == []
    with pytest.raises(ValueError, match="built differently .*differs in rule"):
        build_cache(list_sources(clips), out, encoders, ClipRule(32, 32, 5, 4.0), shard_size=3)


class _FakeEncoders:
    """Big random latents without a VAE (the encoder seam), to make many large shards quickly."""

    def __new__(cls, c=64, d=16):
        def video(x):
            return torch.randn(x.shape[0], c, 2, 32, 32)

        def text(prompts):
            b = len(prompts)
            return TextEmbedding(torch.randn(b, 4, d), torch.ones(b, 4, dtype=torch.bool), torch.randn(b, d))

        return Encoders(video, text, 4, 1, c, {"vae": "fake", "text": "fake"})


READ_ONE_ROW_PER_SHARD = r"""
import sys
from pathlib import Path

from magicdistill.data.cache_reader import CachedClips


def hwm():
    return next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))


base = hwm()
data = CachedClips(sys.argv[1])
rows = data.take(list(range(0, len(data), int(sys.argv[2]))))
assert rows.latents.shape[0] == len(data) // int(sys.argv[2])
print((hwm() - base) / 1024)
"""


def test_reader_is_lazy(tmp_path, monkeypatch):
    """In a fresh process, reading one row from each of 16 shards of 8 MiB (128 MiB) raises the peak RSS by
    well under half of that: rows are copied out of memory-mapped shards, shards are never read whole."""
    import subprocess
    import sys

    import magicdistill.data.video_cache as vc

    monkeypatch.setattr(vc, "read_clip", lambda p, r: np.zeros((5, 32, 32, 3), np.uint8))
    per_shard = 16
    sources = [Source(f"clip{i}", f"caption {i}", tmp_path / f"{i}.mp4") for i in range(16 * per_shard)]
    build_cache(sources, tmp_path / "big", _FakeEncoders(c=32), ClipRule(32, 32, 5, 8.0), shard_size=per_shard,
                batch=per_shard)
    total_mib = sum(p.stat().st_size for p in (tmp_path / "big").glob("shard_*.safetensors")) / 2**20
    assert total_mib > 120
    r = subprocess.run([sys.executable, "-c", READ_ONE_ROW_PER_SHARD, str(tmp_path / "big"), str(per_shard)],
                       capture_output=True, text=True, check=True)
    grown_mib = float(r.stdout.strip().splitlines()[-1])
    assert grown_mib < 0.4 * total_mib, f"peak RSS grew {grown_mib:.0f} MiB reading 16 rows of a {total_mib:.0f} MiB cache"


def test_distill_from_a_clips_cache(cache, teacher, tmp_path):
    out, _ = cache
    cfg = DistillConfig(method="w2s", iters=2, batch_size=2, lora_rank=4, log_every=1, checkpoint_every=2,
                        sample_every=2, data_cache=str(out))
    gen = distill(cfg, teacher, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_dmd" in rows[0] and "loss_d" in rows[0] and (gen / "dit.json").is_file()
    assert not (tmp_path / "run" / "cache").exists()  # the synthetic clips were never encoded
    # a cache encoded with another VAE is refused, naming the VAE
    other = tmp_path / "other"
    shutil.copytree(teacher.parent, other)
    weights = other / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    k = next(iter(sd))
    sd[k] = sd[k] + 1
    save_file(sd, str(weights))
    with pytest.raises(ValueError, match="another VAE than the teacher's"):
        distill(cfg, other / "teacher", tmp_path / "run2")


def test_data_free_prompts_cache(tmp_path, teacher):
    from magicdistill.data.cache_command import run_cache

    t2v = write_tiny_teacher(tmp_path / "t2v", task="t2v")
    (tmp_path / "p.txt").write_text("a red circle moves left\n\na blue square\n")
    summary = run_cache(t2v, tmp_path / "prompts", prompts=tmp_path / "p.txt")
    assert summary.cached == 2 and summary.shards == 1
    data = CachedClips(tmp_path / "prompts")
    assert not data.has_clips and data.take([1]).latents.shape == (1, 4, 2, 8, 8)
    base = dict(method="w2s", iters=2, batch_size=2, lora_rank=4, log_every=1, checkpoint_every=2, sample_every=2,
                data_cache=str(tmp_path / "prompts"))
    with pytest.raises(ValueError, match="backward_simulation"):
        distill(DistillConfig(**base), t2v, tmp_path / "r0")
    with pytest.raises(ValueError, match="L_reg"):
        distill(DistillConfig(**base, lambda_reg=1.0, input_mode="backward_simulation"), t2v, tmp_path / "r1")
    with pytest.raises(ValueError, match="image-to-video teacher needs clips"):
        distill(DistillConfig(**base, input_mode="backward_simulation"), teacher, tmp_path / "r2")
    distill(DistillConfig(**base, input_mode="backward_simulation"), t2v, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lambda_adv"] == 0 and saved["lambda_disc"] == 0  # the discriminator is switched off
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_dmd" in rows[0] and "loss_d" not in rows[0] and "motion_ratio_latent" not in rows[0]


def test_cache_cli_errors(tmp_path, capsys):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "magicdistill", "cache", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: give either --videos")
    assert not (tmp_path / "c").exists()


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(cache, teacher, tmp_path, monkeypatch):
    from magicdistill.distill import losses
    from magicdistill.train.checkpoint import load_checkpoint

    real = W2SMethod.fake_update

    def poisoned(self, batch, x_gen, cond, g):
        metrics = real(self, batch, x_gen, cond, g)
        return {**metrics, "loss_fake": float("nan")} if self._it == 3 else metrics

    def step(self, batch, it, g):
        self._it = it
        return real_step(self, batch, it, g)

    real_step = W2SMethod.step
    monkeypatch.setattr(W2SMethod, "fake_update", poisoned)
    monkeypatch.setattr(W2SMethod, "step", step)
    cfg = DistillConfig(method="w2s", iters=6, batch_size=2, lora_rank=4, log_every=1, checkpoint_every=2,
                        sample_every=100, data_cache=str(cache[0]))
    with pytest.raises(losses.NonFiniteError, match="non-finite loss_fake = nan at iteration 3"):
        distill(cfg, teacher, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoint")["step"] == 2  # the last good one, intact
    assert not (tmp_path / "run" / "generator").exists()


def test_train_a_teacher_from_a_clips_cache(cache, teacher, tmp_path):
    from magicdistill.config import DiTConfig, TeacherTrainConfig
    from magicdistill.train.teacher import train_teacher

    dit = DiTConfig(latent_channels=4, hidden_heads=2, head_dim=16, num_layers=1, num_single_layers=1,
                    rope_axes_dim=(4, 6, 6), image_tokens=4, max_text_tokens=32)
    cfg = TeacherTrainConfig(dit=dit, steps=2, batch_size=2, checkpoint_every=2, sample_every=2,
                             vae_dir=str(teacher.parent / "vae"), data_cache=str(cache[0]))
    train_teacher(cfg, str(tmp_path / "run"))
    meta = json.loads((tmp_path / "run" / "teacher" / "dit.json").read_text())
    assert (meta["height"], meta["width"], meta["num_frames"]) == (32, 32, 5)  # the cache's clip rule
    assert not (tmp_path / "run" / "cache").exists()
