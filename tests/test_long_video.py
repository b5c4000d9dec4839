"""The sliding-window long video (long_video.py): window arithmetic, the overlap pinning, determinism,
the seam conditioning, per-window decoding, and the `generate --seconds` errors."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from magicdistill.flow import add_noise, sigma_schedule
from magicdistill.generate import generate
from magicdistill.long_video import (ANCHOR_WEIGHT, MAX_SECONDS, WindowPlan, anchor_colour, image_shift,
                                     long_video_frames, pin_latents, pull_to_image, sample_long_video, shift_image,
                                     window_generator)
from magicdistill.models.dit import Condition
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, sample_video
from magicdistill.sampling import consistency_sample, euler_sample
from magicdistill.video import frames_to_tensor, load_image, read_video, tensor_to_frames

EXAMPLE = SHIPPED_DIR.parents[2].parent / "examples" / "portrait.png"
PROMPT = "The person is talking quickly, blinks often and sways the head slowly."
STEPS = dict(steps=4, guidance=1.0, shift=5.0)  # the shipped generator's own sampler


@pytest.fixture(scope="module")
def pipe():
    return I2VPipeline.from_dir(SHIPPED_DIR / "generator")


@pytest.fixture(scope="module")
def image():
    return frames_to_tensor(load_image(EXAMPLE, 64, 64)[None])[:, 0][None]


@pytest.fixture(scope="module")
def video33(pipe, image):
    """33 frames, no overlap: windows at output frames 0 and 16 (two windows keep the tests fast)."""
    return sample_long_video(pipe, image, PROMPT, num_frames=33, seed=5, overlap=0, progress=False, **STEPS)


# --- window arithmetic -------------------------------------------------------------------------

@pytest.mark.parametrize("overlap,stride,windows,seams", [(0, 16, 3, [16, 32]), (1, 12, 3, [12, 24]),
                                                          (3, 4, 7, [4, 8, 12, 16, 20, 24])])
def test_plan_strides_windows_and_seams(overlap, stride, windows, seams):
    plan = WindowPlan(40, 17, 4, overlap)
    assert plan.stride == stride and plan.num_windows == windows and plan.seams() == seams
    kept = [len(range(17)[plan.kept(k)]) for k in range(windows)]
    assert kept[0] == stride + 1 and kept[-1] == 16
    assert 40 <= sum(kept) < 40 + stride  # enough frames, and no window more than needed


def test_plan_rejects_an_overlap_leaving_no_new_frame():
    assert WindowPlan(480, 17, 4, 3).num_windows == 1 + -(-463 // 4)
    with pytest.raises(ValueError, match=r"--overlap must be in \[0, 3\]"):
        WindowPlan(40, 17, 4, 4)


def test_frame_count_is_round_seconds_times_fps_and_bad_lengths_are_errors():
    assert long_video_frames(5, 8.0) == 40 and long_video_frames(60, 8.0) == 480 and long_video_frames(2.6, 8.0) == 21
    for bad, msg in [(0, "positive"), (-1, "positive"), (float("nan"), "positive"), (float("inf"), "positive"),
                     (MAX_SECONDS + 1, "too long"), (0.01, "less than one frame")]:
        with pytest.raises(ValueError, match=msg):
            long_video_frames(bad, 8.0)
    with pytest.raises(ValueError, match="not both"):
        long_video_frames(5, 8.0, frames=17)
    with pytest.raises(ValueError, match="at most 14400"):
        long_video_frames(600, 240.0)


def test_window_noise_is_seeded_by_seed_and_window_index():
    draw = lambda seed, k: torch.randn(8, generator=window_generator(seed, k))
    assert torch.equal(draw(3, 0), torch.randn(8, generator=torch.Generator().manual_seed(3)))  # window 0 = generate
    assert torch.equal(draw(3, 2), draw(3, 2))
    assert not torch.equal(draw(3, 1), draw(3, 2)) and not torch.equal(draw(3, 1), draw(4, 1))


# --- the overlap constraint on a known velocity field ---------------------------------------------

def _recording_model(seen):
    def model(x, sigma, cond):
        seen.append((x.clone(), sigma.clone()))
        return torch.sin(3 * x) + x.mean() + 0.5  # any velocity: the pinned frames must ignore it
    return model


@pytest.mark.parametrize("cfg", [False, True], ids=["no-cfg", "batched-cfg"])
def test_pinned_frames_follow_the_renoised_path_and_land_on_the_known_latents(cfg):
    g = torch.Generator().manual_seed(0)
    noise, known = torch.randn(2, 4, 5, 3, 3, generator=g), torch.randn(2, 4, 2, 3, 3, generator=g)
    cond = Condition(torch.zeros(2, 1, 1), torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, 1), None)
    seen = []
    model = pin_latents(known, 1)(_recording_model(seen))
    x0 = euler_sample(model, noise, cond, steps=4, uncond=cond if cfg else None, guidance=3.0 if cfg else 1.0)
    torch.testing.assert_close(x0[:, :, 1:3], known, atol=1e-5, rtol=0)
    assert (x0[:, :, 3:] - noise[:, :, 3:]).abs().mean() > 0.1  # the free frames moved
    sigmas = sigma_schedule(4, 5.0)
    for (x, s), sigma in zip(seen, sigmas[:-1]):  # the model saw the overlap re-noised to its sigma
        assert torch.allclose(s, sigma.expand(len(s)))
        expected = add_noise(known, noise[:, :, 1:3], sigma)
        torch.testing.assert_close(x[:, :, 1:3], expected.repeat(2 if cfg else 1, 1, 1, 1, 1), atol=1e-5, rtol=0)
    lcm = consistency_sample(pin_latents(known, 1)(_recording_model([])), noise, cond, sigmas=sigmas,
                             generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lcm[:, :, 1:3], known, atol=1e-5, rtol=0)


# --- the shipped generator ------------------------------------------------------------------------

def test_same_seed_same_video_different_seed_different(pipe, image, video33):
    assert video33.shape == (33, 64, 64, 3) and video33.dtype == np.uint8
    # a shorter video of the same seed is the same video cut short: window k's noise ignores the length
    again = sample_long_video(pipe, image, PROMPT, num_frames=20, seed=5, overlap=0, progress=False, **STEPS)
    other = sample_long_video(pipe, image, PROMPT, num_frames=20, seed=6, overlap=0, progress=False, **STEPS)
    assert np.array_equal(video33[:20], again)
    assert np.abs(video33[17:20].astype(int) - other[17:]).mean() > 0.5  # the second window differs too


def test_window_0_is_generate_and_window_1_is_generate_on_the_anchored_seam_frame(pipe, image, video33):
    single = tensor_to_frames(pipe(image, PROMPT, seed=5, **STEPS))
    assert np.array_equal(video33[:17], single)  # window 0 kept whole (stride 16)
    # window 1 (identity "anchor", the default) = an ordinary window with window 1's noise whose first
    # frame is output frame 16 pulled toward the user's image, whose vision tokens are the user's
    # image's, colour-anchored to output frame 16
    original = tensor_to_frames(image[0][:, None])[0]
    start = frames_to_tensor(pull_to_image(video33[16], original, ANCHOR_WEIGHT)[None])[:, 0][None]
    text = pipe.text_encoder([PROMPT])
    w1 = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, start, num_frames=17, generator=window_generator(5, 1),
                      identity=image, **STEPS)
    assert np.array_equal(video33[17:33], anchor_colour(tensor_to_frames(w1[0]), video33[16], 4)[1:])


def test_identity_frame_is_generate_on_the_seam_frame(pipe, image):
    video = sample_long_video(pipe, image, PROMPT, num_frames=33, seed=5, identity="frame", progress=False, **STEPS)
    seam = frames_to_tensor(video[16][None])[:, 0][None]
    text = pipe.text_encoder([PROMPT])
    w1 = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, seam, num_frames=17, generator=window_generator(5, 1),
                      **STEPS)
    assert np.array_equal(video[17:33], anchor_colour(tensor_to_frames(w1[0]), video[16], 4)[1:])


def test_every_window_is_conditioned_on_the_users_image_tokens_and_pulled_toward_it(pipe, image, monkeypatch):
    seen, latents, conditions, encode = [], [], pipe.dit.conditions, pipe.vae.encode
    monkeypatch.setattr(pipe.dit, "conditions", lambda text, null, img, lat: seen.append(img.clone()) or
                        conditions(text, null, img, lat))
    monkeypatch.setattr(pipe.vae, "encode", lambda x: latents.append(x.clone()) or encode(x))
    frames = sample_long_video(pipe, image, PROMPT, num_frames=49, seed=2, progress=False, **STEPS)
    assert len(seen) == 3  # three windows, each tokenised from the user's image
    for img in seen:
        torch.testing.assert_close(img, image, atol=0, rtol=0)
    # each later window starts from its seam frame pulled ANCHOR_WEIGHT of the way to the (aligned) user's
    # image: closer to the user's image than the written seam frame is
    original = tensor_to_frames(image[0][:, None])[0].astype(np.float32)
    for k, seam in enumerate([16, 32], start=1):
        start = tensor_to_frames(latents[k][0])[0].astype(np.float32)
        written = frames[seam].astype(np.float32)
        assert np.abs(start - original).mean() < np.abs(written - original).mean() - 0.5
        assert np.abs(start - written).mean() > 0.5


def test_pull_to_image_aligns_the_users_image_before_blending():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    img[8:20, 10:22] = 255  # a bright "face" to find
    moved = shift_image(img, 2, -3)
    assert image_shift(img, moved) == (2, -3)
    assert np.array_equal(pull_to_image(moved, img, 0.5)[4:-4, 4:-4], moved[4:-4, 4:-4])  # aligned: no ghost
    assert np.array_equal(pull_to_image(moved, img, 0.0), moved)
    with pytest.raises(ValueError, match="identity"):
        sample_long_video(None, None, PROMPT, num_frames=5, identity="face", **STEPS)


def test_colour_anchor_removes_a_constant_shift_after_frame_0_and_nothing_else():
    rng = np.random.default_rng(0)
    prior = rng.integers(20, 230, (8, 8, 3)).astype(np.uint8)
    moving = np.stack([np.roll(prior, t, axis=1) for t in range(9)])  # same colours, moved: nothing to fix
    assert np.array_equal(anchor_colour(moving, prior, 4), moving)
    shifted = moving.astype(int)
    shifted[1:] += np.array([7, -5, 3])  # the generator's bias after frame 0
    out = anchor_colour(shifted.astype(np.uint8), prior, 4)
    assert np.array_equal(out, moving)
    # only frames 1..group set the offset: a later colour change (a light turned on) is kept
    shifted[5:] += 10
    out = anchor_colour(np.clip(shifted, 0, 255).astype(np.uint8), prior, 4)
    assert np.array_equal(out[:5], moving[:5]) and np.array_equal(out[5:], np.clip(moving[5:].astype(int) + 10, 0, 255))


def test_each_window_is_decoded_alone_and_the_overlap_is_the_previous_windows_tail(pipe, image, monkeypatch):
    decoded, decode = [], pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z: decoded.append(z.clone()) or decode(z))
    frames = sample_long_video(pipe, image, PROMPT, num_frames=41, seed=1, overlap=1, progress=False, **STEPS)
    assert frames.shape[0] == 41
    # memory-flatness proxy: one decode per window, each of one window's 5 latent frames
    assert [tuple(z.shape) for z in decoded] == [(1, 16, 5, 16, 16)] * 3  # 17 + 12 + 12 = 41 frames
    for prev, nxt in zip(decoded, decoded[1:]):
        torch.testing.assert_close(nxt[:, :, 1], prev[:, :, 4], atol=1e-4, rtol=0)  # pinned overlap
        assert (nxt[:, :, 2:] - prev[:, :, 4:5]).abs().mean() > 1e-2  # the rest is new
    # window k+1's image latent is the encoding of the written frame at the seam (stride 12), pulled
    # toward the user's image (identity "anchor", the default)
    original = tensor_to_frames(image[0][:, None])[0]
    for k, seam in enumerate([12, 24], start=1):
        z = pipe.vae.encode(frames_to_tensor(pull_to_image(frames[seam], original)[None])[None])
        torch.testing.assert_close(decoded[k][:, :, :1], z, atol=1e-5, rtol=0)


def test_generate_seconds_writes_round_seconds_times_fps_frames(tmp_path):
    out = tmp_path / "long.mp4"
    generate(prompt=PROMPT, out=out, image=EXAMPLE, seconds=2.6, seed=0, progress=False)
    frames, fps = read_video(out)
    assert frames.shape == (21, 64, 64, 3) and fps == pytest.approx(8.0)  # round(2.6 * 8) = 21


@pytest.mark.parametrize("flags,msg", [(["--seconds", "0"], "must be a positive number"),
                                       (["--seconds", "601"], "too long"),
                                       (["--seconds", "5", "--frames", "17"], "not both"),
                                       (["--overlap", "1"], "give --seconds too")])
def test_bad_seconds_is_a_one_line_error_with_no_output(tmp_path, flags, msg):
    out = tmp_path / "v.mp4"
    with pytest.raises(ValueError, match=msg):
        generate(prompt=PROMPT, out=out, image=EXAMPLE, progress=False, **_kwargs(flags))
    assert not out.exists()


def _kwargs(flags):
    it = iter(flags)
    return {k.lstrip("-"): (float(v) if k == "--seconds" else int(v)) for k, v in zip(it, it)}


def test_cli_bad_seconds_exits_2_without_output(tmp_path):
    out = tmp_path / "v.mp4"
    r = subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(EXAMPLE), "--prompt", PROMPT,
                        "--seconds", "-3", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --seconds must be a positive")
    assert not out.exists()
