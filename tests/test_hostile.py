"""Hostile inputs and faults: each is a one-line `error:` with exit code 2, leaves no file behind and the
inputs untouched; runs refuse what would destroy or interleave work; divergence never reaches a checkpoint.

The CLI cases run in-process (typer's CliRunner: the same command functions, no model loads)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from magicdistill.cli import app
from magicdistill.config import DistillConfig
from magicdistill.pipeline import SHIPPED_DIR

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def world(tmp_path):
    """An input image, an output folder, a copy of the shipped generator (with its VAE beside it)."""
    Image.new("RGB", (50, 30), (200, 120, 90)).save(tmp_path / "face.png")
    shutil.copytree(SHIPPED_DIR / "generator", tmp_path / "models" / "generator")
    shutil.copytree(SHIPPED_DIR / "vae", tmp_path / "models" / "vae")
    (tmp_path / "out").mkdir()
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def _corrupt(kind):
    def f(w: Path):
        weights = w / "models" / "generator" / "transformer" / "diffusion_pytorch_model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes({"truncated": data[: len(data) // 2], "zero": b"", "garbage": os.urandom(4096)}[kind])
    return f


def _record(text):
    def f(w: Path):
        (w / "models" / "generator" / "dit.json").write_text(text)
    return f


MODEL = ["--model", "{w}/models/generator"]
CASES = {  # name: (extra args, setup, what the error line must contain)
    "guidance nan": (["--guidance", "nan"], None, "--guidance must be a finite number"),
    "guidance inf": (["--guidance", "inf"], None, "--guidance must be a finite number"),
    "guidance 1e30": (["--guidance", "1e30"], None, "--guidance must be a finite number"),
    "shift nan": (["--shift", "nan"], None, "--shift must be a finite number"),
    "shift inf": (["--shift", "inf"], None, "--shift must be a finite number"),
    "eta nan": (["--eta", "nan"], None, "--eta must be in [0, 1], got nan"),
    "seed 2**70": (["--seed", str(2 ** 70)], None, "--seed must be in"),
    "seed negative": (["--seed", "-1"], None, "--seed must be in"),
    "frames 4096": (["--frames", "4096"], None, "--frames 4096 is too long"),
    "steps 1e6": (["--steps", "1000000"], None, "--steps 1000000 is more than 1000"),
    "device bogus": (["--device", "bogus"], None, "--device 'bogus' is not a device"),
    "upscale 0": (["--upscale", "0"], None, "--upscale must be"),
    "out is the image": (["--out", "{w}/in.mp4", "--image", "{w}/in.mp4"],
                         lambda w: shutil.copy(w / "face.png", w / "in.mp4"), "is the --image file"),
    "out under a file": (["--out", "{w}/a_file/v.mp4"], None, "is a file, not a folder"),
    "out name too long": (["--out", "{w}/out/" + "n" * 300 + ".mp4"], None, "the file system allows 255"),
    "truncated weights": (MODEL, _corrupt("truncated"), "is truncated"),
    "zero-byte weights": (MODEL, _corrupt("zero"), "not a valid safetensors file"),
    "garbage weights": (MODEL, _corrupt("garbage"), "diffusion_pytorch_model.safetensors"),
    "dit.json a list": (MODEL, _record("[1, 2]"), "dit.json must hold a JSON object"),
    "dit.json wrong type": (MODEL, _record('{"height": "64", "width": 64}'), "dit.json: height must be a positive"),
    "dit.json NaN guidance": (MODEL, _record('{"sampler": {"guidance": NaN}}'), "sampler.guidance must be a finite"),
    "dit.json not JSON": (MODEL, _record('{"height": 64,'), "dit.json is not valid JSON"),
    "non-UTF-8 prompt": (["--prompt", "caf\udce9"], None, "--prompt is not valid UTF-8"),
    "image bomb": (["--image", "{w}/big.png"], lambda w: Image.new("RGB", (300, 300)).save(w / "big.png"),
                   "too large to read safely"),
}
if not torch.cuda.is_available():
    CASES["device cuda without CUDA"] = (["--device", "cuda"], None, "--device cuda:")
if os.geteuid() != 0:  # root may write anywhere
    CASES["read-only out"] = (["--out", "{w}/ro/v.mp4"], lambda w: ((w / "ro").mkdir(), (w / "ro").chmod(0o500)),
                              "is not writable")


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_hostile_inputs(world, case, monkeypatch):
    extra, setup, needle = CASES[case]
    if setup:
        setup(world)
    if case == "image bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # stands in for a 20000x20000 image: same code path
    args = ["generate", "--image", str(world / "face.png"), "--prompt", "a person talking",
            "--out", str(world / "out" / "v.mp4")]
    for i in range(0, len(extra), 2):  # a case's flag replaces the default one
        flag, value = extra[i], extra[i + 1].format(w=world)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    before = _tree(world)
    r = CliRunner().invoke(app, args)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert _tree(world) == before  # nothing written, nothing changed (inputs included)


def test_train_flags_and_config_files(tmp_path):
    """Non-finite flags never reach a record (config.json, teacher/dit.json); --config missing or a folder."""
    runner = CliRunner()
    for args, needle in ((["--guidance", "inf"], "guidance"), (["--train-shift", "nan"], "train_shift"),
                         (["--seed", str(2 ** 70)], "seed"), (["--config", str(tmp_path / "no.json")], "not found"),
                         (["--config", str(tmp_path)], "is not a file"), (["--device", "bogus"], "--device")):
        r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--steps", "1", *args])
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr)
    (tmp_path / "bad.json").write_text("{not json")
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--config", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "bad.json is not valid JSON" in r.stderr
    assert not (tmp_path / "run").exists()


def test_images_are_normalised(tmp_path):
    from magicdistill.video import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)  # 16-bit greyscale
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    px = load_image(tmp_path / "g16.png", 64, 64)
    assert px[0, 0, 0] == 0 and px[-1, -1, 0] == 255 and 120 < px.mean() < 135  # a ramp, not all white
    pal = Image.new("P", (40, 40))
    pal.putpalette([0, 0, 255] * 256)
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png", 16, 16)[5, 5].tolist() == [0, 0, 255]
    # EXIF orientation 6 (rotate 90 CW to view): stored 40 wide x 20 tall with a red left half
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    seen = load_image(tmp_path / "rot.jpg", 40, 20)  # viewed: 20 wide x 40 tall, red on top
    assert seen[5, 10, 0] > 200 and seen[35, 10, 0] < 60


# ---------------------------------------------------------------------------------------------- runs
def _cfg(**kw):
    return DistillConfig(**{"iters": 6, **kw})


def test_out_holding_a_run_or_model_is_refused_unless_overwrite(tmp_path):
    from magicdistill.train.run import Run

    out = tmp_path / "run"
    shutil.copytree(SHIPPED_DIR / "generator", out / "generator")
    before = _tree(out)
    with pytest.raises(ValueError, match="already holds a run .*generator.*--overwrite"):
        Run(out, _cfg())
    assert _tree(out) == before
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_DIR / "generator", model)
    with pytest.raises(ValueError, match="holds a model folder"):
        Run(model, _cfg())
    assert not (model / ".lock").exists()
    run = Run(out, _cfg(), overwrite=True)
    run.close()
    assert (out / "generator" / "dit.json").is_file()  # replaced only when the new run writes its own
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError):
        Run(fresh, _cfg(), resume=True)
    assert not fresh.exists()  # a refused new folder is not left behind


def test_one_writer_per_run_folder_and_stale_lock_taken_over(tmp_path):
    from magicdistill.train.run import Run

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from magicdistill.runlock import RunLock; "
                               "RunLock(sys.argv[1]); print('locked', flush=True); time.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"in use by pid {holder.pid} on "):
            Run(out, _cfg())
        assert not (out / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run = Run(out, _cfg())  # the killed owner's lock is free: taken over
    assert run._lock.took_over and json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    run.close()
    assert (out / ".lock").read_text() == ""  # released: no owner recorded


def test_resume_refuses_a_contradicting_config_and_keeps_each_metric_once(tmp_path):
    from magicdistill.train.run import Run

    out, lin = tmp_path / "run", torch.nn.Linear(2, 2)
    run = Run(out, _cfg(), may_change=("iters",), length_key="iters", identity={"teacher": "/a"})
    for step in range(1, 6):
        run.log(step, loss=float(step))
        if step == 3:
            run.save(step, {"m": lin}, {})
    run.close()  # "killed" after step 5, checkpoint at 3
    with pytest.raises(ValueError, match="--iters 2 is fewer than the 3 already done"):
        Run(out, _cfg(iters=2), resume=True, may_change=("iters",), length_key="iters", identity={"teacher": "/a"})
    with pytest.raises(ValueError, match="another teacher"):
        Run(out, _cfg(), resume=True, may_change=("iters",), length_key="iters", identity={"teacher": "/b"})
    with pytest.raises(ValueError, match="differs .* in method"):
        Run(out, _cfg(method="lcm"), resume=True, may_change=("iters",), length_key="iters", identity={"teacher": "/a"})
    assert json.loads((out / "config.json").read_text())["iters"] == 6  # refusals rewrite nothing
    run = Run(out, _cfg(iters=8), resume=True, may_change=("iters",), length_key="iters", identity={"teacher": "/a"})
    for step in range(4, 9):
        run.log(step, loss=float(step))
    run.close()
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_interrupt_says_what_was_kept_and_releases_the_lock(tmp_path):
    from magicdistill.train.run import Run, closes_runs

    @closes_runs
    def trainer(out, save_at):
        run = Run(out, _cfg())
        for step in range(1, 10):
            run.check_finite(step, loss=1.0)
            if step == save_at:
                run.save(step, {"m": torch.nn.Linear(2, 2)}, {})
            if step == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="stopped at iteration 5; no checkpoint was written yet"):
        trainer(tmp_path / "a", save_at=99)
    with pytest.raises(KeyboardInterrupt, match=r"stopped at iteration 5; kept the checkpoint of step 4 in .*--resume"):
        trainer(tmp_path / "b", save_at=4)
    Run(tmp_path / "b", _cfg(), resume=True).close()  # the lock was released


def test_kill_during_the_final_generator_swap_keeps_a_whole_model(tmp_path):
    """kill -9 between the two renames of the generator/ swap, and during the write: the folder (or its
    previous version) survives whole, and the next run of the folder puts it back."""
    from magicdistill.pipeline import read_record
    from magicdistill.train.run import Run

    out = tmp_path / "run"
    shutil.copytree(SHIPPED_DIR / "generator", out / "generator")
    Run(out, _cfg(), overwrite=True).close()
    old = _tree(out / "generator")
    script = ("import os, sys, shutil, signal; from pathlib import Path; import magicdistill.atomic as a\n"
              "real, n = os.replace, [0]\n"
              "def replace(src, dst):\n"
              "    real(src, dst); n[0] += 1\n"
              "    if n[0] == int(sys.argv[2]): os.kill(os.getpid(), signal.SIGKILL)\n"
              "a.os.replace = replace\n"
              "with a.atomic_folder(Path(sys.argv[1]) / 'generator') as tmp:\n"
              "    (tmp / 'dit.json').write_text('{}')\n"
              "    if sys.argv[2] == '0': os.kill(os.getpid(), signal.SIGKILL)\n")
    for kill_at in ("1", "0"):  # after the old folder moved aside; while the new one is written
        r = subprocess.run([sys.executable, "-c", script, str(out), kill_at], env={**os.environ, "PYTHONPATH": SRC})
        assert r.returncode == -signal.SIGKILL
        leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("generator"))
        assert leftovers == {"1": ["generator.old", "generator.tmp"], "0": ["generator", "generator.tmp"]}[kill_at]
        Run(out, _cfg(), resume=False, overwrite=True).close()  # the next run of the folder recovers it
        assert sorted(p.name for p in out.iterdir() if p.name.startswith("generator")) == ["generator"]
        assert _tree(out / "generator") == old and read_record(out / "generator")["sampler"]["steps"] == 4


# ------------------------------------------------------------------------------------- divergence
@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from toys import write_tiny_teacher

    return write_tiny_teacher(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("method", ["lcm", pytest.param("cfg", marks=pytest.mark.slow),
                                    pytest.param("w2s", marks=pytest.mark.slow)])  # one loop: lcm shows it
def test_non_finite_loss_stops_before_any_save(tmp_path, tiny_teacher, monkeypatch, method):
    """checkpoint_every (1) < log_every (5): the divergence at iteration 3 is caught before its checkpoint;
    the checkpoint kept is step 2's and finite, and no generator or sample is written."""
    from magicdistill.distill import trainer
    from magicdistill.train.checkpoint import load_checkpoint

    method_cls = type(trainer.build_method(trainer.VideoDiT.load(tiny_teacher), _small(method)))
    real_step = method_cls.step

    def diverging(self, batch, it, g):
        metrics = real_step(self, batch, it, g)
        if it == 2:  # the weights blow up and the loss computed this iteration says so
            with torch.no_grad():
                for m in self.modules().values():
                    for p in m.parameters():
                        p.fill_(float("nan"))
            metrics = {**metrics, next(iter(metrics)): float("nan")}
        return metrics

    monkeypatch.setattr(method_cls, "step", diverging)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"non-finite loss\w* = nan at iteration 3: stopped, nothing saved from it; "
                                         r"kept the checkpoint of step 2"):
        trainer.distill(_small(method), tiny_teacher, out, cache_dir=tmp_path / "cache")
    ck = {}
    meta = load_checkpoint(out / "checkpoint", modules=None)
    assert meta["step"] == 2
    from safetensors.torch import load_file

    for f in (out / "checkpoint").glob("*.safetensors"):
        ck.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    assert ck and all(torch.isfinite(v).all() for v in ck.values() if v.is_floating_point())
    assert not (out / "generator").exists() and not list((out / "samples").iterdir())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from magicdistill.train.run import NonFiniteLoss, Run

    run = Run(tmp_path / "run", _cfg())
    lin = torch.nn.Linear(2, 2)
    run.save(1, {"m": lin}, {})
    with torch.no_grad():
        lin.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match=r"non-finite weights in m \(weight\) at iteration 2: not saved; kept the "
                                            r"checkpoint of step 1"):
        run.save(2, {"m": lin}, {})
    run.close()


def _small(method):
    return DistillConfig(method=method, iters=6, batch_size=2, lora_rank=4, num_clips=8, log_every=5,
                         checkpoint_every=1, sample_every=100)


# ------------------------------------------------------------------------------------------ atomic
def test_atomic_file_keeps_the_real_error_and_short_temp_names(tmp_path, monkeypatch):
    from magicdistill import atomic

    long = tmp_path / ("v" * 250 + ".mp4")  # 254 bytes: the old temp name (+pid, .tmp.mp4) overflowed 255
    with atomic.atomic_file(long, suffix=".mp4") as tmp:
        assert len(tmp.name) < 80
        tmp.write_bytes(b"ok")
    assert long.read_bytes() == b"ok"

    def failing_unlink(self, missing_ok=False):
        raise PermissionError("cleanup failed")

    with pytest.raises(OSError, match="No space left"):
        with atomic.atomic_file(tmp_path / "f.bin") as tmp:
            monkeypatch.setattr(Path, "unlink", failing_unlink)
            raise OSError(28, "No space left on device")


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    from magicdistill import atomic

    target = tmp_path / "o.mp4"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = target.with_name(f"{atomic._temp_prefix(target)}{dead.pid}.tmp.mp4")
    stale.write_bytes(b"half")
    live = target.with_name(f"{atomic._temp_prefix(target)}{os.getppid()}.tmp.mp4")  # a running writer's
    live.write_bytes(b"in progress")
    with atomic.atomic_file(target, suffix=".mp4") as tmp:
        tmp.write_bytes(b"new")
    assert not stale.exists() and live.exists() and target.read_bytes() == b"new"


@pytest.mark.parametrize("damage", ["truncated", "zero", "garbage", "missing optimizer", "missing config"])
def test_damaged_run_folder_is_a_clean_error_on_resume(tmp_path, damage):
    from magicdistill.train.run import Run

    out, lin = tmp_path / "run", torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 4)).sum().backward()
    opt.step()
    run = Run(out, _cfg())
    run.save(1, {"m": lin}, {"m": opt})
    run.close()
    weights = out / "checkpoint" / "m.safetensors"
    if damage == "missing optimizer":
        (out / "checkpoint" / "optim_m.safetensors").unlink()
    elif damage == "missing config":
        (out / "config.json").unlink()
    else:
        data = weights.read_bytes()
        weights.write_bytes({"truncated": data[:-10], "zero": b"", "garbage": os.urandom(300)}[damage])
    needle = {"truncated": "m.safetensors is truncated", "zero": "m.safetensors is not a valid safetensors",
              "garbage": "m.safetensors", "missing optimizer": "optim_m.safetensors is missing",
              "missing config": "config.json is missing"}[damage]
    with pytest.raises(ValueError, match=needle):
        run = Run(out, _cfg(), resume=True)
        try:
            run.resume({"m": torch.nn.Linear(4, 4)}, {"m": torch.optim.AdamW(torch.nn.Linear(4, 4).parameters())})
        finally:
            run.close()


@pytest.mark.parametrize("command", ["quantize", "cast-weights"])
@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_copies_of_a_damaged_model_folder_are_clean_errors(world, command, kind):
    """quantize and cast-weights check the source's weights before writing anything."""
    _corrupt(kind)(world)
    before = _tree(world)
    r = CliRunner().invoke(app, [command, "--model", str(world / "models" / "generator"),
                                 "--out", str(world / "out" / "copy")])
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert len(lines) == 1 and lines[0].startswith("error:") and "diffusion_pytorch_model.safetensors" in lines[0]
    assert _tree(world) == before
