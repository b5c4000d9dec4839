"""`magicdistill cache` and `distill --data` on tiny real Wan / HunyuanVideo folders: the clips are encoded with the
folder's own VAE and text encoders (checked against them), distillation reads the cache without loading a text
encoder, and a cache made for one teacher is refused by another in one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from magicdistill.cli import app
from magicdistill.data.cache_reader import CachedClips
from magicdistill.data.clip_sources import ClipRule, read_clip
from magicdistill.models.families import base as families_base
from magicdistill.models.families import real as families_real
from magicdistill.models.folder import read_model_folder
from magicdistill.video import frames_to_tensor, write_mp4

CLIP = ["--height", 32, "--width", 32, "--frames", 9, "--fps", 8]
TEXT = {"hunyuan-t2v": (256, 32), "wan-t2v": (512, 32), "wan-i2v": (512, 32)}  # token budget, text width
CAPTIONS = ["a red ball rolls on the grass", "a man with a hat walks at night", "the dog jumps over the fence"]


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i, caption in enumerate(CAPTIONS):
        rng = np.random.default_rng(i)
        ramp = np.linspace(0, 80, 12)[:, None, None, None]
        frames = np.clip(rng.integers(0, 170, (1, 1, 1, 3)) + ramp + np.zeros((12, 36, 40, 3)), 0, 255)
        write_mp4(d / f"clip{i}.mp4", frames.astype(np.uint8), 8.0)
        (d / f"clip{i}.txt").write_text(caption)
    return d


@pytest.fixture(scope="module")
def cache_of(real_folder, videos, tmp_path_factory):
    """cache_of(kind) -> a cache folder of the three clips, encoded by that fixture folder (made once)."""
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            out = tmp_path_factory.mktemp("caches") / kind
            result = run_cli("cache", "--teacher", real_folder(kind), "--videos", videos, "--out", out, *CLIP)
            assert result.exit_code == 0, result.output
            assert "3 clips cached in 1 shards" in result.output
            made[kind] = out
        return made[kind]

    return make


@pytest.mark.parametrize("kind", ["hunyuan-t2v", pytest.param("wan-t2v", marks=pytest.mark.slow)])
def test_cache_holds_the_folders_own_encodings(real_folder, cache_of, videos, kind):
    from magicdistill.models.families.real import RealPipeline

    data = CachedClips(cache_of(kind))
    assert data.manifest["encoders"]["family"] == kind.split("-")[0]
    assert data.manifest["encoders"]["vae_options"] == "tiling+slicing"
    rows = data.take(range(3))
    assert tuple(rows.text.tokens.shape[1:]) == TEXT[kind] and tuple(rows.latents.shape[1:]) == (16, 3, 4, 4)
    # the same numbers as the teacher's own pipeline gives: its text encoder(s) on the captions, its VAE on the clips
    pipe = RealPipeline.from_dir(real_folder(kind))
    want = pipe.text_encoder()(rows.captions)
    assert torch.allclose(rows.text.tokens.float(), want.tokens.float(), atol=2e-3, rtol=2e-3)
    assert torch.equal(rows.text.mask, want.mask.bool())
    assert torch.allclose(rows.text.pooled.float(), want.pooled.float(), atol=2e-3, rtol=2e-3)
    null = data.null_text()
    assert torch.allclose(null.tokens, pipe.text_encoder()([""]).tokens.float(), atol=2e-3, rtol=2e-3)
    source = Path(json.loads((data.path / "shard_00000.json").read_text())["clips"][0]["source"])
    frames = read_clip(source, ClipRule(32, 32, 9, 8.0))
    with torch.no_grad():
        z = pipe.vae.encode(frames_to_tensor(frames)[None])
    assert torch.allclose(rows.latents[:1], z, atol=1e-5)


# the default suite runs one real distillation from a cache; the rest are in the slow job
CASES = [pytest.param("hunyuan-t2v", "full"),
         pytest.param("hunyuan-t2v", "lora", marks=pytest.mark.slow),
         pytest.param("wan-t2v", "full", marks=pytest.mark.slow),
         pytest.param("wan-t2v", "lora", marks=pytest.mark.slow),
         pytest.param("wan-i2v", "lora", marks=pytest.mark.slow)]


def components_loaded(monkeypatch) -> list[str]:
    """The names of the folder components loaded from now on (the list grows as they load)."""
    loaded: list[str] = []
    real_load = families_real.load_component
    monkeypatch.setattr(families_real, "load_component",
                        lambda folder, name, **kw: loaded.append(name) or real_load(folder, name, **kw))
    return loaded


@pytest.mark.parametrize("kind,generator", CASES)
def test_distill_a_real_teacher_from_its_cache_without_text_encoders(real_folder, cache_of, tmp_path, monkeypatch,
                                                                     kind, generator):
    cache = cache_of(kind)
    loaded = components_loaded(monkeypatch)
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", real_folder(kind), "--data", cache, "--out", out, "--iters", 2,
                     "--batch-size", 2, "--generator", generator)
    assert result.exit_code == 0, result.output
    assert "transformer" in loaded and "vae" in loaded
    assert not {"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"} & set(loaded)
    assert not (out / "cache").exists()  # no synthetic clips were encoded
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0 and all(np.isfinite(first[k]) for k in ("loss_dmd", "loss_fake", "loss_d"))
    gen = read_model_folder(out / "generator")
    assert gen.base == real_folder(kind).resolve()
    assert (gen.video.height, gen.video.width, gen.video.frames) == (32, 32, 9)  # the cache's clip rule


def test_the_vae_encodes_tiled_and_sliced_unless_told_not_to(real_folder, monkeypatch):
    from magicdistill.data.family_encoders import real_encoders

    made = []
    real_load = families_base.load_component

    def spy(folder, name, **kw):
        component = real_load(folder, name, **kw)
        if name == "vae":
            made.append(component)
        return component

    monkeypatch.setattr(families_base, "load_component", spy)
    real_encoders(real_folder("hunyuan-t2v"))
    real_encoders(real_folder("wan-t2v"))
    real_encoders(real_folder("wan-t2v"), vae_tiling=False)
    assert [(v.use_tiling, v.use_slicing) for v in made] == [(True, True), (True, True), (False, False)]


def test_a_cache_for_one_teacher_is_refused_by_another(real_folder, cache_of, tmp_path):
    result = run_cli("distill", "--teacher", real_folder("wan-t2v"), "--data", cache_of("hunyuan-t2v"), "--out",
                     tmp_path / "run", "--iters", 2)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "encoded for a hunyuan teacher, not this wan one" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    # the same family with another VAE (the Wan I2V fixture's weights differ): refused, naming the VAE
    result = run_cli("distill", "--teacher", real_folder("wan-i2v"), "--data", cache_of("wan-t2v"), "--out",
                     tmp_path / "run2", "--iters", 2)
    assert result.exit_code == 2 and "another VAE than the teacher's" in result.output
    # a real cache given to the tiny default (its VAE differs)
    result = run_cli("distill", "--data", cache_of("hunyuan-t2v"), "--out", tmp_path / "run3", "--iters", 2)
    assert result.exit_code == 2 and "another VAE than the teacher's" in result.output
    # fine-tuning a folder on a cache of another family's / another VAE's folder: the same one-line refusals
    for model, cache, why in [("wan-t2v", "hunyuan-t2v", "encoded for a hunyuan teacher, not this wan one"),
                              ("wan-i2v", "wan-t2v", "another VAE than the teacher's")]:
        result = run_cli("train", "--init-from", real_folder(model), "--data", cache_of(cache), "--out",
                         tmp_path / "train", "--steps", 2)
        assert result.exit_code == 2 and why in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "train").exists()


def test_resume_into_the_same_out_with_another_teacher_is_refused(real_folder, cache_of, videos, tmp_path):
    result = run_cli("cache", "--teacher", real_folder("wan-t2v"), "--videos", videos, "--out", cache_of("hunyuan-t2v"),
                     *CLIP)
    assert result.exit_code == 2 and "built differently" in result.output and "encoders" in result.output
    result = run_cli("cache", "--teacher", real_folder("hunyuan-t2v"), "--videos", videos, "--out",
                     cache_of("hunyuan-t2v"), *CLIP, "--no-vae-tiling")
    assert result.exit_code == 2 and "built differently" in result.output
    (tmp_path / "p.txt").write_text("a red ball rolls\n")  # HunyuanVideo-I2V reads each prompt with a first frame
    result = run_cli("cache", "--teacher", real_folder("hunyuan-i2v"), "--prompts", tmp_path / "p.txt", "--out",
                     tmp_path / "c", *CLIP)
    assert result.exit_code == 2 and "HunyuanVideo-I2V" in result.output and "--videos" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_data_free_prompts_cache_for_a_real_teacher(real_folder, tmp_path):
    (tmp_path / "p.txt").write_text("a red ball rolls\na dog jumps\n")
    result = run_cli("cache", "--teacher", real_folder("hunyuan-t2v"), "--prompts", tmp_path / "p.txt", "--out",
                     tmp_path / "pc", "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 0, result.output
    data = CachedClips(tmp_path / "pc")
    assert not data.has_clips and data.latent_shape == (16, 3, 4, 4)
    result = run_cli("distill", "--teacher", real_folder("hunyuan-t2v"), "--data", tmp_path / "pc", "--out",
                     tmp_path / "run", "--iters", 2, "--batch-size", 2, "--input-mode", "backward_simulation",
                     "--generator", "lora")
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_dmd" in logged[0] and "loss_d" not in logged[0]


class ClipsOf:
    """The cache's own clips (read by the cache's rule) as a source for the uncached path's ``build_latent_set``."""

    def __init__(self, data: CachedClips):
        rule = ClipRule(**{k: data.rule[k] for k in ("height", "width", "num_frames", "fps")})
        self.clips = [SimpleNamespace(frames=read_clip(Path(src), rule), caption=cap)
                      for src, cap in zip(data.sources, data.captions)]

    def clip(self, i):
        return self.clips[i]


def same_clips_uncached(monkeypatch, module, data: CachedClips):
    """Make ``module``'s uncached run encode the cache's clips (with the teacher's loaded VAE and text encoder,
    the uncached code path) instead of the synthetic portraits."""
    from magicdistill.data.latent_cache import build_latent_set

    encoded = {}

    def latent_set_for(data_cfg, vae_dir, split, n, vae, enc, cache_dir):
        if "set" not in encoded:
            encoded["set"] = build_latent_set(ClipsOf(data), len(data), vae, enc)
        return encoded["set"]

    monkeypatch.setattr(module, "latent_set_for", latent_set_for)
    return encoded


def logged_losses(run: Path, names) -> np.ndarray:
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return np.array([[m[k] for k in names] for m in logged if all(k in m for k in names)])


def test_hunyuan_i2v_cache_reads_each_prompt_with_its_clips_first_frame(real_folder, cache_of):
    """HunyuanVideo-I2V's Llava reads the prompt with the first frame: the cache stores, per clip, the caption
    encoded with that clip's own first frame, exactly as uncached distillation's text encoder reads it.
    Tolerance: embeddings are stored in float16 (atol 2e-3 on values ~1)."""
    from PIL import Image

    from magicdistill.models.families.real import RealPipeline

    data = CachedClips(cache_of("hunyuan-i2v"))
    assert data.has_clips and len(data) == 3 and data.manifest["encoders"]["family"] == "hunyuan"
    rows = data.take(range(3))
    enc = RealPipeline.from_dir(real_folder("hunyuan-i2v")).text_encoder()
    frames = [Image.fromarray(rows.first_frames[i].permute(1, 2, 0).numpy()) for i in range(3)]
    want = enc(rows.captions, images=frames)
    torch.testing.assert_close(rows.text.tokens.float(), want.tokens.float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(rows.text.pooled.float(), want.pooled.float(), atol=2e-3, rtol=0)
    assert torch.equal(rows.text.mask, want.mask.bool())
    # the frame is in it: caption 0 read with clip 1's frame encodes otherwise
    other = enc(rows.captions[:1], images=frames[1:2])
    assert (other.tokens[0].float() - rows.text.tokens[0].float()).abs().max() > 1e-2
    torch.testing.assert_close(data.null_text().tokens, enc([""]).tokens.float(), atol=2e-3, rtol=0)


@pytest.mark.slow
def test_distill_from_a_hunyuan_i2v_cache_matches_the_uncached_run(real_folder, cache_of, tmp_path, monkeypatch):
    """`distill --data` on a HunyuanVideo-I2V cache runs without its text encoders to the same losses as the
    uncached run (which encodes each caption with its first frame as it goes) on the same clips.
    Tolerance: losses rtol 1e-3 (the uncached run's empty-prompt embedding is float32, the cache's float16)."""
    from magicdistill.distill import trainer as distill_trainer

    teacher = real_folder("hunyuan-i2v")
    data = CachedClips(cache_of("hunyuan-i2v"))
    loaded = components_loaded(monkeypatch)
    args = ["--teacher", teacher, "--iters", 2, "--batch-size", 2]
    result = run_cli("distill", *args, "--data", data.path, "--out", tmp_path / "cached")
    assert result.exit_code == 0, result.output
    assert "transformer" in loaded and not {"text_encoder", "text_encoder_2"} & set(loaded)
    encoded = same_clips_uncached(monkeypatch, distill_trainer, data)
    result = run_cli("distill", *args, "--out", tmp_path / "uncached", "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 0, result.output
    assert "text_encoder" in loaded  # the uncached run encodes the captions itself
    torch.testing.assert_close(encoded["set"].text.tokens, data.take(range(3)).text.tokens, atol=2e-3, rtol=0)
    names = ("loss_fake", "loss_d")  # step 1 (logged every 10); the generator's DMD term starts later
    cached, uncached = logged_losses(tmp_path / "cached", names), logged_losses(tmp_path / "uncached", names)
    assert cached.shape == (1, 2) and (cached > 0).all()
    np.testing.assert_allclose(cached, uncached, rtol=1e-3)


@pytest.mark.slow
def test_train_a_wan_folder_on_its_cache_matches_the_uncached_run(real_folder, cache_of, tmp_path, monkeypatch):
    """`train --init-from FOLDER --data CACHE` fine-tunes the folder's transformer on the cached clips without
    loading its text encoder, to the same per-step losses as the uncached run encoding the same clips itself.
    Tolerance: rtol 1e-3 (the uncached run's empty-prompt embedding, used by text dropout, is float32, the
    cache's float16)."""
    from magicdistill.train import real_teacher_train

    teacher = real_folder("wan-t2v")
    data = CachedClips(cache_of("wan-t2v"))
    loaded = components_loaded(monkeypatch)
    args = ["--init-from", teacher, "--steps", 3, "--batch-size", 2, "--checkpoint-every", 100]
    result = run_cli("train", *args, "--data", data.path, "--out", tmp_path / "cached")
    assert result.exit_code == 0, result.output
    assert "transformer" in loaded and "text_encoder" not in loaded
    assert not (tmp_path / "cached" / "cache").exists()  # no synthetic clips were encoded
    trained = read_model_folder(tmp_path / "cached" / "teacher")
    assert (trained.video.height, trained.video.width, trained.video.frames) == (32, 32, 9)  # the cache's clips
    same_clips_uncached(monkeypatch, real_teacher_train, data)
    result = run_cli("train", *args, "--out", tmp_path / "uncached", "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 0, result.output
    assert "text_encoder" in loaded
    cached, uncached = logged_losses(tmp_path / "cached", ["loss"]), logged_losses(tmp_path / "uncached", ["loss"])
    assert cached.shape == (3, 1) and (cached > 0).all()
    np.testing.assert_allclose(cached, uncached, rtol=1e-3)
    # and a cache's clip format is the run's: another size is refused
    result = run_cli("train", *args, "--data", data.path, "--out", tmp_path / "other", "--height", 64)
    assert result.exit_code == 2 and "are 32x32x9" in result.output and not (tmp_path / "other").exists()
