"""Pixels in and out: mp4 round trip, the image resize/crop rule, atomic writes."""

import numpy as np
import pytest
from PIL import Image

from magicdistill.video import fit_image, frames_to_tensor, load_image, read_video, tensor_to_frames, write_mp4


def test_mp4_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), 4, 1), 4, 2)
    path = write_mp4(tmp_path / "a.mp4", frames, fps=12)
    back, fps = read_video(path)
    assert back.shape == frames.shape and fps == pytest.approx(12)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 12
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_odd_sizes_are_padded(tmp_path):
    frames = np.zeros((3, 33, 35, 3), np.uint8)
    back, _ = read_video(write_mp4(tmp_path / "odd.mp4", frames, fps=8))
    assert back.shape == (3, 34, 36, 3)


def test_tensor_frames_round_trip():
    frames = np.random.default_rng(1).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(tensor_to_frames(frames_to_tensor(frames)), frames)


def test_cover_and_centre_crop_rule(tmp_path):
    # a 4:3 image with a red centre square: the crop keeps the centre, scales to cover 64x64
    img = np.zeros((120, 160, 3), np.uint8)
    img[:, 20:140] = (0, 0, 255)
    img[40:80, 60:100] = (255, 0, 0)
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 64, 64)
    assert out.shape == (64, 64, 3)
    assert out[32, 32, 0] > 200 and out[32, 32, 2] < 50  # centre is red
    assert out[2, 2, 2] > 200  # the sides outside the blue band were cropped away
    tall = fit_image(Image.fromarray(np.zeros((300, 50, 3), np.uint8)), 64, 64)
    assert tall.shape == (64, 64, 3)


def test_read_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(tmp_path / "bad.mp4")
