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


# LCM and CFG distillation through the family interface: Wan's guidance is a CFG pair (distilled at the
# teacher's own scale: WanTransformer3DModel has no guidance input diffusers would load); HunyuanVideo T2V
# is guidance-embedded, so CFG distillation is refused and LCM keeps its embedded scale as an input.
METHOD_CASES = [pytest.param("wan-t2v", "lcm"), pytest.param("wan-t2v", "cfg"),
                pytest.param("wan-i2v", "lcm", marks=pytest.mark.slow),
                pytest.param("wan-i2v", "cfg", marks=pytest.mark.slow),
                pytest.param("hunyuan-t2v", "lcm", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind,method", METHOD_CASES)
def test_lcm_and_cfg_distil_a_real_teacher(real_folder, tmp_path, kind, method):
    teacher = real_folder(kind)
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--method", method, "--generator", "full",
                     "--iters", 2, "--num-clips", 4, "--batch-size", 2, "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    loss = "loss_lcm" if method == "lcm" else "loss_cfg"
    assert first["grad_norm_generator"] > 0 and torch.isfinite(torch.tensor(first[loss]))
    assert "loss_base" not in first  # Wan's CFG student has no guidance input, so no w = 1 term
    gen = out / "generator"
    folder = read_model_folder(gen)
    assert folder.layout == "derived" and folder.base == teacher.resolve()
    assert folder.sampler.kind == ("consistency" if method == "lcm" else "euler")
    # the student samples without a CFG pair; HunyuanVideo's embedded scale stays an input
    assert folder.sampler.guidance == (6.0 if kind == "hunyuan-t2v" else 1.0)
    # a plain transformer of the teacher's class and keys (nothing diffusers could not load), trained
    config = lambda d: {k: v for k, v in json.loads((d / "transformer" / "config.json").read_text()).items()  # noqa: E731
                        if k == "_class_name" or not k.startswith("_")}
    assert config(gen) == config(teacher)
    mine, theirs = _weights(gen), _weights(teacher)
    assert set(mine) == set(theirs) and any(not torch.equal(mine[k], theirs[k]) for k in mine)
    image = []
    if kind.endswith("i2v"):
        rf.first_frame().save(tmp_path / "f.png")
        image = ["--image", tmp_path / "f.png"]
    result = run_cli("generate", "--model", gen, "--prompt", "a person talking", "--out", tmp_path / "v.mp4", *image)
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (9, 32, 32, 3)


def test_cfg_distillation_of_a_guidance_embedded_teacher_is_a_one_line_error(real_folder, tmp_path):
    result = run_cli("distill", "--teacher", real_folder("hunyuan-t2v"), "--out", tmp_path / "run", "--method", "cfg",
                     "--iters", 2, "--height", 32, "--width", 32, "--frames", 9)
    assert result.exit_code == 2 and "error:" in result.output and "guidance-distilled" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def _wan_batch(b=2, tokens=8):
    from magicdistill.distill.w2s import DistillBatch
    from magicdistill.models.text import TextEmbedding

    g = torch.Generator().manual_seed(0)
    text = TextEmbedding(torch.randn(b, tokens, 32, generator=g), torch.ones(b, tokens, dtype=torch.bool), torch.zeros(b, 1))
    null = TextEmbedding(torch.zeros(b, tokens, 32), torch.ones(b, tokens, dtype=torch.bool), torch.zeros(b, 1))
    return DistillBatch(torch.randn(b, 16, 3, 4, 4, generator=g), text, null, None, None)


def test_wan_cfg_student_learns_the_teachers_cfg_at_its_own_scale(real_folder, monkeypatch):
    """No guidance input is added to a Wan student; its target is the teacher's CFG pair at the teacher's scale
    (the folder's 5.0), and training moves it toward that target."""
    from magicdistill.config import DistillConfig
    from magicdistill.distill import cfg_distill
    from magicdistill.models.families.real import load_dit

    teacher = load_dit(read_model_folder(real_folder("wan-t2v")))
    m = cfg_distill.CFGDistillMethod(teacher, DistillConfig(method="cfg", lr_generator=1e-3))
    assert m.fixed_guidance == 5.0 and set(m.generator.state_dict()) == set(teacher.state_dict())
    scales = []
    guided = cfg_distill.guided_velocity
    monkeypatch.setattr(cfg_distill, "guided_velocity",
                        lambda model, x, s, c, u, w: scales.append(w) or guided(model, x, s, c, u, w))
    batch = _wan_batch()
    first = m.step(batch, 0, torch.Generator().manual_seed(0))
    for _ in range(5):
        last = m.step(batch, 1, torch.Generator().manual_seed(0))
    assert all(torch.equal(w, torch.full((2,), 5.0)) for w in scales) and len(scales) == 6
    assert last["loss_cfg"] < 0.9 * first["loss_cfg"], (first, last)


def test_lcm_generator_samples_by_consistency_steps(real_folder, tmp_path):
    """generate on a consistency generator: x0 at each sigma, re-noised with the seed's generator."""
    from magicdistill.flow import sigma_schedule
    from magicdistill.models.families.real import RealPipeline
    from magicdistill.models.folder import write_derived_record
    from magicdistill.sampling import consistency_sample

    base = real_folder("wan-t2v")
    write_derived_record(tmp_path, read_model_folder(base), sampler={"kind": "consistency", "steps": 2, "shift": 4.0,
                                                                     "guidance": 1.0, "schedule": "shifted_linear"})
    pipe = RealPipeline.from_dir(tmp_path)
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    got = pipe.latents(None, "a cat", height=32, width=32, frames=9, steps=2, guidance=1.0, shift=4.0, noise=noise, seed=3)
    enc = pipe.family.encode(pipe.pipe, pipe.dit, ["a cat"], None, height=32, width=32, frames=9, guidance=1.0,
                             noise=noise, max_sequence_length=pipe.max_sequence_length, device="cpu")
    want = consistency_sample(pipe.dit, noise, enc.cond, sigmas=sigma_schedule(2, 4.0),
                              generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="without CFG"):
        pipe.latents(None, "a cat", height=32, width=32, frames=9, steps=2, guidance=3.0, shift=4.0, noise=noise)
