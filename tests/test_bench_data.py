"""`magicdistill bench --data CACHE`: the held-out clips are the cache's last ones (ground truth = its latents
decoded), every generator is distilled on the other clips only, the page states the split."""

import json

import numpy as np
import pytest
import torch

from magicdistill.data.cache_reader import CachedClips
from magicdistill.video import write_mp4

CAPTIONS = ["a red shape drifts", "a green shape drifts", "a blue shape drifts", "a grey shape drifts"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from toys import write_tiny_teacher

    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, teacher):
    """4 clips encoded by a tiny random teacher's VAE and the default text encoder, at 32x32, 5 frames."""
    from magicdistill.data.cache_command import run_cache

    d = tmp_path_factory.mktemp("videos")
    for i, caption in enumerate(CAPTIONS):
        colour = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [120, 120, 120]][i])
        ramp = np.linspace(0, 50, 8)[:, None, None, None]
        write_mp4(d / f"c{i}.mp4", np.clip(colour + ramp + np.zeros((8, 32, 32, 3)), 0, 255).astype(np.uint8), 8.0)
        (d / f"c{i}.txt").write_text(caption)
    out = tmp_path_factory.mktemp("cache") / "cache"
    summary = run_cache(teacher, out, videos=d)
    assert summary.cached == 4
    return out


def test_bench_on_a_users_cache_holds_out_its_last_clips(cache, teacher, tmp_path, monkeypatch):
    import magicdistill.bench.runner as runner
    from magicdistill.bench.plan import Plan, Settings, Unit
    from magicdistill.bench.runner import run_bench
    from magicdistill.pipeline import I2VPipeline

    trained_on = []
    real_distill = runner.distill
    monkeypatch.setattr(runner, "distill", lambda cfg, *a, **k: trained_on.append(cfg.data_cache) or real_distill(cfg, *a, **k))
    references, conds, teachers = [], [], []

    def evaluate(videos, reference, *, cond_images=None, teacher=None):
        references.append(reference)
        conds.append(cond_images)
        teachers.append(teacher)
        return {"average": float(videos.mean()), "extractor": "stand-in"}

    s = Settings(iters=2, clips=1, clip_block=1, seeds=1, distill_seeds=1, num_clips=8, curve_iters=(2,),
                 distilled_steps=(1,), euler_steps=(2,), reference_steps=2)
    w2s = Unit("w2s", 1, iters=2)
    plan = Plan(table1=[Unit("euler", 2), w2s], alpha=[], curves={"W2S 1-step": [w2s]}, reference=Unit("euler", 2))
    docs = tmp_path / "RESULTS.md"
    run_bench(tmp_path / "bench", s, teacher_dir=teacher, docs=docs, evaluate=evaluate, plan=plan, data=cache)
    # every generator trained on the split: the cache's first 3 clips, never the held-out 4th
    split = tmp_path / "bench" / "train_data"
    assert trained_on == [str(split)]
    data, train = CachedClips(cache), CachedClips(split)
    assert train.captions == CAPTIONS[:3] and train.sources == data.sources[:3]
    assert torch.equal(train.take([2]).latents, data.take([2]).latents)  # read in place from the cache's shards
    config = json.loads((tmp_path / "bench" / "runs" / f"{w2s.run_id}-s{s.seed}" / "config.json").read_text())
    assert config["data_cache"] == str(split)
    # every row is measured on the held-out clip: its cached latents decoded, its first frame as the condition
    vae = I2VPipeline.from_dir(teacher).vae
    held = data.take([3])
    with torch.no_grad():
        truth = vae.decode(held.latents)
    assert len(references) == 2 and all(torch.allclose(r, truth, atol=1e-5) for r in references)
    assert references[0].shape == (1, 3, 5, 32, 32)
    assert torch.equal(conds[0], held.first_frame_pixels(torch.arange(1)))
    # the generator is also measured against the teacher's samples of the same held-out clip (FVD vs teacher)
    assert teachers[0] is None and teachers[1].shape == references[1].shape
    text = docs.read_text()
    assert f"the last 1 of the 4 clips of the cache `{cache}`" in text and "trains on the first 3" in text
    assert "portrait clips" not in text
    # the bench folder belongs to this cache: another (or none) is refused
    with pytest.raises(ValueError, match="different data"):
        run_bench(tmp_path / "bench", s, teacher_dir=teacher, docs=docs, evaluate=evaluate, plan=plan)


def test_bench_data_errors(cache, teacher, tmp_path):
    from magicdistill.bench.plan import Settings
    from magicdistill.bench.runner import run_bench

    with pytest.raises(ValueError, match="holds 4 clips; the bench holds out --clips 4"):
        run_bench(tmp_path / "b", Settings(clips=4, clip_block=1), teacher_dir=teacher, data=cache, evaluate=lambda *a, **k: {})
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="not a cache folder"):
        run_bench(tmp_path / "b", Settings(clips=1, clip_block=1), teacher_dir=teacher, data=tmp_path, evaluate=lambda *a, **k: {})


def test_a_split_reads_its_rows_in_place(cache, tmp_path):
    from magicdistill.data.cache_split import write_split

    data = CachedClips(cache)
    write_split(data, [3, 1], tmp_path / "split")
    split = CachedClips(tmp_path / "split")
    assert split.captions == [CAPTIONS[3], CAPTIONS[1]] and split.manifest["key"] == data.manifest["key"]
    a, b = split.take([0, 1]), data.take([3, 1])
    assert torch.equal(a.latents, b.latents) and torch.equal(a.first_frames, b.first_frames)
    assert torch.equal(a.text.tokens, b.text.tokens)
    assert not list((tmp_path / "split").glob("*.safetensors"))[1:]  # only null_text: no latents copied
