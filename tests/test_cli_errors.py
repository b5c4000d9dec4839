"""Bad input: a one-line error, a non-zero exit, and no output file. Validation happens before any
model loads, so these run in a second each."""

import subprocess
import sys

import pytest
from PIL import Image


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "magicdistill", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture
def png(tmp_path):
    p = tmp_path / "face.png"
    Image.new("RGB", (50, 30), (200, 120, 90)).save(p)
    return p


def _assert_one_line_error(r, out, needle):
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob("*.mp4")) and not list(out.parent.glob(".*tmp*"))


@pytest.mark.parametrize("case,needle", [
    ("missing", "image not found"),
    ("dir", "not a file"),
    ("notimage", "cannot read"),
    ("empty_prompt", "prompt is empty"),
    ("zero_frames", "--frames must be > 0"),
    ("neg_frames", "--frames must be > 0"),
    ("bad_steps", "--steps must be >= 1"),
    ("bad_eta", "--eta must be in [0, 1]"),
    ("bad_out", "must end in .mp4"),
    ("unknown_option", "No such option"),
    ("bad_type", "--frames"),
])
def test_generate_bad_input(tmp_path, png, case, needle):
    out = tmp_path / "out" / "video.mp4"
    out.parent.mkdir()
    args = ["generate", "--image", str(png), "--prompt", "a person talking", "--out", str(out)]
    if case == "missing":
        args[2] = str(tmp_path / "nope.png")
    elif case == "dir":
        args[2] = str(tmp_path)
    elif case == "notimage":
        bad = tmp_path / "notes.png"
        bad.write_text("this is not an image")
        args[2] = str(bad)
    elif case == "empty_prompt":
        args[4] = "   "
    elif case == "zero_frames":
        args += ["--frames", "0"]
    elif case == "neg_frames":
        args += ["--frames", "-3"]
    elif case == "bad_steps":
        args += ["--steps", "0"]
    elif case == "bad_eta":
        args += ["--eta", "1.5"]
    elif case == "bad_out":
        out = tmp_path / "out" / "video.avi"
        args[-1] = str(out)
    elif case == "unknown_option":
        args += ["--colour", "blue"]
    elif case == "bad_type":
        args += ["--frames", "many"]
    _assert_one_line_error(run(*args), out, needle)


def test_train_config_errors(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"steps": 10, "stepz": 3}')
    r = run("train", "--out", str(tmp_path / "run"), "--config", str(cfg))
    assert r.returncode == 2 and "unknown key 'stepz'" in r.stderr
    cfg.write_text('{"steps": -1}')
    r = run("train", "--out", str(tmp_path / "run"), "--config", str(cfg))
    assert r.returncode == 2 and "steps" in r.stderr
    assert not (tmp_path / "run").exists()
    for flags, needle in ((["--embed-tokens", "4"], "embed_tokens"), (["--skip", "wiener"], "skip"),
                          (["--train-shift", "0"], "train_shift")):
        r = run("train", "--out", str(tmp_path / "run"), *flags, "--dry-run")
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_resolved_config(tmp_path):
    r = run("train", "--out", str(tmp_path / "run"), "--steps", "7", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert '"steps": 7' in r.stdout and '"task": "i2v"' in r.stdout
    r = run("train", "--out", str(tmp_path / "run"), "--embed-tokens", "5", "--skip", "gated", "--image-padding", "repeat",
            "--train-shift", "1", "--dry-run")
    assert r.returncode == 0, r.stderr
    for field in ('"embed_tokens": 5', '"skip": "gated"', '"image_padding": "repeat"', '"train_shift": 1.0'):
        assert field in r.stdout, field
    assert not (tmp_path / "run").exists()


def test_sampler_settings_precedence():
    from magicdistill.generate import sampler_settings

    assert sampler_settings({}, None, None, None) == (50, 6.0, 5.0, 0.0)
    gen = {"sampler": {"steps": 4, "shift": 5.0, "guidance": 1.0}}
    assert sampler_settings(gen, None, None, None) == (4, 1.0, 5.0, 0.0)
    assert sampler_settings(gen, 8, 2.0, 3.0, 0.5) == (8, 2.0, 3.0, 0.5)
    teacher = {"sampler": {"steps": 50, "shift": 5.0, "guidance": 2.0, "eta": 1.0}}
    assert sampler_settings(teacher, None, None, None) == (50, 2.0, 5.0, 1.0)
    assert sampler_settings(teacher, None, None, None, 0.0)[3] == 0.0
