"""`generate` end to end on the shipped checkpoints, and determinism."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, sample_clips, sample_video
from magicdistill.video import frames_to_tensor, load_image, read_video

EXAMPLE = SHIPPED_DIR.parents[2].parent / "examples" / "portrait.png"


@pytest.fixture(scope="module")
def pipe():
    return I2VPipeline.from_dir(SHIPPED_DIR / "teacher")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def _generate(*args):
    return subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(EXAMPLE), "--prompt",
                           "The person is talking quickly, blinks often and keeps the head still.", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("which", [[], ["--teacher", "--steps", "8"]], ids=["distilled-default", "teacher"])
def test_cli_writes_playable_mp4_starting_with_the_image(tmp_path, which):
    out = tmp_path / "v.mp4"
    r = _generate("--frames", "10", "--fps", "10", "--out", str(out), *which)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)  # the path is printed last
    frames, fps = read_video(out)
    assert frames.shape == (10, 64, 64, 3)  # rounded up to 13 for the VAE, trimmed back to 10
    assert fps == pytest.approx(10.0)
    first = load_image(EXAMPLE, 64, 64)
    assert _psnr(frames[0], first) > 24.0  # the first frame is the image (VAE + H.264 round trip)


def test_same_seed_same_video_different_seed_different_video(pipe):
    img = frames_to_tensor(load_image(EXAMPLE, 64, 64)[None])[:, 0][None]
    prompt = "The person is talking, blinks sometimes and sways the head slowly."
    a = pipe(img, prompt, seed=3, steps=4, num_frames=5)
    b = pipe(img, prompt, seed=3, steps=4, num_frames=5)
    c = pipe(img, prompt, seed=4, steps=4, num_frames=5)
    assert a.shape == (3, 5, 64, 64)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe(img, " ", steps=1)


def test_eta_is_seeded_keeps_the_first_frame_and_follows_the_models_record(pipe, monkeypatch):
    """--eta through the pipeline: the same seed gives the same stochastic video, a different eta a
    different one, the first frame stays the image, and a recorded sampler.eta is the default."""
    img = frames_to_tensor(load_image(EXAMPLE, 64, 64)[None])[:, 0][None]
    prompt = "The person is talking, blinks sometimes and sways the head slowly."
    ode = pipe(img, prompt, seed=3, steps=4, num_frames=5)
    sde = pipe(img, prompt, seed=3, steps=4, num_frames=5, eta=1.0)
    assert torch.equal(sde, pipe(img, prompt, seed=3, steps=4, num_frames=5, eta=1.0))
    assert (sde - ode).abs().mean() > 1e-3
    torch.testing.assert_close(sde[:, 0], ode[:, 0])  # frame 0 is the image's latent in both
    monkeypatch.setitem(pipe.dit.meta, "sampler", {**pipe.dit.meta.get("sampler", {}), "eta": 1.0})
    assert torch.equal(pipe(img, prompt, seed=3, steps=4, num_frames=5), sde)
    assert torch.equal(pipe(img, prompt, seed=3, steps=4, num_frames=5, eta=0.0), ode)


def test_head_moves_is_the_sway_or_nod_label():
    from magicdistill.demo import head_moves, portrait_clips
    from magicdistill.pipeline import read_record

    clips = portrait_clips(read_record(SHIPPED_DIR / "teacher"), 16, 0)
    # the caption says so too: "sways the head ..." / "... and nods"
    assert [head_moves(c) for c in clips] == ["sways" in c.caption or "nods" in c.caption for c in clips]
    assert sum(head_moves(c) for c in clips) == 11  # the 11 of 16 that docs/research/LOG.md counts


def test_sample_clips_gives_clip_i_the_noise_of_seed_plus_i_whatever_the_other_clips(pipe):
    img = frames_to_tensor(load_image(EXAMPLE, 64, 64)[None])[:, 0][None]
    firsts = torch.cat([img, img.flip(-1)])
    text = pipe.text_encoder(["The person is talking.", "The person sways the head slowly."])
    kw = dict(num_frames=5, steps=2, guidance=2.0, shift=5.0)
    both = sample_clips(pipe.dit, pipe.vae, text, pipe.null_text, firsts, seed=7, **kw)
    alone = sample_video(pipe.dit, pipe.vae, text.index(torch.tensor([1])), pipe.null_text, firsts[1:],
                         generator=torch.Generator().manual_seed(8), **kw)
    assert both.shape == (2, 3, 5, 64, 64)
    torch.testing.assert_close(both[1:], alone)
    assert (both[0] - both[1]).abs().mean() > 1e-2


def test_default_is_the_shipped_4_step_generator_and_model_excludes_teacher(tmp_path):
    from magicdistill.generate import default_model
    from magicdistill.pipeline import read_record

    rec = read_record(default_model(teacher=False))
    assert rec["method"] == "w2s" and rec["sampler"]["steps"] == 4 and rec["sampler"]["guidance"] == 1.0
    assert read_record(default_model(teacher=True)).get("method") is None  # the teacher: 50-step CFG defaults
    out = tmp_path / "v.mp4"
    r = _generate("--teacher", "--model", str(SHIPPED_DIR / "teacher"), "--out", str(out))
    assert r.returncode == 2 and "not both" in r.stderr and not out.exists()


def test_bfloat16_generation_matches_float32(tmp_path):
    """--dtype bfloat16 runs every model (DiT, VAE) in bf16 and stays close to the float32 video."""
    from magicdistill.generate import generate

    videos = {}
    for dtype in ("float32", "bfloat16"):
        out = generate(image=EXAMPLE, prompt="The person is talking.", out=tmp_path / f"{dtype}.mp4", dtype=dtype,
                       progress=False)
        videos[dtype] = read_video(out)[0]
    assert videos["bfloat16"].shape == videos["float32"].shape == (17, 64, 64, 3)
    assert _psnr(videos["bfloat16"], videos["float32"]) > 25  # bf16 rounding, not a different video
