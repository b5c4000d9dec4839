"""`magicdistill train --init-from FOLDER` on real diffusers folders: the paper's T2V -> I2V route
(`convert-i2v`, new input weights zero, then fine-tune). Two steps on the synthetic clips encoded with the
folder's own VAE and text encoders; the zero-initialised first-frame channels must learn (non-zero after
training), the result is a derived folder that `generate` samples and diffusers loads."""

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

PATCH = {"wan": "patch_embedding.weight", "hunyuan": "x_embedder.proj.weight"}


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


def _train(model, out, *extra):
    return run_cli("train", "--init-from", model, "--out", out, "--steps", 2, "--batch-size", 2, "--num-clips", 8,
                   "--height", rf.HEIGHT, "--width", rf.WIDTH, "--frames", rf.FRAMES, "--checkpoint-every", 1, *extra)


def _check_trained(converted: Path, out: Path, family: str, text_shape: tuple[int, int]) -> Path:
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2]
    assert all(torch.isfinite(torch.tensor(m["loss"])) and m["grad_norm"] > 0 for m in logged)
    # the clips were encoded with the folder's own text encoder (token budget, width) and VAE (16 ch, /8, /4)
    cache = load_file(str(next((out / "cache").glob("latents_train_*.safetensors"))))
    tokens = tuple(cache["tokens"].shape[1:])
    assert tokens == text_shape if text_shape[0] else tokens[1] == text_shape[1]  # width 32: not MiniLM's 384
    assert tuple(cache["latents"].shape[1:]) == (16, 3, 4, 4)
    teacher = out / "teacher"
    folder = read_model_folder(teacher)
    assert folder.layout == "derived" and folder.base == converted.resolve() and folder.is_i2v
    assert json.loads((teacher / "magicdistill.json").read_text())["base"] == "../../" + converted.name  # relative
    assert (folder.video.height, folder.video.width, folder.video.frames) == (rf.HEIGHT, rf.WIDTH, rf.FRAMES)
    before, after = _weights(converted), _weights(teacher)
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    # the first-frame channels convert-i2v added start at exactly zero and are trained
    c = 16
    new_before, new_after = before[PATCH[family]][:, c:], after[PATCH[family]][:, c:]
    assert torch.count_nonzero(new_before) == 0
    assert torch.count_nonzero(new_after) > 0.9 * new_after.numel()
    return teacher


def _generate(model, tmp_path):
    rf.first_frame(1).save(tmp_path / "first.png")
    result = run_cli("generate", "--model", model, "--prompt", "a person talking", "--out", tmp_path / "v.mp4",
                     "--image", tmp_path / "first.png", "--steps", 2)
    assert result.exit_code == 0, result.output
    return read_video(tmp_path / "v.mp4")[0]


def test_train_fine_tunes_a_converted_wan_i2v_folder(real_folder, tmp_path):
    converted = tmp_path / "wan-i2v"
    result = run_cli("convert-i2v", "--model", real_folder("wan-t2v"), "--out", converted)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    result = _train(converted, out)
    assert result.exit_code == 0, result.output
    teacher = _check_trained(converted, out, "wan", (512, 32))
    assert _generate(teacher, tmp_path).shape == (rf.FRAMES, rf.HEIGHT, rf.WIDTH, 3)
    # plain diffusers loads it: the source pipeline with the trained transformer
    import diffusers

    transformer = diffusers.WanTransformer3DModel.from_pretrained(teacher / "transformer")
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(converted, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    kwargs = rf.call_kwargs("wan-i2v", pipe)
    latents = pipe(**{**kwargs, "num_inference_steps": 1}, output_type="latent").frames
    assert latents.shape == (1, 16, 3, 4, 4) and torch.isfinite(latents).all()
    # --resume continues from the checkpoint: one more step, logged once
    result = _train(converted, out, "--resume", "--steps", 3)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((out / "teacher" / "magicdistill.json").read_text())["steps_trained"] == 3


@pytest.mark.slow
def test_train_fine_tunes_a_converted_hunyuan_i2v_folder(real_folder, tmp_path):
    """HunyuanVideo T2V -> I2V (the Llava text encoder from an I2V folder): each clip's prompt is encoded
    with its first frame; the guidance embedding of the T2V model is kept."""
    converted = tmp_path / "hunyuan-i2v"
    result = run_cli("convert-i2v", "--model", real_folder("hunyuan-t2v"), "--out", converted,
                     "--text-encoder-from", real_folder("hunyuan-i2v"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    result = _train(converted, out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["text_dropout"] == 0.0  # guidance-embedded: no unconditional branch to train
    teacher = _check_trained(converted, out, "hunyuan", (None, 32))  # Llava's token count: diffusers' crop
    # HunyuanVideo-I2V drops its first latent frame (4 pixel frames) from the result, as diffusers does
    assert _generate(teacher, tmp_path).shape == (rf.FRAMES - 4, rf.HEIGHT, rf.WIDTH, 3)


def test_train_real_folder_errors_are_one_line(real_folder, tmp_path):
    result = run_cli("train", "--init-from", real_folder("wan-t2v"), "--out", tmp_path / "a", "--task", "i2v")
    assert result.exit_code == 2 and "convert-i2v" in result.output and "Traceback" not in result.output
    result = run_cli("train", "--out", tmp_path / "b", "--height", 32)
    assert result.exit_code == 2 and "--height" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
