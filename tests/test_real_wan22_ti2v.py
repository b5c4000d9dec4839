"""Wan 2.2 TI2V-5B end to end on a tiny real folder (`WanPipeline` with ``expand_timesteps`` and the
48-channel, /16 VAE; real_fixtures kind ``wan22-ti2v``): `distill --method w2s` with a full and a LoRA
generator (2 iterations), `generate` on the results, and `export --out` / `--lora` run by plain diffusers
in a subprocess that never imports magicdistill (test_export.py's PLAIN_DIFFUSERS script), equal to our
sampling for the same noise.

diffusers' TI2V loop gives the transformer one timestep per token (``expand_timesteps``); in text-to-video
mode every token has the step's timestep, which is what our sampler passes as one scalar per sample.
Tolerance: latents at atol 1e-5 (float32, values ~1), as test_export.py.

The distillation runs use a JSON config with lr_generator 1e-3 and no EMA: at the default rate (2e-5) and
EMA (0.99) two iterations move the generator's weights by ~1e-7, too little for an export test to tell the
generator from its base.
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
from magicdistill.video import read_video
from test_export import PLAIN_DIFFUSERS

KIND, PROMPT, ATOL = "wan22-ti2v", "a cat runs on the grass", 1e-5
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
RANK = 16  # the LoRA generator's rank (distill's --generator-lora-rank default)


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _distill(teacher: Path, root: Path, generator: str) -> Path:
    config = root / f"{generator}.json"
    dry = run_cli("distill", "--teacher", teacher, "--out", root / "dry", "--iters", 2, "--num-clips", 4,
                  "--batch-size", 2, "--generator", generator, "--dry-run")
    assert dry.exit_code == 0, dry.output
    config.write_text(json.dumps({**json.loads(dry.output), "lr_generator": 1e-3, "ema_decay": 0.0}))
    out = root / f"run-{generator}"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--config", config,
                     "--height", rf.HEIGHT, "--width", rf.WIDTH, "--frames", rf.FRAMES)
    assert result.exit_code == 0, result.output
    return out


def _ours(gen: Path, noise: torch.Tensor) -> torch.Tensor:
    from magicdistill.models.families.real import RealPipeline

    s = read_model_folder(gen).sampler
    return RealPipeline.from_dir(gen).latents(None, PROMPT, height=rf.HEIGHT, width=rf.WIDTH, frames=rf.FRAMES,
                                              steps=s.steps, guidance=s.guidance, shift=s.shift, noise=noise.clone())


@pytest.fixture(scope="module")
def ti2v(real_folder, tmp_path_factory):
    """Both generators distilled and exported; ours computed in-process; one plain-diffusers subprocess for all."""
    root = tmp_path_factory.mktemp("ti2v")
    teacher = real_folder(KIND)
    runs = {g: _distill(teacher, root, g) for g in ("full", "lora")}
    noise = torch.randn(1, 48, 3, rf.HEIGHT // 16, rf.WIDTH // 16, generator=torch.Generator().manual_seed(5))
    torch.save(noise, root / "noise.pt")
    sampler = read_model_folder(runs["full"] / "generator").sampler
    kwargs = dict(prompt=PROMPT, height=rf.HEIGHT, width=rf.WIDTH, num_frames=rf.FRAMES,
                  num_inference_steps=sampler.steps, guidance_scale=sampler.guidance)
    exports, ours, jobs = {}, {}, []
    for g, run in runs.items():
        gen = run / "generator"
        args = ["--out", root / f"pipe-{g}"] + (["--lora", root / "ti2v.safetensors", "--rank", RANK] if g == "lora" else [])
        result = run_cli("export", "--model", gen, *args)
        assert result.exit_code == 0, result.output
        exports[g] = result.output
        ours[g] = _ours(gen, noise)
        jobs.append({"name": f"pipe-{g}", "folder": str(root / f"pipe-{g}"), "noise": str(root / "noise.pt"),
                     "kwargs": kwargs, "result": str(root / f"pipe-{g}.out")})
    # the LoRA file on the *base* pipeline with the scheduler export prints; and the base alone with it
    scheduler = ["FlowMapEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": sampler.shift}]
    for name, lora in (("lora-on-base", str(root / "ti2v.safetensors")), ("base", None)):
        jobs.append({"name": name, "folder": str(teacher), "lora": lora, "scheduler": scheduler,
                     "noise": str(root / "noise.pt"), "kwargs": kwargs, "result": str(root / f"{name}.out")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "plain.py").write_text(PLAIN_DIFFUSERS)
    run = subprocess.run([sys.executable, str(root / "plain.py"), str(root / "jobs.json")], capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = {job["name"]: torch.load(job["result"]) for job in jobs}
    return {"root": root, "teacher": teacher, "runs": runs, "exports": exports, "ours": ours, "theirs": theirs,
            "sampler": sampler}


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["full", "lora"])
def test_w2s_distills_ti2v_and_generate_samples_it(ti2v, tmp_path, generator):
    out, teacher = ti2v["runs"][generator], ti2v["teacher"]
    # the clips were encoded with the teacher's UMT5 (512 tokens x 32) and its 48-channel VAE (/4 in time, /16 in space)
    cache = load_file(str(next((out / "cache").glob("latents_train_*.safetensors"))))
    assert tuple(cache["tokens"].shape[1:]) == (512, 32)
    assert tuple(cache["latents"].shape[1:]) == (48, 3, rf.HEIGHT // 16, rf.WIDTH // 16)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0 and all(torch.isfinite(torch.tensor(first[k])) for k in
                                                    ("loss_dmd", "loss_fake", "loss_d"))
    gen = out / "generator"
    folder = read_model_folder(gen)
    assert folder.layout == "derived" and folder.base == teacher.resolve() and folder.family == "wan"
    assert (folder.pipeline, folder.sampler.steps, folder.sampler.guidance) == ("WanPipeline", 4, 1.0)
    mine, base = load_file(gen / WEIGHTS), load_file(teacher / WEIGHTS)
    assert set(mine) == set(base)
    changed = [k for k in mine if not torch.equal(mine[k], base[k])]
    if generator == "lora":  # only the adapted attention projections moved (LoRA merged on save)
        assert changed and all(".attn" in k and k.endswith(".weight") for k in changed)
    else:
        assert len(changed) > len(mine) // 2
    assert max((mine[k] - base[k]).abs().max() for k in changed) > 1e-4
    result = run_cli("generate", "--model", gen, "--prompt", "a person talking", "--out", tmp_path / "v.mp4")
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (rf.FRAMES, rf.HEIGHT, rf.WIDTH, 3)


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["full", "lora"])
def test_exported_ti2v_pipeline_runs_in_plain_diffusers_equal_to_ours(ti2v, generator):
    """The export is a WanPipeline folder that keeps expand_timesteps, with the generator's transformer and a
    FlowMapEulerDiscreteScheduler at the generator's shift: diffusers' own TI2V loop (per-token timesteps)
    gives our latents."""
    root, sampler = ti2v["root"], ti2v["sampler"]
    folder = root / f"pipe-{generator}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline" and index["expand_timesteps"] is True
    assert json.loads((folder / "vae" / "config.json").read_text())["z_dim"] == 48
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (config["_class_name"], config["shift"]) == ("FlowMapEulerDiscreteScheduler", sampler.shift)
    exported, gen = load_file(folder / WEIGHTS), load_file(ti2v["runs"][generator] / "generator" / WEIGHTS)
    assert all(torch.equal(exported[k], gen[k]) for k in gen)
    assert f"num_inference_steps={sampler.steps}, guidance_scale=1" in ti2v["exports"][generator]
    got, ours = ti2v["theirs"][f"pipe-{generator}"], ti2v["ours"][generator]
    assert got["scheduler"] == "FlowMapEulerDiscreteScheduler"
    assert got["latents"].shape == ours.shape == (1, 48, 3, rf.HEIGHT // 16, rf.WIDTH // 16)
    torch.testing.assert_close(got["latents"], ours, atol=ATOL, rtol=0)
    assert ours.abs().mean() > 0.1
    # the generator, not its base: the base pipeline with the same scheduler is far from it
    assert (ti2v["theirs"]["base"]["latents"] - ours).abs().max() > 100 * ATOL


@pytest.mark.slow
def test_ti2v_lora_file_on_the_base_pipeline_equals_the_lora_generator(ti2v):
    """export --lora of the LoRA generator (saved merged) at its rank: one file that load_lora_weights takes on
    the base TI2V pipeline; with the printed scheduler, plain diffusers gives our sampling of the generator."""
    out, sampler = ti2v["exports"]["lora"], ti2v["sampler"]
    assert "carries 100.00 %" in out and "cannot hold" not in out
    assert f"diffusers.FlowMapEulerDiscreteScheduler(num_train_timesteps=1000, shift={sampler.shift!r})" in out
    got = ti2v["theirs"]["lora-on-base"]
    assert got["adapted"] > 0 and got["scheduler"] == "FlowMapEulerDiscreteScheduler"
    torch.testing.assert_close(got["latents"], ti2v["ours"]["lora"], atol=ATOL, rtol=0)
    assert (got["latents"] - ti2v["theirs"]["base"]["latents"]).abs().max() > 100 * ATOL  # the LoRA does act


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lcm", "cfg"])
def test_lcm_and_cfg_distil_ti2v(real_folder, tmp_path, method):
    """LCM and CFG distillation (2 iterations) on the TI2V teacher: a trained plain transformer of the teacher's
    class and keys, sampled without a CFG pair (Wan's CFG student learns the teacher's guidance at its own scale),
    which generate samples by its record (LCM: consistency steps)."""
    teacher = real_folder(KIND)
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", teacher, "--out", out, "--method", method, "--generator", "full",
                     "--iters", 2, "--num-clips", 4, "--batch-size", 2, "--height", rf.HEIGHT, "--width", rf.WIDTH,
                     "--frames", rf.FRAMES)
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in logged if m["step"] == 1)
    assert first["grad_norm_generator"] > 0 and torch.isfinite(torch.tensor(first[f"loss_{method}"]))
    folder = read_model_folder(out / "generator")
    assert folder.layout == "derived" and folder.base == teacher.resolve()
    assert (folder.sampler.kind, folder.sampler.guidance) == ("consistency" if method == "lcm" else "euler", 1.0)
    config = lambda d: {k: v for k, v in json.loads((d / "transformer" / "config.json").read_text()).items()  # noqa: E731
                        if k == "_class_name" or not k.startswith("_")}
    assert config(out / "generator") == config(teacher)
    mine, base = load_file(out / "generator" / WEIGHTS), load_file(teacher / WEIGHTS)
    assert set(mine) == set(base) and any(not torch.equal(mine[k], base[k]) for k in mine)
    result = run_cli("generate", "--model", out / "generator", "--prompt", "a person talking", "--out", tmp_path / "v.mp4")
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "v.mp4")[0].shape == (rf.FRAMES, rf.HEIGHT, rf.WIDTH, 3)


@pytest.mark.parametrize("distilled", [False, True])
def test_ti2v_with_a_first_frame_is_a_one_line_error(real_folder, tmp_path, distilled):
    """TI2V's image mode (diffusers' WanImageToVideoPipeline with expand_timesteps: the first frame's tokens at
    timestep 0) is not supported: generate --image on the folder or a generator derived from it says so in
    one line and writes nothing."""
    model = real_folder(KIND)
    if distilled:  # a generator folder: its record names the TI2V folder as its base
        from magicdistill.models.folder import write_derived_record

        (tmp_path / "gen").mkdir()
        write_derived_record(tmp_path / "gen", read_model_folder(model),
                             sampler={"kind": "euler", "steps": 4, "shift": 5.0, "guidance": 1.0})
        model = tmp_path / "gen"
    rf.first_frame().save(tmp_path / "f.png")
    result = run_cli("generate", "--model", model, "--prompt", "a cat", "--image", tmp_path / "f.png",
                     "--out", tmp_path / "v.mp4", "--height", rf.HEIGHT, "--width", rf.WIDTH, "--frames", rf.FRAMES)
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "TI2V" in lines[0] and "leave out --image" in lines[0]
    assert not (tmp_path / "v.mp4").exists()


def test_ti2v_vae_geometry_is_the_pipelines(real_folder):
    """Wan 2.2's VAE patchifies 2x2 pixels before its x8 encoder: /16 in space (the config's scale_factor_spatial),
    as WanPipeline computes it; a 32x32, 9-frame clip is 48 x 3 x 2 x 2 latents and decodes back to 32x32."""
    from magicdistill.models.families.real import RealPipeline

    pipe = RealPipeline.from_dir(real_folder(KIND))
    assert (pipe.vae.spatial_ratio, pipe.vae.temporal_ratio) == (pipe.pipe.vae_scale_factor_spatial,
                                                                  pipe.pipe.vae_scale_factor_temporal) == (16, 4)
    clip = torch.rand(1, 3, rf.FRAMES, rf.HEIGHT, rf.WIDTH, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = pipe.vae.encode(clip)
        assert tuple(latents.shape) == (1, 48, 3, rf.HEIGHT // 16, rf.WIDTH // 16)
        assert tuple(pipe.vae.decode(latents).shape) == tuple(clip.shape)
