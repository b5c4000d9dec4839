"""`magicdistill distill` (W2S, 2 iterations) on tiny real Wan / HunyuanVideo text-to-video teachers, with a full
and a LoRA generator: the run trains on synthetic clips encoded with the teacher's own VAE and text encoders,
writes a derived folder (transformer/ + magicdistill.json pointing at the teacher) that `generate` samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import real_fixtures as rf
from magicdistill.cli import app
from magicdistill.models.folder import read_model_folder
from magicdistill.video import read_video

# (kind, generator): the default suite runs one; the others are in the slow job
CASES = [pytest.param("hunyuan-t2v", "full"),
         pytest.param("hunyuan-t2v", "lora", marks=pytest.mark.slow),
         pytest.param("wan-t2v", "full", marks=pytest.mark.slow),
         pytest.param("wan-t2v", "lora", marks=pytest.mark.slow),
         pytest.param("wan-i2v", "full", marks=pytest.mark.slow),
         pytest.param("wan-i2v", "lora", marks=pytest.mark.slow)]
TEXT = {"hunyuan-t2v": (256, 32), "wan-t2v": (512, 32), "wan-i2v": (512, 32)}  # the teacher's token budget and text width (MiniLM: 384)


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("kind,generator", CASES)
def test_w2s_distills_a_real_teacher(real_folder, tmp_path, kind, generator):
    teacher = real_folder(kind)
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--iters", 2, "--num-clips", 4, "--batch-size", 2,
                     "--height", 32, "--width", 32, "--frames", 9, "--generator", generator)
    assert result.exit_code == 0, result.output
    # the clips were encoded with the teacher's own text encoder (token budget, width) and VAE (16 channels, /8, /4)
    cache = load_file(str(next((out / "cache").glob("latents_train_*.safetensors"))))
    assert tuple(cache["tokens"].shape[1:]) == TEXT[kind]
    assert tuple(cache["latents"].shape[1:]) == (16, 3, 4, 4)
    # both iterations ran every loss; the generator was updated (a non-zero gradient reached it)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0 and all(torch.isfinite(torch.tensor(first[k])) for k in
                                                    ("loss_dmd", "loss_fake", "loss_d"))
    # the result: a derived folder, the teacher as its base, the same transformer keys as the teacher
    gen = out / "generator"
    folder = read_model_folder(gen)
    assert folder.layout == "derived" and folder.base == teacher.resolve() and folder.family == kind.split("-")[0]
    assert (folder.sampler.steps, folder.sampler.schedule) == (4, "shifted_linear")
    # HunyuanVideo T2V is guidance-embedded: the generator keeps the teacher's embedded scale as its input;
    # Wan distils CFG away (guidance 1: one forward per step)
    assert folder.sampler.guidance == (6.0 if kind == "hunyuan-t2v" else 1.0)
    assert not (gen / "vae").exists() and not (gen / "text_encoder").exists()  # read from the base
    assert set(_weights(gen)) == set(_weights(teacher))
    # and generate samples it with the record's defaults (32x32, 9 frames, 4 steps)
    image = []
    if kind.endswith("i2v"):  # Wan I2V: the teacher saw the pipeline's mask + VAE(image + zeros) and CLIP tokens
        rf.first_frame().save(tmp_path / "f.png")
        image = ["--image", tmp_path / "f.png"]
    result = run_cli("generate", "--model", gen, "--prompt", "a person talking", "--out", tmp_path / "v.mp4", *image)
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (9, 32, 32, 3)

