"""Distilling a HunyuanVideo-I2V teacher: its prompt embedding depends on the first frame (Llava reads the
image inside the prompt), so each synthetic clip's caption is encoded together with that clip's first frame
and cached per clip; `distill --method w2s` (full and LoRA generator) runs 2 iterations on it, and `export`
writes a pipeline folder (and a LoRA) that plain diffusers, in a subprocess that never imports magicdistill,
runs to the same latents as magicdistill's generator.

Tolerance: latents at atol 1e-5 (float32, values ~1; the same Euler steps in both); the LoRA file (an SVD
of a rank-16 change at rank 16) at atol 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app

PROMPT = "a cat runs on the grass"
ATOL, LORA_ATOL = 1e-5, 1e-4

PLAIN_DIFFUSERS = r"""
import json, sys, torch
from PIL import Image
from diffusers import DiffusionPipeline
from peft.tuners.lora import LoraLayer
job = json.load(open(sys.argv[1]))
out = {}
for name, folder, lora in job["runs"]:
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    adapted = 0
    if lora:  # on the base pipeline, with the scheduler settings export prints
        pipe.load_lora_weights(lora)
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **job["scheduler"])
        adapted = sum(isinstance(m, LoraLayer) for m in pipe.transformer.modules())
    latents = pipe(image=Image.open(job["image"]).convert("RGB"), latents=torch.load(job["noise"]),
                   output_type="latent", generator=torch.Generator().manual_seed(0), **job["kwargs"]).frames
    out[name] = {"latents": latents, "adapted": adapted, "pipeline": type(pipe).__name__}
torch.save(out, job["result"])
assert not any(name.split(".")[0] == "magicdistill" for name in sys.modules), "magicdistill was imported"
"""


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _distill(teacher, out, generator):
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--iters", 2, "--num-clips", 4, "--batch-size", 2,
                     "--height", rf.HEIGHT, "--width", rf.WIDTH, "--frames", rf.FRAMES, "--generator", generator)
    assert result.exit_code == 0, result.output
    return out / "generator"


def _pipe(folder):
    import diffusers

    pipe = diffusers.HunyuanVideoImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("generator", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_hunyuan_i2v_distills_and_exports_for_plain_diffusers(real_folder, tmp_path, generator):
    from PIL import Image

    from magicdistill.models.families.real import RealPipeline
    from magicdistill.models.folder import read_model_folder

    teacher = real_folder("hunyuan-i2v")
    gen = _distill(teacher, tmp_path / "run", generator)
    folder = read_model_folder(gen)
    assert folder.layout == "derived" and folder.base == teacher.resolve() and folder.is_i2v
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0 and all(torch.isfinite(torch.tensor(first[k]))
                                                    for k in ("loss_dmd", "loss_fake", "loss_d"))

    # each cached prompt embedding is diffusers' own encode_prompt of (caption, that clip's first frame)
    cache_file = next((tmp_path / "run" / "cache").glob("latents_train_*.safetensors"))
    cache = load_file(str(cache_file))
    from safetensors import safe_open

    with safe_open(str(cache_file), "pt") as f:
        captions = json.loads(f.metadata()["captions"])
    pipe = _pipe(teacher)
    template = rf.hunyuan_prompt_template(pipe.tokenizer, True)
    frames = [Image.fromarray(cache["first_frames"][i].permute(1, 2, 0).numpy()) for i in range(2)]
    with torch.no_grad():
        for i in range(2):
            pe, pooled, mask = pipe.encode_prompt(image=frames[i], prompt=[captions[i]], prompt_template=template,
                                                  max_sequence_length=256)
            torch.testing.assert_close(cache["tokens"][i].float(), pe[0].half().float(), atol=1e-3, rtol=0)
            torch.testing.assert_close(cache["pooled"][i].float(), pooled[0].half().float(), atol=1e-3, rtol=0)
            assert torch.equal(cache["mask"][i].bool(), mask[0].bool())
        # and the image is in it: the same caption with the other clip's frame encodes differently
        other, _, _ = pipe.encode_prompt(image=frames[1], prompt=[captions[0]], prompt_template=template,
                                         max_sequence_length=256)
    assert (other[0].half().float() - cache["tokens"][0].float()).abs().max() > 1e-2

    # export: a pipeline folder (and, for a LoRA generator, a LoRA file for the base) run by plain diffusers
    out = tmp_path / "pipe"
    result = run_cli("export", "--model", gen, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "HunyuanVideoImageToVideoPipeline"
    runs = [["pipe", str(out), None]]
    if generator == "lora":
        result = run_cli("export", "--model", gen, "--lora", tmp_path / "gen.safetensors", "--rank", 16)
        assert result.exit_code == 0, result.output
        runs.append(["lora", str(teacher), str(tmp_path / "gen.safetensors")])
        assert f"from_config(pipe.scheduler.config, shift={folder.sampler.shift:g})" in result.output
    image = rf.first_frame(3)
    image.save(tmp_path / "first.png")
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    torch.save(noise, tmp_path / "noise.pt")
    kwargs = dict(prompt=PROMPT, height=rf.HEIGHT, width=rf.WIDTH, num_frames=rf.FRAMES, num_inference_steps=4,
                  guidance_scale=1.0, prompt_template=template, max_sequence_length=16)
    job = {"runs": runs, "image": str(tmp_path / "first.png"), "noise": str(tmp_path / "noise.pt"), "kwargs": kwargs,
           "scheduler": {"shift": folder.sampler.shift}, "result": str(tmp_path / "theirs.pt")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "plain.py").write_text(PLAIN_DIFFUSERS)
    proc = subprocess.run([sys.executable, str(tmp_path / "plain.py"), str(tmp_path / "job.json")], capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(tmp_path / "theirs.pt")

    ours = RealPipeline.from_dir(gen).latents(Image.open(tmp_path / "first.png").convert("RGB"), PROMPT,
                                              height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES, steps=4,
                                              guidance=1.0, shift=folder.sampler.shift, noise=noise.clone(),
                                              max_sequence_length=16)
    assert theirs["pipe"]["pipeline"] == "HunyuanVideoImageToVideoPipeline"
    assert theirs["pipe"]["latents"].shape == ours.shape == (1, 16, 2, 4, 4)  # the first latent frame is dropped
    torch.testing.assert_close(theirs["pipe"]["latents"], ours, atol=ATOL, rtol=0)
    assert ours.abs().mean() > 0.1
    if generator == "lora":
        assert theirs["lora"]["adapted"] > 0
        torch.testing.assert_close(theirs["lora"]["latents"], ours, atol=LORA_ATOL, rtol=0)
