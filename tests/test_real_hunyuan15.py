"""HunyuanVideo-1.5 (T2V and I2V) end to end on tiny random-weight folders (tests/real_fixtures_hunyuan15.py):
our latents equal diffusers' own pipeline for the same noise; `generate`; `distill` (W2S, 2 iterations);
`export` reloaded by plain diffusers in a subprocess that never imports magicdistill.

Tolerance: max abs difference < 1e-4 between latents of magnitude ~4 (measured ~2e-6 in float32: the
only difference is that our sampler batches the CFG pair where diffusers' guider runs it in two calls).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app
from magicdistill.models.folder import read_model_folder

TOL = 1e-4
PROMPT = "a cat runs on the grass"


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _noise(seed: int) -> torch.Tensor:
    # 16 latent channels, 9 frames -> 3, 32 px -> 2 (the x16 VAE)
    return torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _diffusers_latents(folder: Path, kind: str, noise: torch.Tensor, guidance: float, image=None, steps: int = 2):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    pipe.guider = pipe.guider.new(guidance_scale=guidance)  # the pipeline reads its scale from its guider only
    kw = rf.call_kwargs(kind, pipe)
    if image is not None:
        kw["image"] = image
    kw.update(latents=noise.clone(), output_type="latent", num_inference_steps=steps)
    return pipe(**kw).frames


def _ours(folder, image, noise, guidance, steps=2, shift=None):
    from magicdistill.models.families.real import RealPipeline

    pipe = RealPipeline.from_dir(folder)
    return pipe.latents(image, PROMPT, height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES, steps=steps,
                        guidance=guidance, shift=shift or pipe.folder.sampler.shift, noise=noise.clone())


@pytest.mark.parametrize("kind,task", [("hunyuan15-t2v", "t2v"), ("hunyuan15-i2v", "i2v")])
def test_record_reads_the_folder(real_folder, kind, task):
    folder = read_model_folder(real_folder(kind))
    assert (folder.layout, folder.family, folder.task) == ("diffusers", "hunyuan15", task)
    assert folder.sampler.guidance == 4.5  # from its guider component (the pipeline has no guidance argument)
    assert folder.sampler.shift == 5.0
    assert (folder.video.frames, folder.video.fps) == (121, 24.0)


@pytest.mark.parametrize("kind", ["hunyuan15-t2v", "hunyuan15-i2v"])
def test_latents_equal_diffusers_pipeline(real_folder, kind):
    """Same noise, prompt (and first frame), 2 steps, CFG 3: our latents = diffusers' output_type="latent"."""
    folder = real_folder(kind)
    image = rf.first_frame() if kind.endswith("i2v") else None
    ref = _diffusers_latents(folder, kind, _noise(1), 3.0)
    mine = _ours(folder, image, _noise(1), 3.0)
    assert mine.shape == ref.shape == (1, 16, 3, 2, 2)
    assert (mine - ref).abs().max().item() < TOL
    # the comparison can fail: another guidance scale moves the latents far beyond the tolerance
    assert (_ours(folder, image, _noise(1), 9.0) - ref).abs().max().item() > 10 * TOL
    if image is not None:  # and the first frame conditions both the same way
        other = rf.first_frame(seed=3)
        ref2 = _diffusers_latents(folder, kind, _noise(1), 3.0, image=other)
        assert (ref2 - ref).abs().max().item() > 10 * TOL
        assert (_ours(folder, other, _noise(1), 3.0) - ref2).abs().max().item() < TOL


def test_a_quoted_text_goes_through_the_glyph_encoder_as_in_diffusers(real_folder):
    """A prompt with quoted text fills the ByT5 stream (packed behind the Qwen tokens): still diffusers' latents."""
    from diffusers import DiffusionPipeline

    from magicdistill.models.families.real import RealPipeline

    folder = real_folder("hunyuan15-t2v")
    prompt = 'a sign that says "hello cat"'
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(rf.call_kwargs("hunyuan15-t2v", pipe), prompt=prompt, latents=_noise(2), output_type="latent")
    ref = pipe(**kw).frames
    ours = RealPipeline.from_dir(folder)
    text = ours.text_encoder()([prompt])
    assert text.mask[0, -256:].sum() > 0  # the glyph tokens are there
    mine = ours.latents(None, prompt, height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES, steps=2, guidance=4.5,
                        shift=5.0, noise=_noise(2))
    assert (mine - ref).abs().max().item() < TOL


def test_generate_refuses_a_size_off_the_patch_grid(real_folder, tmp_path):
    """Patch size 1 on a x16 VAE: sizes are multiples of 16 (not 32 as for HunyuanVideo / Wan)."""
    result = run_cli("generate", "--model", real_folder("hunyuan15-t2v"), "--prompt", "a cat", "--out",
                     tmp_path / "v.mp4", "--height", 24, "--width", 32, "--frames", 9, "--steps", 1)
    assert result.exit_code == 2 and "multiples of 16" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("generator", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_w2s_distills_a_hunyuan15_teacher(real_folder, tmp_path, generator):
    teacher = real_folder("hunyuan15-t2v")
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--iters", 2, "--num-clips", 4, "--batch-size", 2,
                     "--height", 32, "--width", 32, "--frames", 9, "--generator", generator)
    assert result.exit_code == 0, result.output
    # clips encoded with the teacher's own encoders: 1000 Qwen + 256 ByT5 tokens (width 32), its x16 VAE
    cache = load_file(str(next((out / "cache").glob("latents_train_*.safetensors"))))
    assert tuple(cache["tokens"].shape[1:]) == (1256, 32)
    assert tuple(cache["latents"].shape[1:]) == (16, 3, 2, 2)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0
    gen = out / "generator"
    folder = read_model_folder(gen)
    assert folder.family == "hunyuan15" and folder.base == teacher.resolve()
    assert (folder.sampler.steps, folder.sampler.guidance) == (4, 1.0)  # CFG distilled away
    assert set(load_file(str(gen / "transformer" / "diffusion_pytorch_model.safetensors"))) == \
        set(load_file(str(teacher / "transformer" / "diffusion_pytorch_model.safetensors")))
    result = run_cli("generate", "--model", gen, "--prompt", "a person talking", "--out", tmp_path / "v.mp4")
    assert result.exit_code == 0, result.output
    from magicdistill.video import read_video

    assert read_video(tmp_path / "v.mp4")[0].shape == (9, 32, 32, 3)


def test_i2v_training_conditions_equal_the_sampling_ones(real_folder):
    """distill builds an I2V teacher's inputs from a cached first-frame latent (our VAE wrapper) and the frame as
    a [-1, 1] tensor (SigLIP tokens through the conditioner): the same inputs generate computes from the image."""
    import numpy as np

    from magicdistill.distill.real_teacher import load_real_teacher
    from magicdistill.models.families.hunyuan15 import first_frame_inputs

    folder = read_model_folder(real_folder("hunyuan15-i2v"))
    dit, vae, text_encoder, _ = load_real_teacher(folder, {"num_frames": rf.FRAMES}, device="cpu",
                                                  dtype=torch.float32)
    image = rf.first_frame()
    frame = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 127.5 - 1
    with torch.no_grad():
        cached_latent = vae.encode(frame[:, :, None])
    text = text_encoder([PROMPT])
    cond, uncond = dit.conditions(text, text_encoder([""]), image=frame, image_latent=cached_latent)
    latent, extra = first_frame_inputs(dit.image_conditioner.pipe, image, rf.HEIGHT, rf.WIDTH, 1, "cpu", dit.dtype)
    torch.testing.assert_close(cond.image_latent, latent, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.extra["image_embeds"], extra["image_embeds"], atol=1e-5, rtol=0)
    assert uncond.extra["image_embeds"] is cond.extra["image_embeds"]  # both CFG branches see the image
    other = torch.flip(frame, dims=[-1])  # and the tokens do depend on the frame
    assert (dit.image_conditioner(other)["image_embeds"] - extra["image_embeds"]).abs().max() > 1e-3


@pytest.mark.slow
def test_w2s_distills_a_hunyuan15_i2v_teacher(real_folder, tmp_path):
    from magicdistill.video import read_video

    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", real_folder("hunyuan15-i2v"), "--out", out, "--iters", 2,
                     "--num-clips", 4, "--batch-size", 2, "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 0, result.output
    folder = read_model_folder(out / "generator")
    assert (folder.family, folder.task, folder.sampler.guidance) == ("hunyuan15", "i2v", 1.0)
    rf.first_frame().save(tmp_path / "f.png")
    result = run_cli("generate", "--model", out / "generator", "--image", tmp_path / "f.png", "--prompt",
                     "a person talking", "--out", tmp_path / "v.mp4")
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (9, 32, 32, 3)


@pytest.mark.parametrize("command,kind", [("quantize", "hunyuan15-t2v"), ("cast-weights", "hunyuan15-i2v")])
def test_quantize_and_cast_rewrite_only_the_transformer(real_folder, tmp_path, command, kind):
    source = real_folder(kind)
    extra = ["--dtype", "bfloat16"] if command == "cast-weights" else []
    result = run_cli(command, "--model", source, "--out", tmp_path / "c", *extra)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "c" / "text_encoder").exists() and not (tmp_path / "c" / "vae").exists()
    folder = read_model_folder(tmp_path / "c")
    assert folder.family == "hunyuan15" and folder.component_path("text_encoder_2") == source.resolve() / "text_encoder_2"
    image = rf.first_frame() if kind.endswith("i2v") else None
    lat, lat_c = _ours(source, image, _noise(4), 3.0), _ours(tmp_path / "c", image, _noise(4), 3.0)
    err = (lat_c - lat).abs().max().item()
    assert 0 < err < 0.05 * lat.abs().max().item()  # int8 / bf16 rounding of the transformer's weights only


# --- export: reloaded by plain diffusers -------------------------------------------------------------
STEPS, SHIFT = 2, 4.0


@pytest.mark.slow
def test_export_reloads_in_plain_diffusers_equal_to_ours(real_folder, tmp_path):
    """A distilled generator (perturbed transformer, guidance 1) exported as a pipeline folder and as a LoRA file:
    plain diffusers gives our latents from the folder, and the LoRA on the base gives the merged weights' latents."""
    import diffusers

    from magicdistill.models.folder import write_derived_record
    from magicdistill.models.lora import merged
    from test_export import PLAIN_DIFFUSERS, _with_lora

    base = real_folder("hunyuan15-t2v")
    model = diffusers.HunyuanVideo15Transformer3DModel.from_pretrained(base / "transformer")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    gen = tmp_path / "gen"
    model.save_pretrained(gen / "transformer")
    write_derived_record(gen, read_model_folder(base), sampler={"kind": "euler", "steps": STEPS, "shift": SHIFT,
                                                                "eta": 0.0, "schedule": "shifted_linear",
                                                                "guidance": 1.0})
    result = run_cli("export", "--model", gen, "--out", tmp_path / "pipe")
    assert result.exit_code == 0, result.output
    assert f"num_inference_steps={STEPS})" in result.output and "guidance 1 in its guider config" in result.output
    guider = json.loads((tmp_path / "pipe" / "guider" / "guider_config.json").read_text())
    assert guider["guidance_scale"] == 1.0  # where diffusers reads it: no CFG pair for the generator
    noise = _noise(11)
    torch.save(noise, tmp_path / "noise.pt")
    kwargs = dict(prompt=PROMPT, height=rf.HEIGHT, width=rf.WIDTH, num_frames=rf.FRAMES, num_inference_steps=STEPS)
    ours = _ours(gen, None, noise, 1.0, steps=STEPS, shift=SHIFT)

    # a LoRA generator: the file on the base pipeline vs the same LoRA merged into the weights, in-process
    lora_model, lora = _with_lora(base)
    from magicdistill.models.export import lora_from_peft, write_lora

    write_lora(base, tmp_path / "gen.safetensors", lora_from_peft(lora_model, "generator"))
    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(base, transformer=merged(lora_model))
    pipe.set_progress_bar_config(disable=True)
    merged_latents = pipe(**kwargs, latents=noise.clone(), output_type="latent").frames
    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    base_latents = pipe(**kwargs, latents=noise.clone(), output_type="latent").frames

    jobs = [{"folder": str(tmp_path / "pipe"), "noise": str(tmp_path / "noise.pt"), "kwargs": kwargs,
             "result": str(tmp_path / "pipe.out")},
            {"folder": str(base), "lora": str(tmp_path / "gen.safetensors"), "guidance": 4.5,
             "noise": str(tmp_path / "noise.pt"), "kwargs": kwargs, "result": str(tmp_path / "lora.out")}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "plain.py").write_text(PLAIN_DIFFUSERS)
    run = subprocess.run([sys.executable, str(tmp_path / "plain.py"), str(tmp_path / "jobs.json")],
                         capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(tmp_path / "pipe.out")
    assert got["guidance"] == 1.0
    torch.testing.assert_close(got["latents"], ours, atol=1e-5, rtol=0)
    assert ours.abs().mean() > 0.1
    got = torch.load(tmp_path / "lora.out")
    assert got["adapted"] == len(lora.layers)
    torch.testing.assert_close(got["latents"], merged_latents, atol=1e-5, rtol=0)
    assert (got["latents"] - base_latents).abs().max() > 1e-3  # the LoRA does change the output


@pytest.mark.slow
def test_i2v_generator_exports_to_an_image_to_video_pipeline(real_folder, tmp_path):
    """An I2V generator: the export is a HunyuanVideo15ImageToVideoPipeline (SigLIP encoder and all, guider at 1)
    whose latents equal ours for the same first frame and noise."""
    import diffusers

    from magicdistill.models.export import export_model
    from magicdistill.models.folder import write_derived_record

    base = real_folder("hunyuan15-i2v")
    model = diffusers.HunyuanVideo15Transformer3DModel.from_pretrained(base / "transformer")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(tmp_path / "gen" / "transformer")
    write_derived_record(tmp_path / "gen", read_model_folder(base), sampler={
        "kind": "euler", "steps": STEPS, "shift": SHIFT, "eta": 0.0, "schedule": "shifted_linear", "guidance": 1.0})
    export_model(tmp_path / "gen", tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideo15ImageToVideoPipeline" and index["image_encoder"][1] == "SiglipVisionModel"
    pipe = diffusers.HunyuanVideo15ImageToVideoPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    image, noise = rf.first_frame(), _noise(12)
    theirs = pipe(image=image, prompt=PROMPT, num_frames=rf.FRAMES, num_inference_steps=STEPS, latents=noise.clone(),
                  output_type="latent").frames
    ours = _ours(tmp_path / "gen", image, noise, 1.0, steps=STEPS, shift=SHIFT)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
