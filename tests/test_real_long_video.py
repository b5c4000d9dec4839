"""`generate --seconds` on a real image-to-video folder (Wan 2.1 I2V): a sliding window whose window k + 1 is
conditioned on window k's last frame, with the user's ORIGINAL image as the CLIP identity tokens of every
window. Asserted on the conditioning inputs the transformer receives, not only on shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app
from magicdistill.models.folder import read_model_folder, write_derived_record
from magicdistill.video import read_video

WINDOW, FPS = 9, 16.0  # 9-frame windows (3 latent frames); stride 8 new frames per window


def _folder(real_folder, tmp_path):
    """wan-i2v with a record of 32x32, 9-frame clips (the window), nothing else changed."""
    path = tmp_path / "wan-i2v-32"
    path.mkdir()
    write_derived_record(path, read_model_folder(real_folder("wan-i2v")),
                         video={"height": rf.HEIGHT, "width": rf.WIDTH, "frames": WINDOW, "fps": FPS})
    return path


def test_wan_i2v_long_video_chains_windows_on_the_last_frame(real_folder, tmp_path, monkeypatch):
    from magicdistill.long_video_real import sample_long_video_real
    from magicdistill.models.families.real import RealPipeline
    from magicdistill.models.families.wan import WanFamily

    calls = []
    encode = WanFamily.encode

    def recording(self, pipe, dit, prompts, image, **kw):
        enc = encode(self, pipe, dit, prompts, image, **kw)
        calls.append({"image": np.asarray(image), "condition": enc.cond.extra["condition"].clone(),
                      "tokens": enc.cond.extra["image_embeds"].clone()})
        return enc

    monkeypatch.setattr(WanFamily, "encode", recording)
    pipe = RealPipeline.from_dir(_folder(real_folder, tmp_path))
    image = rf.first_frame(2)
    video = sample_long_video_real(pipe, image, "a person talking", num_frames=17, height=rf.HEIGHT, width=rf.WIDTH,
                                   frames=WINDOW, seed=3, steps=2, guidance=1.0, shift=3.0, eta=0.0)
    assert video.shape == (17, rf.HEIGHT, rf.WIDTH, 3) and len(calls) == 2  # 9 + 8 frames: two windows
    first, second = calls
    # window 0 is plain generate on the user's image (same seed, same frames)
    alone = RealPipeline.__call__(pipe, image, "a person talking", height=rf.HEIGHT, width=rf.WIDTH, frames=WINDOW,
                                  seed=3, steps=2, guidance=1.0, shift=3.0, eta=0.0)
    from magicdistill.video import tensor_to_frames

    assert np.array_equal(video[:WINDOW], tensor_to_frames(alone))
    # window 1 is conditioned on window 0's last frame, exactly as written (output frame 8)
    assert np.array_equal(second["image"], video[WINDOW - 1])
    assert not np.array_equal(second["image"], first["image"])
    seam = Image.fromarray(video[WINDOW - 1])
    expected = pipe.pipe.prepare_latents(pipe.pipe.video_processor.preprocess(seam, rf.HEIGHT, rf.WIDTH),
                                         1, 16, rf.HEIGHT, rf.WIDTH, WINDOW, torch.float32, "cpu", None,
                                         torch.zeros(1, 16, 3, 4, 4))[1]
    torch.testing.assert_close(second["condition"], expected, atol=0, rtol=0)
    assert (second["condition"] - first["condition"]).abs().max() > 1e-3
    # ... while its CLIP identity tokens are the ORIGINAL image's, not the seam frame's
    torch.testing.assert_close(second["tokens"], first["tokens"], atol=0, rtol=0)
    seam_tokens = pipe.pipe.encode_image(seam, "cpu")
    assert (seam_tokens - second["tokens"]).abs().max() > 1e-3


def test_generate_seconds_on_a_wan_i2v_folder_writes_the_long_video(real_folder, tmp_path):
    model = _folder(real_folder, tmp_path)
    rf.first_frame(2).save(tmp_path / "first.png")
    result = CliRunner().invoke(app, ["generate", "--model", str(model), "--prompt", "a person talking", "--image",
                                      str(tmp_path / "first.png"), "--out", str(tmp_path / "long.mp4"), "--seconds",
                                      str(25 / FPS), "--steps", "2", "--lossless"])
    assert result.exit_code == 0, result.output
    frames, fps = read_video(tmp_path / "long.mp4")
    assert frames.shape == (25, rf.HEIGHT, rf.WIDTH, 3) and fps == FPS  # three windows: 9 + 8 + 8
    result = CliRunner().invoke(app, ["generate", "--model", str(model), "--prompt", "a", "--image",
                                      str(tmp_path / "first.png"), "--out", str(tmp_path / "o.mp4"), "--seconds", "1",
                                      "--overlap", "1"])
    assert result.exit_code == 2 and "--overlap" in result.output and not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_generate_seconds_on_a_hunyuan_i2v_folder(real_folder, tmp_path):
    """HunyuanVideo-I2V windows come without their conditioning frame (diffusers drops it): a 9-frame window
    gives 5 new frames, the conditioning frame is put in front, so windows tile as 6 frames, stride 5."""
    path = tmp_path / "hunyuan-i2v-32"
    path.mkdir()
    write_derived_record(path, read_model_folder(real_folder("hunyuan-i2v")),
                         video={"height": rf.HEIGHT, "width": rf.WIDTH, "frames": WINDOW, "fps": 15.0})
    rf.first_frame(2).save(tmp_path / "first.png")
    result = CliRunner().invoke(app, ["generate", "--model", str(path), "--prompt", "a person talking", "--image",
                                      str(tmp_path / "first.png"), "--out", str(tmp_path / "long.mp4"), "--seconds",
                                      "1", "--steps", "2", "--lossless"])
    assert result.exit_code == 0, result.output
    frames, _ = read_video(tmp_path / "long.mp4")
    assert frames.shape == (15, rf.HEIGHT, rf.WIDTH, 3)  # 6 + 5 + 4 (trimmed): three windows
    assert np.array_equal(frames[0], np.asarray(rf.first_frame(2)))  # the video starts on the user's image
