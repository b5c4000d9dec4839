"""export: what we write loads in plain diffusers (a subprocess that never imports magicdistill) and
gives what magicdistill gives.

Tolerances: latents are compared at atol 1e-5 (float32; a 2-step run of a tiny random model has
values ~1); merging a LoRA into W vs running W x + B (A x) differ by float rounding only.
"""

import json
import subprocess
import sys

import pytest
import torch

from real_fixtures import FRAMES, HEIGHT, WIDTH, hunyuan_prompt_template

STEPS, SHIFT, PROMPT = 2, 4.0, "a cat runs on the grass"
GUIDANCE = {"hunyuan-t2v": 6.0, "wan-t2v": 1.0, "wan-i2v": 1.0, "wan22-a14b": 1.0}  # embedded scalar for HunyuanVideo; Wan: no CFG
ATOL = 1e-5

# Runs with plain diffusers only; fails if anything pulled magicdistill in.
PLAIN_DIFFUSERS = r"""
import json, sys, torch
from diffusers import DiffusionPipeline
from peft.tuners.lora import LoraLayer
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    pipe = DiffusionPipeline.from_pretrained(job["folder"])
    pipe.set_progress_bar_config(disable=True)
    adapted = 0
    if job.get("lora"):
        if hasattr(pipe, "load_lora_weights"):
            pipe.load_lora_weights(job["lora"])
        else:  # diffusers 0.42 has no load_lora_weights for HunyuanVideo-1.5 pipelines
            pipe.transformer.load_lora_adapter(job["lora"], prefix="transformer")
        adapted = sum(isinstance(m, LoraLayer) for m in pipe.transformer.modules())
    if job.get("guidance") is not None:  # a pipeline whose scale lives in its guider (HunyuanVideo-1.5)
        pipe.guider = pipe.guider.new(guidance_scale=job["guidance"])
    if job.get("lora_2"):  # Wan 2.2 A14B: the second expert's file
        pipe.load_lora_weights(job["lora_2"], load_into_transformer_2=True)
        adapted += sum(isinstance(m, LoraLayer) for m in pipe.transformer_2.modules())
    if job.get("scheduler"):  # what export prints to set on the base pipeline
        import diffusers
        pipe.scheduler = getattr(diffusers, job["scheduler"][0])(**job["scheduler"][1])
    kwargs = dict(job["kwargs"], latents=torch.load(job["noise"]), output_type="latent",
                  generator=torch.Generator().manual_seed(0))
    latents = pipe(**kwargs).frames
    guider = getattr(pipe, "guider", None)
    torch.save({"latents": latents, "adapted": adapted, "scheduler": type(pipe.scheduler).__name__,
                "guidance": guider.guidance_scale if guider is not None else None}, job["result"])
assert not any(name.split(".")[0] == "magicdistill" for name in sys.modules), "magicdistill was imported"
"""


def _call_kwargs(kind, folder):
    """JSON-able arguments of diffusers' pipeline call."""
    from transformers import AutoTokenizer

    kwargs = dict(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS,
                  guidance_scale=GUIDANCE[kind])
    if kind.startswith("hunyuan"):
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        kwargs.update(prompt_template=hunyuan_prompt_template(tokenizer, False), max_sequence_length=16)
    return kwargs


def _perturbed_transformer(base, seed, name="transformer"):
    import diffusers

    cls = getattr(diffusers, json.loads((base / name / "config.json").read_text())["_class_name"])
    model = cls.from_pretrained(base / name)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def _generator_folder(base, path, seed):
    """A generator folder as distill writes one: its own transformer/ + magicdistill.json over the base."""
    from magicdistill.models.folder import read_model_folder, write_derived_record

    _perturbed_transformer(base, seed).save_pretrained(path / "transformer")
    if (base / "transformer_2").is_dir():  # Wan 2.2 A14B: both experts are distilled
        _perturbed_transformer(base, seed + 100, "transformer_2").save_pretrained(path / "transformer_2")
    # the schedule distill records: the generator was trained at flow.sigma_schedule(steps, shift)
    write_derived_record(path, read_model_folder(base),
                         sampler={"kind": "euler", "steps": STEPS, "shift": SHIFT, "eta": 0.0,
                                  "schedule": "shifted_linear",
                                  "guidance": GUIDANCE[base.name]})
    return path


def _ours(gen, kind, noise):
    from magicdistill.models.families.real import RealPipeline

    extra = {"max_sequence_length": 16} if kind.startswith("hunyuan") else {}
    return RealPipeline.from_dir(gen).latents(None, PROMPT, height=HEIGHT, width=WIDTH, frames=FRAMES, steps=STEPS,
                                              guidance=GUIDANCE[kind], shift=SHIFT, noise=noise, **extra)


def _noise(seed):
    return torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def _with_lora(base, rank=4, alpha=8.0, seed=7, name="transformer"):
    """The base transformer with a magicdistill LoRA (alpha / rank = 2) whose B is not zero."""
    import diffusers
    from magicdistill.models.lora import SharedLoRA

    cls = getattr(diffusers, json.loads((base / name / "config.json").read_text())["_class_name"])
    model = cls.from_pretrained(base / name)
    lora = SharedLoRA(model, rank=rank, alpha=alpha, adapter="generator")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.layers:
            layer.lora_B["generator"].weight.copy_(0.05 * torch.randn(layer.lora_B["generator"].weight.shape,
                                                                      generator=g))
    return model, lora


def _pipeline_latents(folder, kind, noise, **components):
    import diffusers

    # the folder's own class: DiffusionPipeline.from_pretrained ignores a passed transformer for WanPipeline
    cls = getattr(diffusers, json.loads((folder / "model_index.json").read_text())["_class_name"])
    pipe = cls.from_pretrained(folder, **components)
    assert all(getattr(pipe, name) is module for name, module in components.items())
    pipe.set_progress_bar_config(disable=True)
    return pipe(**_call_kwargs(kind, folder), latents=noise.clone(), output_type="latent",
                generator=torch.Generator().manual_seed(0)).frames


@pytest.fixture(scope="module")
def exported(real_folder, tmp_path_factory):
    """Everything exported and ours computed in-process; then one plain-diffusers subprocess for all."""
    from typer.testing import CliRunner

    from magicdistill.cli import app
    from magicdistill.models.export import lora_from_peft, write_lora
    from magicdistill.models.folder import read_model_folder, write_derived_record
    from magicdistill.models.lora import merged

    root = tmp_path_factory.mktemp("export")
    jobs, ours = [], {}
    for i, kind in enumerate(("hunyuan-t2v", "wan-t2v")):
        base = real_folder(kind)
        gen = _generator_folder(base, root / f"gen-{kind}", seed=i)
        noise = _noise(10 + i)
        torch.save(noise, root / f"noise-{kind}.pt")
        result = CliRunner().invoke(app, ["export", "--model", str(gen), "--out", str(root / f"pipe-{kind}")])
        assert result.exit_code == 0, result.output
        assert f"num_inference_steps={STEPS}, guidance_scale={GUIDANCE[kind]:g}" in result.output
        card = (root / f"pipe-{kind}" / "README.md").read_text()  # what diffusers cannot read, for the user
        assert f"num_inference_steps={STEPS}, guidance_scale={GUIDANCE[kind]:g}" in card
        ours[kind] = _ours(gen, kind, noise)
        jobs.append({"name": f"pipe-{kind}", "folder": str(root / f"pipe-{kind}"), "noise": str(root / f"noise-{kind}.pt"),
                     "kwargs": _call_kwargs(kind, base), "result": str(root / f"pipe-{kind}.out")})
        # a LoRA generator: the file for the base pipeline vs the same LoRA merged in-process
        model, lora = _with_lora(base)
        write_lora(base, root / f"{kind}.safetensors", lora_from_peft(model, "generator"))
        ours[f"lora-{kind}"] = _pipeline_latents(base, kind, noise, transformer=merged(model))
        ours[f"base-{kind}"] = _pipeline_latents(base, kind, noise)
        ours[f"lora-layers-{kind}"] = len(lora.layers)
        jobs.append({"name": f"lora-{kind}", "folder": str(base), "lora": str(root / f"{kind}.safetensors"),
                     "noise": str(root / f"noise-{kind}.pt"), "kwargs": _call_kwargs(kind, base),
                     "result": str(root / f"lora-{kind}.out")})
    # Wan 2.2 A14B: a two-expert generator exported as a pipeline folder (no LoRA: see test_a14b_...)
    kind = "wan22-a14b"
    base = real_folder(kind)
    gen = _generator_folder(base, root / f"gen-{kind}", seed=3)
    noise = _noise(13)
    torch.save(noise, root / f"noise-{kind}.pt")
    result = CliRunner().invoke(app, ["export", "--model", str(gen), "--out", str(root / f"pipe-{kind}")])
    assert result.exit_code == 0, result.output
    ours[kind] = _ours(gen, kind, noise)
    jobs.append({"name": f"pipe-{kind}", "folder": str(root / f"pipe-{kind}"), "noise": str(root / f"noise-{kind}.pt"),
                 "kwargs": _call_kwargs(kind, base), "result": str(root / f"pipe-{kind}.out")})
    # ... and a low-rank A14B generator as two LoRA files (one per expert) on the base pipeline
    lgen = root / "gen-a14b-lora"
    loras = {}
    for j, name in enumerate(("transformer", "transformer_2")):
        model, lora = _with_lora(base, rank=4, seed=20 + j, name=name)
        merged(model).save_pretrained(lgen / name)
        loras[name] = len(lora.layers)
    write_derived_record(lgen, read_model_folder(base), sampler={"kind": "euler", "steps": STEPS, "shift": SHIFT,
                                                                 "eta": 0.0, "schedule": "shifted_linear",
                                                                 "guidance": 1.0})
    result = CliRunner().invoke(app, ["export", "--model", str(lgen), "--lora", str(root / "a14b.safetensors"),
                                      "--rank", "4"])
    assert result.exit_code == 0, result.output
    ours["a14b-lora-output"] = result.output
    ours["a14b-lora"] = _ours(lgen, kind, noise)
    ours["a14b-lora-layers"] = loras
    ours["a14b-base"] = _pipeline_latents(base, kind, noise)
    jobs.append({"name": "lora-a14b", "folder": str(base), "lora": str(root / "a14b.safetensors"),
                 "lora_2": str(root / "a14b.transformer_2.safetensors"), "noise": str(root / f"noise-{kind}.pt"),
                 "scheduler": ["FlowMapEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": SHIFT}],
                 "kwargs": _call_kwargs(kind, base), "result": str(root / "lora-a14b.out")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "plain.py").write_text(PLAIN_DIFFUSERS)
    run = subprocess.run([sys.executable, str(root / "plain.py"), str(root / "jobs.json")], capture_output=True,
                         text=True, env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = {job["name"]: torch.load(job["result"]) for job in jobs}
    return root, ours, theirs


def test_hunyuan_pipeline_folder_reloads_in_plain_diffusers_equal_to_ours(exported, kind="hunyuan-t2v"):
    root, ours, theirs = exported
    got = theirs[f"pipe-{kind}"]
    assert got["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    config = json.loads((root / f"pipe-{kind}" / "scheduler" / "scheduler_config.json").read_text())
    assert config["shift"] == SHIFT
    assert got["latents"].shape == ours[kind].shape
    torch.testing.assert_close(got["latents"], ours[kind], atol=ATOL, rtol=0)
    assert ours[kind].abs().mean() > 0.1


def test_wan_pipeline_folder_reloads_in_plain_diffusers_equal_to_ours(exported):
    """WanPipeline calls set_timesteps(N) alone: the export's FlowMapEulerDiscreteScheduler at the generator's
    shift gives flow.sigma_schedule(N, shift) with float timesteps and Euler steps, so diffusers' loop is ours."""
    import diffusers
    from magicdistill.flow import sigma_schedule

    root, ours, theirs = exported
    folder = root / "pipe-wan-t2v"
    got = theirs["pipe-wan-t2v"]
    assert got["latents"].shape == ours["wan-t2v"].shape
    torch.testing.assert_close(got["latents"], ours["wan-t2v"], atol=ATOL, rtol=0)
    assert ours["wan-t2v"].abs().mean() > 0.1
    assert got["scheduler"] == "FlowMapEulerDiscreteScheduler"
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (config["shift"], config["num_train_timesteps"]) == (SHIFT, 1000)
    scheduler = diffusers.FlowMapEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(STEPS)
    torch.testing.assert_close(scheduler.sigmas.float(), sigma_schedule(STEPS, SHIFT), atol=1e-7, rtol=0)


def test_a14b_two_expert_generator_reloads_in_plain_diffusers_equal_to_ours(exported):
    """Both experts of a Wan 2.2 A14B generator are exported; diffusers switches them at the same timestep
    (boundary_ratio x 1000) as ours, and the 2-step grid uses both (sigma 1 high-noise, 0.8 low-noise)."""
    from safetensors.torch import load_file
    from magicdistill.flow import sigma_schedule

    root, ours, theirs = exported
    folder, gen = root / "pipe-wan22-a14b", root / "gen-wan22-a14b"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline" and index["transformer_2"][0] == "diffusers"
    sigmas = sigma_schedule(STEPS, SHIFT)
    assert sigmas[1] < index["boundary_ratio"] <= sigmas[0]  # each expert takes one step
    for name in ("transformer", "transformer_2"):  # the generator's experts, not the base's
        file = "diffusion_pytorch_model.safetensors"
        exported_w, generator_w = load_file(folder / name / file), load_file(gen / name / file)
        assert all(torch.equal(exported_w[k], generator_w[k]) for k in generator_w)
    got = theirs["pipe-wan22-a14b"]
    assert got["scheduler"] == "FlowMapEulerDiscreteScheduler"
    assert got["latents"].shape == ours["wan22-a14b"].shape
    torch.testing.assert_close(got["latents"], ours["wan22-a14b"], atol=ATOL, rtol=0)
    assert ours["wan22-a14b"].abs().mean() > 0.1


def test_a14b_lora_files_one_per_expert_act_on_the_base_as_merging(exported):
    """export --lora of a two-expert generator writes FILE (transformer) and FILE's .transformer_2 sibling;
    loaded on the base pipeline (the second with load_into_transformer_2=True) and run with the printed
    scheduler, plain diffusers equals our sampling of the merged generator."""
    _, ours, theirs = exported
    out = ours["a14b-lora-output"]
    assert "load_into_transformer_2=True" in out and "a14b.transformer_2.safetensors" in out
    assert "diffusers.FlowMapEulerDiscreteScheduler(num_train_timesteps=1000, shift=4.0)" in out
    assert out.count("carries 100.00 %") == 2
    got = theirs["lora-a14b"]
    assert got["adapted"] == sum(ours["a14b-lora-layers"].values())  # both experts' layers found their modules
    torch.testing.assert_close(got["latents"], ours["a14b-lora"], atol=ATOL, rtol=0)
    assert (got["latents"] - ours["a14b-base"]).abs().max() > 100 * ATOL  # the LoRAs do change the output


@pytest.mark.parametrize("kind", ["hunyuan-t2v", "wan-t2v"])
def test_lora_file_loads_on_the_base_and_acts_as_merging(exported, kind):
    _, ours, theirs = exported
    got = theirs[f"lora-{kind}"]
    assert got["adapted"] == ours[f"lora-layers-{kind}"]  # every LoRA layer of the file found its module
    torch.testing.assert_close(got["latents"], ours[f"lora-{kind}"], atol=ATOL, rtol=0)
    assert (got["latents"] - ours[f"base-{kind}"]).abs().max() > 100 * ATOL  # the LoRA does change the output


def test_svd_lora_of_a_low_rank_change_reproduces_the_merged_weights(real_folder):
    from safetensors.torch import load_file
    from magicdistill.models.export import lora_from_difference

    base = load_file(real_folder("wan-t2v") / "transformer" / "diffusion_pytorch_model.safetensors")
    g = torch.Generator().manual_seed(0)
    tuned = dict(base)
    changed = [k for k in base if k.endswith(("to_q.weight", "ffn.net.2.weight"))]
    for key in changed:
        w = base[key]
        tuned[key] = w + torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g) * 0.1
    tensors, report = lora_from_difference(base, tuned, rank=2)
    assert report["layers"] == len(changed) == 6 and report["left_out"] == 0 and report["captured"] == pytest.approx(1.0, abs=1e-9)
    for key in changed:
        module = key[: -len(".weight")]
        rebuilt = base[key] + tensors[f"{module}.lora_B.weight"] @ tensors[f"{module}.lora_A.weight"]
        torch.testing.assert_close(rebuilt, tuned[key], atol=1e-6, rtol=0)

    _, low = lora_from_difference(base, tuned, rank=1)  # below the change's rank: it says how much is lost
    assert 0.3 < low["captured"] < 0.95
    tuned["blocks.0.attn1.to_q.bias"] = base["blocks.0.attn1.to_q.bias"] + 1.0
    _, with_bias = lora_from_difference(base, tuned, rank=2)
    assert with_bias["left_out"] > 0.1  # a changed bias is reported, not silently dropped


def test_svd_export_of_a_lora_generator_folder(real_folder, tmp_path):
    """distill saves LoRA generators merged; export --lora at the LoRA's rank recovers an exact LoRA."""
    from magicdistill.models.export import export_model
    from magicdistill.models.folder import read_model_folder, write_derived_record
    from magicdistill.models.lora import merged
    from safetensors.torch import load_file

    base = real_folder("wan-t2v")
    model, _ = _with_lora(base, rank=4)
    merged(model).save_pretrained(tmp_path / "gen" / "transformer")
    write_derived_record(tmp_path / "gen", read_model_folder(base),
                         sampler={"kind": "euler", "steps": 4, "shift": 5.0, "guidance": 1.0, "eta": 0.0})
    lines = export_model(tmp_path / "gen", lora=tmp_path / "gen.safetensors", rank=4)
    assert "carries 100.00 %" in lines[0] and "cannot hold" not in lines[0]
    keys = load_file(tmp_path / "gen.safetensors")
    assert all(k.startswith("transformer.") for k in keys) and any(k.endswith("lora_A.weight") for k in keys)
    assert "diffusers.FlowMapEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)" in lines[1]
    assert "num_inference_steps=4" in lines[1]


def test_export_refuses_what_diffusers_cannot_load(real_folder, tmp_path):
    from magicdistill.models.export import export_model

    with pytest.raises(ValueError, match="diffusers pipeline folder itself"):
        export_model(real_folder("wan-t2v"), tmp_path / "x")
    with pytest.raises(ValueError, match="nothing to export"):
        export_model(real_folder("wan-t2v"))
    gen = _generator_folder(real_folder("wan-t2v"), tmp_path / "gen", seed=0)
    with pytest.raises(ValueError, match="must end in .safetensors"):  # found before --out is written
        export_model(gen, tmp_path / "x", lora=tmp_path / "gen.bin")
    (tmp_path / "y").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        export_model(gen, tmp_path / "y", lora=tmp_path / "gen.safetensors")
    assert not (tmp_path / "x").exists() and not (tmp_path / "gen.safetensors").exists()
    from magicdistill.models.folder import read_model_folder, write_derived_record

    (tmp_path / "lcm" / "transformer").mkdir(parents=True)  # an LCM generator samples by consistency steps
    write_derived_record(tmp_path / "lcm", read_model_folder(real_folder("wan-t2v")),
                         sampler={"kind": "consistency", "steps": 4, "shift": 5.0, "guidance": 1.0})
    with pytest.raises(ValueError, match="consistency"):
        export_model(tmp_path / "lcm", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_says_in_one_line_that_the_tiny_default_has_no_diffusers_form(tmp_path):
    from magicdistill.pipeline import SHIPPED_DIR

    run = subprocess.run([sys.executable, "-m", "magicdistill", "export", "--model", str(SHIPPED_DIR / "generator"),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "no diffusers equivalent" in lines[0]
    assert not (tmp_path / "x").exists()


def test_wan_i2v_generator_exports_to_an_image_to_video_pipeline(real_folder, tmp_path):
    """A generator distilled from a Wan 2.1 I2V teacher: the export is a WanImageToVideoPipeline (CLIP image
    encoder and all) whose own loop equals ours with the same first frame."""
    import diffusers
    from magicdistill.models.export import export_model
    from magicdistill.models.families.real import RealPipeline
    from real_fixtures import first_frame

    base = real_folder("wan-i2v")
    gen = _generator_folder(base, tmp_path / "gen", seed=5)
    export_model(gen, tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline" and index["image_encoder"][1] == "CLIPVisionModel"

    image, noise = first_frame(), _noise(12)
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(image=image, prompt=PROMPT, height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS,
                  guidance_scale=1.0, latents=noise.clone(), output_type="latent").frames
    ours = RealPipeline.from_dir(gen).latents(image, PROMPT, height=HEIGHT, width=WIDTH, frames=FRAMES, steps=STEPS,
                                              guidance=1.0, shift=SHIFT, noise=noise.clone())
    assert type(pipe.scheduler).__name__ == "FlowMapEulerDiscreteScheduler"
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0)


def test_scheduler_spec_per_pipeline():
    """HunyuanVideo's pipelines pass their own sigmas, so FlowMatchEuler + shift is exact there; Wan's call
    set_timesteps(N) alone, where only FlowMapEuler gives our grid (FlowMatchEuler's ends before 0)."""
    import diffusers
    from magicdistill.flow import sigma_schedule
    from magicdistill.models.export import scheduler_spec

    flow_match = {**diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0).config,
                  "_class_name": "FlowMatchEulerDiscreteScheduler"}  # as scheduler_config.json holds it
    assert scheduler_spec("HunyuanVideoPipeline", flow_match, shift=SHIFT)[1]["shift"] == SHIFT
    assert scheduler_spec("HunyuanVideoPipeline", flow_match, shift=SHIFT)[0] == "FlowMatchEulerDiscreteScheduler"
    for pipeline in ("WanPipeline", "WanImageToVideoPipeline"):
        name, config = scheduler_spec(pipeline, flow_match, shift=SHIFT)
        assert (name, config) == ("FlowMapEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": SHIFT})
    wan_grid = diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    wan_grid.set_timesteps(STEPS)  # what WanPipeline would get from FlowMatchEuler: not the generator's grid
    assert (wan_grid.sigmas - sigma_schedule(STEPS, SHIFT)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="not a flow-matching scheduler"):
        scheduler_spec("WanPipeline", {**diffusers.DDIMScheduler().config, "_class_name": "DDIMScheduler"}, shift=SHIFT)
