"""The Python API (magicdistill.load_pipeline): recorded defaults, inputs, progress, save; the README example
as written; the CLI's stderr free of third-party noise."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magicdistill.video import read_video

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "portrait.png"
PROMPT = (REPO / "examples" / "portrait.txt").read_text().strip()


@pytest.fixture(scope="module")
def gen():
    from magicdistill import load_pipeline

    return load_pipeline()


def test_import_is_light():
    """`import magicdistill` must not import torch (the API loads it on first use)."""
    code = "import sys, magicdistill; assert 'torch' not in sys.modules; print(magicdistill.load_pipeline.__module__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "magicdistill.api"


def test_defaults_are_the_recorded_settings(gen):
    from magicdistill import load_pipeline

    s = gen.settings
    assert (s.steps, s.guidance, s.shift, s.eta, s.sampler) == (4, 1.0, 5.0, 0.0, "euler")
    assert (gen.info.height, gen.info.width, gen.info.num_frames, gen.info.fps) == (64, 64, 17, 8.0)
    teacher = load_pipeline("teacher")
    assert (teacher.settings.steps, teacher.settings.guidance) == (50, 2.0)
    assert teacher.resolve().steps == 50 and teacher.resolve(steps=3).steps == 3


def test_call_uses_the_recorded_settings_and_counts_steps(gen):
    """A call without steps/guidance samples exactly as the pipeline does at 4 steps, guidance 1 (and not at
    the old 50 steps, guidance 6), reporting progress once per step."""
    from magicdistill.video import frames_to_tensor, load_image, tensor_to_frames

    seen = []
    video = gen(EXAMPLE, prompt=PROMPT, seed=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (video.settings.steps, video.settings.guidance) == (4, 1.0)
    assert video.frames.shape == (17, 64, 64, 3) and video.frames.dtype == np.uint8 and video.fps == 8.0
    low = gen._pipe  # the I2VPipeline it wraps, called with the settings spelled out
    image = frames_to_tensor(load_image(EXAMPLE, 64, 64)[None])[:, 0][None]
    expected = tensor_to_frames(low(image, PROMPT, seed=3, steps=4, guidance=1.0))
    np.testing.assert_array_equal(video.frames, expected)


def test_pil_path_and_array_inputs_give_identical_frames(gen):
    from PIL import Image

    a = gen(str(EXAMPLE), prompt=PROMPT, steps=1, frames=5)
    b = gen(Image.open(EXAMPLE), prompt=PROMPT, steps=1, frames=5)
    c = gen(np.asarray(Image.open(EXAMPLE).convert("RGB")), prompt=PROMPT, steps=1, frames=5)
    for other in (b, c):
        np.testing.assert_array_equal(a.frames, other.frames)
    assert a.frames.shape == (5, 64, 64, 3) and a.first_frame.shape == (64, 64, 3)
    e = gen(Image.open(EXAMPLE).rotate(90), prompt=PROMPT, steps=1, frames=5)
    assert not np.array_equal(a.frames, e.frames)  # the image matters, so the equalities above mean something


def test_frames_seconds_prior_and_save(gen, tmp_path):
    short = gen(EXAMPLE, prompt=PROMPT, steps=1, frames=9)
    assert short.frames.shape[0] == 9
    long = gen(None, prompt="a person with short red hair. The person is talking.", steps=1, seconds=3)
    assert long.frames.shape[0] == 24 and long.seconds == 3.0  # > one 17-frame clip: the sliding window
    assert long.prior["source"] == "retrieval" and "red hair" in long.prior["caption"]
    path = long.save(tmp_path / "sub" / "v.mp4")
    frames, fps = read_video(path)
    assert frames.shape == (24, 64, 64, 3) and fps == pytest.approx(8.0)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["v.mp4"]  # atomic: no temporary left


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": " "}, "prompt is empty"),
    ({"steps": 0}, "steps must be"),
    ({"guidance": -1.0}, "guidance must be"),
    ({"frames": 0}, "frames must be"),
    ({"frames": 9, "seconds": 2}, "either frames or seconds"),
    ({"seconds": 10_000}, "too long"),
    ({"image": 3}, "image must be"),
])
def test_bad_arguments_are_value_errors(gen, kwargs, message):
    kwargs = {"image": EXAMPLE, "prompt": PROMPT, **kwargs}
    with pytest.raises(ValueError, match=message):
        gen(**kwargs)


def test_bad_model_folder(tmp_path):
    from magicdistill import load_pipeline

    with pytest.raises(ValueError, match="no model at"):
        load_pipeline(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline(dtype="int3")


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    code = readme_python_example()
    assert len(code.strip().splitlines()) <= 6
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    written = [p for p in tmp_path.rglob("*.mp4")]
    assert len(written) == 1
    frames, fps = read_video(written[0])
    assert frames.shape == (17, 64, 64, 3) and fps == pytest.approx(8.0)


NOISE = ["_pytree", "Unable to import", "should be kept in float32", "_C_mxfp8", "Failed to load"]


@pytest.mark.slow  # a full `generate` process; the server's stderr is checked the same way in the default suite
def test_cli_stderr_has_no_third_party_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY")}
    r = subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(EXAMPLE), "--prompt", PROMPT,
                        "--steps", "1", "--out", str(tmp_path / "v.mp4")], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    for noise in NOISE:
        assert noise not in r.stderr, r.stderr


def test_library_users_keep_warnings():
    """The filter is the command line's only: a library user still sees a third-party warning."""
    code = ("import warnings, magicdistill.cli\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    warnings.warn('third-party', UserWarning)\n"
            "print(len(w))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_cli_keeps_our_own_warnings():
    code = ("import warnings\nfrom magicdistill.cli import _quiet\n_quiet()\n"
            "exec(compile(\"import warnings; warnings.warn('ours', UserWarning)\", 'x', 'exec'), "
            "{'__name__': 'magicdistill.something'})\n"
            "exec(compile(\"import warnings; warnings.warn('theirs', UserWarning)\", 'x', 'exec'), "
            "{'__name__': 'diffusers.models'})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ours" in r.stderr and "theirs" not in r.stderr


def test_model_names_and_folders(tmp_path, monkeypatch):
    from magicdistill.api import resolve_model, shipped_model

    monkeypatch.chdir(tmp_path)
    assert resolve_model(None) == shipped_model("generator")
    assert resolve_model("teacher") == shipped_model("teacher")
    (tmp_path / "teacher").mkdir()  # a folder of that name here wins over the shipped name
    assert resolve_model("teacher") == Path("teacher")
    assert resolve_model(tmp_path / "x") == tmp_path / "x"


def test_cli_generate_goes_through_the_api(tmp_path, monkeypatch):
    """`magicdistill generate` (run in-process) loads its model and samples through api.Pipeline: the spy sees
    one call on the folder the flags name, sampling with that folder's recorded settings where no flag is
    given, and the mp4 holds exactly the frames the API returned."""
    from typer.testing import CliRunner

    from magicdistill import api
    from magicdistill.cli import app
    from magicdistill.pipeline import SHIPPED_DIR, model_sampler, read_record

    calls, original = [], api.Pipeline.__call__

    def spy(self, *args, **kwargs):
        video = original(self, *args, **kwargs)
        calls.append((self, video))
        return video

    monkeypatch.setattr(api.Pipeline, "__call__", spy)
    out = tmp_path / "t.mp4"
    r = CliRunner().invoke(app, ["generate", "--prompt", PROMPT, "--image", str(EXAMPLE), "--teacher", "--steps", "1",
                                 "--frames", "5", "--seed", "2", "--lossless", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1
    pipe, video = calls[0]
    assert pipe.info.path == str((SHIPPED_DIR / "teacher").resolve())
    rec = model_sampler(read_record(SHIPPED_DIR / "teacher"))
    assert rec["guidance"] != 1.0  # the teacher's CFG: a default the generator would not give
    assert video.settings == api.Settings(steps=1, guidance=rec["guidance"], shift=rec["shift"], eta=rec["eta"],
                                          sampler=rec["kind"])
    assert video.seed == 2 and video.frames.shape == (5, 64, 64, 3)
    written, fps = read_video(out)
    np.testing.assert_array_equal(written, video.frames)
    assert fps == video.fps == pipe.info.fps
