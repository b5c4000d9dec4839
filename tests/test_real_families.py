"""Real model families (Wan T2V / I2V, HunyuanVideo T2V / I2V) on tiny random-weight diffusers folders.

The folders come from tests/real_fixtures.py (diffusers' own classes, saved with save_pretrained).
The strongest check: for the same initial noise, our sampler on the folder's scheduler settings gives
the latents diffusers' own pipeline returns with output_type="latent" (max abs difference < 1e-4 on
latents of magnitude ~4; measured 0 - 2e-6 in float32).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app
from magicdistill.models.folder import read_model_folder, write_derived_record, write_record

KINDS = ("wan-t2v", "wan-i2v", "hunyuan-t2v", "hunyuan-i2v")
TOL = 1e-4


def euler_copy(folder: Path, dest: Path) -> Path:
    """``folder`` with its scheduler replaced by FlowMatchEulerDiscreteScheduler at the same shift: the
    published Wan folders ship UniPC, which we sample with Euler on its sigmas, so latents match
    diffusers only when both use Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if dest.exists():
        return dest
    shutil.copytree(folder, dest)
    shift = read_model_folder(folder).sampler.shift
    shutil.rmtree(dest / "scheduler")
    FlowMatchEulerDiscreteScheduler(shift=shift).save_pretrained(dest / "scheduler")
    index = json.loads((dest / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (dest / "model_index.json").write_text(json.dumps(index))
    return dest


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# --- the record ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,family,task,shift", [("wan-t2v", "wan", "t2v", 3.0), ("wan-i2v", "wan", "i2v", 3.0),
                                                    ("hunyuan-t2v", "hunyuan", "t2v", 7.0),
                                                    ("hunyuan-i2v", "hunyuan", "i2v", 7.0)])
def test_record_reads_a_plain_diffusers_folder(real_folder, kind, family, task, shift):
    folder = read_model_folder(real_folder(kind))
    assert (folder.layout, folder.family, folder.task) == ("diffusers", family, task)
    assert folder.sampler.shift == shift  # from the scheduler's config (UniPC's flow_shift / Euler's shift)
    assert folder.sampler.steps == 50
    assert folder.component_path("vae") == real_folder(kind) / "vae"
    assert folder.video.frames == (81 if family == "wan" else 129)  # the pipeline's own default


def test_derived_folder_reads_missing_components_from_a_relative_base(real_folder, tmp_path):
    base = tmp_path / "models" / "wan"
    shutil.copytree(real_folder("wan-t2v"), base)
    gen = tmp_path / "runs" / "gen"
    (gen / "transformer").mkdir(parents=True)
    shutil.copy(base / "transformer" / "config.json", gen / "transformer" / "config.json")
    write_derived_record(gen, read_model_folder(base), sampler={"kind": "euler", "steps": 4, "shift": 5.0,
                                                                "guidance": 1.0, "eta": 0.0}, method="w2s")
    rec = json.loads((gen / "magicdistill.json").read_text())
    assert rec["base"] == "../../models/wan" and rec["family"] == "wan"
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "runs", moved / "runs")
    shutil.move(tmp_path / "models", moved / "models")  # both moved together: the relative base still resolves
    folder = read_model_folder(moved / "runs" / "gen")
    assert folder.layout == "derived" and folder.sampler.steps == 4 and folder.record["method"] == "w2s"
    assert folder.component_path("transformer") == moved / "runs" / "gen" / "transformer"  # its own
    assert folder.component_path("vae") == (moved / "models" / "wan" / "vae").resolve()  # the base's


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_a_record_are_one_line_errors(tmp_path, bad):
    shutil.copytree(Path(__file__).parents[1] / "src/magicdistill/checkpoints/tiny/generator", tmp_path / "g")
    text = (tmp_path / "g" / "dit.json").read_text().replace('"guidance": 1.0', f'"guidance": {bad}')
    (tmp_path / "g" / "dit.json").write_text(text)
    with pytest.raises(ValueError, match=r"dit.json.*non-finite"):
        read_model_folder(tmp_path / "g")
    with pytest.raises(ValueError, match="non-finite"):
        write_record(tmp_path / "x.json", {"sampler": {"shift": float(bad.lower().replace("infinity", "inf"))}})
    assert not (tmp_path / "x.json").exists()


def test_shipped_tiny_folders_read_as_before():
    folder = read_model_folder(Path(__file__).parents[1] / "src/magicdistill/checkpoints/tiny/generator")
    assert (folder.layout, folder.family, folder.task) == ("tiny", "tiny", "i2v")
    assert (folder.sampler.steps, folder.sampler.guidance, folder.sampler.shift) == (4, 1.0, 5.0)
    assert folder.component_path("vae").name == "vae"


# --- our denoise equals diffusers' pipeline ------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, pytest.param("wan22-ti2v", marks=pytest.mark.slow),
                                  pytest.param("wan22-a14b", marks=pytest.mark.slow)])
def test_latents_equal_diffusers_pipeline(real_folder, tmp_path_factory, kind):
    """Same noise, same prompt (and first frame), 2 steps, CFG on where the family has it: our latents =
    diffusers' ``output_type="latent"`` latents."""
    from diffusers import DiffusionPipeline

    from magicdistill.models.families.real import RealPipeline

    torch.manual_seed(0)
    folder = real_folder(kind)
    if kind.startswith("wan"):
        folder = euler_copy(folder, tmp_path_factory.mktemp("euler") / kind)
    ours = RealPipeline.from_dir(folder)
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    kw = rf.call_kwargs(kind, pipe)
    r = ours.vae.spatial_ratio  # Wan 2.2 TI2V's VAE: 48 channels, /16
    shape = (1, ours.dit.latent_channels, (rf.FRAMES - 1) // 4 + 1, rf.HEIGHT // r, rf.WIDTH // r)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    guidance = 6.0 if kind == "hunyuan-t2v" else 3.0  # HunyuanVideo T2V: embedded; the others: a CFG pair
    if kind == "wan22-a14b":  # two experts, switched at sigma = boundary_ratio: 2 steps stay on the first
        kw["num_inference_steps"] = 4
    kw.update(latents=noise.clone(), output_type="latent", guidance_scale=guidance)
    if kind == "hunyuan-i2v":  # no guidance embedding: diffusers' "true CFG" with the empty negative prompt
        kw.update(true_cfg_scale=guidance, negative_prompt="", guidance_scale=1.0)
    ref = pipe(**kw).frames
    steps = kw["num_inference_steps"]
    mine = ours.latents(kw.get("image"), kw["prompt"], height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES, steps=steps,
                        guidance=guidance, shift=ours.folder.sampler.shift, noise=noise.clone(),
                        max_sequence_length=kw.get("max_sequence_length"))
    assert mine.shape == ref.shape
    assert (mine - ref).abs().max().item() < TOL
    # and the comparison can fail: another guidance scale moves the latents far beyond the tolerance
    other = ours.latents(kw.get("image"), kw["prompt"], height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES, steps=steps,
                         guidance=guidance * 3, shift=ours.folder.sampler.shift, noise=noise.clone(),
                         max_sequence_length=kw.get("max_sequence_length"))
    assert (other - ref).abs().max().item() > 10 * TOL


# --- the CLI -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS + ("hunyuan15-t2v", "hunyuan15-i2v"))
def test_generate_cli_writes_the_asked_video(real_folder, tmp_path, kind):
    from magicdistill.video import read_video

    args = ["generate", "--model", real_folder(kind), "--prompt", "a cat runs", "--out", tmp_path / "v.mp4",
            "--height", 32, "--width", 48, "--frames", 9, "--steps", 2]
    if kind.endswith("i2v"):
        rf.first_frame().save(tmp_path / "f.png")
        args += ["--image", tmp_path / "f.png"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    frames = read_video(tmp_path / "v.mp4")[0]
    # HunyuanVideo-I2V drops its first latent frame (the image) as diffusers' pipeline does: 9 - 4 frames
    assert frames.shape == ((5 if kind == "hunyuan-i2v" else 9), 32, 48, 3)


@pytest.mark.parametrize("kind,extra,message", [
    ("wan-t2v", ["--image", "IMG"], "text-to-video model"),
    ("wan-i2v", [], "image-to-video model"),
    ("hunyuan-t2v", ["--seconds", "4"], "--seconds"),
    ("hunyuan-t2v", ["--frames", "10"], "--frames must be 1 + 4k"),
])
def test_generate_cli_refuses_what_the_family_cannot_do(real_folder, tmp_path, kind, extra, message):
    rf.first_frame().save(tmp_path / "f.png")
    extra = [str(tmp_path / "f.png") if e == "IMG" else e for e in extra]
    result = run_cli("generate", "--model", real_folder(kind), "--prompt", "a cat", "--out", tmp_path / "v.mp4",
                     "--height", 32, "--width", 32, "--steps", 1, *extra)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "v.mp4").exists()


def _broken(folder: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / how
    shutil.copytree(folder, bad)
    if how == "missing":
        shutil.rmtree(bad / "vae")
    elif how == "class":
        cfg = json.loads((bad / "transformer" / "config.json").read_text())
        cfg["_class_name"] = "HunyuanVideoTransformer3DModel"
        (bad / "transformer" / "config.json").write_text(json.dumps(cfg))
    elif how == "truncated":
        f = bad / "transformer" / "diffusion_pytorch_model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "pipeline":
        index = json.loads((bad / "model_index.json").read_text())
        index["_class_name"] = "StableDiffusionPipeline"
        (bad / "model_index.json").write_text(json.dumps(index))
    return bad


@pytest.mark.parametrize("how,message", [("missing", "no component 'vae'"), ("class", "names class"),
                                         ("truncated", "is truncated"),
                                         ("pipeline", "is not supported")])
def test_bad_folders_are_one_line_errors(real_folder, tmp_path, how, message):
    bad = _broken(real_folder("wan-t2v"), tmp_path, how)
    result = run_cli("generate", "--model", bad, "--prompt", "a cat", "--out", tmp_path / "v.mp4", "--height", 32,
                     "--width", 32, "--frames", 5, "--steps", 1)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "v.mp4").exists()


def test_seconds_on_a_tiny_text_to_video_model_is_a_one_line_error(tmp_path):
    """A sliding window continues from the previous window's last frame, which a T2V model cannot take."""
    gen = tmp_path / "t2v"
    shutil.copytree(Path(__file__).parents[1] / "src/magicdistill/checkpoints/tiny/generator", gen)
    rec = json.loads((gen / "dit.json").read_text())
    (gen / "dit.json").write_text(json.dumps({**rec, "task": "t2v", "vae": str(Path(__file__).parents[1] /
                                                                                 "src/magicdistill/checkpoints/tiny/vae")}))
    result = run_cli("generate", "--model", gen, "--prompt", "a cat", "--out", tmp_path / "v.mp4", "--seconds", 4)
    assert result.exit_code == 2 and "--seconds needs an image-to-video model" in result.output
    assert not (tmp_path / "v.mp4").exists()
