"""The ``magicdistill`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Distil video diffusion transformers into few-step generators, and run them.")


@app.callback()
def _root() -> None:
    """Distil video diffusion transformers into few-step generators, and run them."""


def _quiet() -> None:
    # Offline by design: never reach for a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Third-party noise that reads like breakage (torch's _pytree deprecations, "Unable to import torchao",
    # "should be kept in float32: []", torchao's _C_mxfp8.so) is silenced here, for the command line only:
    # library users keep every warning. Our own warnings (module magicdistill.*) still show.
    warnings.filterwarnings("ignore", module=r"(?!magicdistill)")
    # diffusers and transformers reset their loggers' level on first import; these are read then
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging

    for name in ("torchao", "torch._dynamo", "torch.utils._pytree", "diffusers", "transformers",
                 "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg.splitlines()[0] if msg else 'failed'}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


# options shared by several commands
CACHE_DIR_OPTION = typer.Option(None, help="where the encoded dataset is cached [default: OUT/cache]")
DATA_OPTION = typer.Option(None, "--data", help="a cache folder of your own clips or prompts (magicdistill cache; "
                                                "docs/DATA.md) [default: the synthetic portraits]")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="print the resolved config and exit")
RESUME_OPTION = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="start afresh in an --out that holds another run or model "
                                                           "(its checkpoint and metrics are deleted, its model folder "
                                                           "replaced when the new one is done)")
DTYPE_OPTION = typer.Option("float32", help="float32 | bfloat16 | float16")
LOG_OPTION = typer.Option("none", "--log", help="none | tensorboard (OUT/tensorboard) | wandb (offline in OUT/wandb): "
                                               "besides metrics.jsonl")


def _run_with_config(cls, config: Path | None, dry_run: bool, run, base=None, **flags) -> None:
    """Call ``run(cfg)`` with the run's config: a JSON file (used instead of the flags) or the flags over
    ``base()`` (a preset; default: the defaults); --dry-run prints it instead. A ValueError (a bad field, bad
    input, an unknown preset) is a one-line error."""
    try:
        cfg = cls.from_json(config) if config else cls.strict_update(base() if base else cls(), **flags)
        if dry_run:
            typer.echo(cfg.model_dump_json(indent=1))
            return
        if getattr(cfg, "device", None):
            from .validate import check_device

            check_device(cfg.device)
        run(cfg)
    except ValueError as e:
        _fail(str(e))
    except OSError as e:  # the disk or folder the user pointed at: full, read-only, a name too long
        _fail(_os_error(e))


def _os_error(e: OSError) -> str:
    return f"cannot write or read {e.filename or 'the output'}: {e.strerror or e}; check --out's folder and free space"


@app.command("train-vae")
def train_vae_cmd(
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, vae/)"),
    steps: int = typer.Option(1000, help="optimizer steps"),
    batch_size: int = typer.Option(4),
    normalisation: str = typer.Option("global", help="latent std: global (one) or per_channel"),
    latent_channels: int = typer.Option(16, help="latent channels (a teacher on this VAE needs the same dit.latent_channels)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    decoder_only: bool = typer.Option(False, "--decoder-only", help="fine-tune only the decoder of --init-from "
                                      "(its encoder and latent space kept: teachers trained on it stay valid)"),
    init_from: Path = typer.Option(None, help="with --decoder-only: the VAE folder to start from"),
    decoder_context: int = typer.Option(3, help="with --decoder-only: previous latent frames the decoder reads"),
    temporal_weight: float = typer.Option(1.0, help="with --decoder-only: weight of the frame-difference loss"),
    lr: float = typer.Option(None, help="learning rate [default: 2e-3; with --decoder-only 1e-4]"),
    crop: int = typer.Option(0, help="with --decoder-only: train on random CROP x CROP windows (0: whole frames)"),
    pool_clips: int = typer.Option(512, help="training clips rendered once; batches are drawn from them"),
    generated_from: Path = typer.Option(None, help="with --decoder-only: also fit the decoder to this model "
                                        "folder's generated latents (smoothness + re-encoding consistency)"),
    generated_latents: int = typer.Option(64, help="with --generated-from: latents sampled from it"),
    smooth_weight: float = typer.Option(1.0, help="with --generated-from: weight of the second-difference loss"),
    consistency_weight: float = typer.Option(10.0, help="with --generated-from: weight of |E(D(z)) - z|^2"),
    resume: bool = RESUME_OPTION,
) -> None:
    """Train the embedded default's causal video VAE on synthetic portrait clips."""
    _quiet()
    from .config import VAETrainConfig
    from .train.vae_trainer import train_vae

    flags = dict(steps=steps, batch_size=batch_size, seed=seed, device=device, normalisation=normalisation,
                 latent_channels=latent_channels, pool_clips=pool_clips)
    if decoder_only:
        from .train.vae_decoder import finetune_decoder

        if init_from is None or not (init_from / "config.json").is_file():
            _fail(f"--decoder-only needs --init-from, a VAE folder with config.json (got {init_from})")
        flags.update(decoder_only=True, init_from=str(init_from.resolve()), decoder_context=decoder_context,
                     temporal_weight=temporal_weight, lr=1e-4 if lr is None else lr, crop=crop,
                     generated_latents=generated_latents, smooth_weight=smooth_weight,
                     consistency_weight=consistency_weight)
        if generated_from is not None:
            if not (generated_from / "dit.json").is_file():
                _fail(f"--generated-from needs a model folder with dit.json (got {generated_from})")
            flags["generated_from"] = str(generated_from.resolve())
        _run_with_config(VAETrainConfig, None, False, lambda cfg: finetune_decoder(cfg, str(out), resume=resume),
                         **flags)
        return
    if lr is not None:
        flags["lr"] = lr
    _run_with_config(VAETrainConfig, None, False, lambda cfg: train_vae(cfg, str(out), resume=resume), **flags)


@app.command("calibrate-vae")
def calibrate_vae_cmd(
    vae: Path = typer.Option(..., help="a CausalPatchVAE folder (e.g. the shipped tiny VAE)"),
    out: Path = typer.Option(..., help="new VAE folder: the same weights with the new normalisation"),
    normalisation: str = typer.Option("per_channel", help="global (one std) or per_channel (a std per channel)"),
    clips: int = typer.Option(64, help="training clips the statistics come from"),
) -> None:
    """Recompute a VAE's latent normalisation into a new folder (teachers are tied to theirs)."""
    _quiet()
    from .train.vae_trainer import recalibrate_vae

    if out.exists():
        _fail(f"{out} exists; choose a new --out")
    try:
        typer.echo(str(recalibrate_vae(vae, out, normalisation, clips=clips)))
    except ValueError as e:
        _fail(str(e))


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, samples/, teacher/)"),
    vae: Path = typer.Option(None, help="diffusers VAE folder [default: the shipped tiny VAE]"),
    task: str = typer.Option("i2v", help="i2v (Magic 1-For-1 TI2V) or t2v"),
    steps: int = typer.Option(4000),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(3e-4),
    num_clips: int = typer.Option(3000, help="synthetic training clips to encode"),
    init_from: Path = typer.Option(None, help="a tiny T2V teacher folder to convert (widen to 2C+1 channels) and "
                                   "fine-tune; or a Wan / HunyuanVideo diffusers folder (e.g. from convert-i2v) to "
                                   "fine-tune as it is (docs/REAL_MODELS.md)"),
    height: int = typer.Option(None, help="with a diffusers --init-from: clip height [default: its record, else its "
                                          "pipeline's default]"),
    width: int = typer.Option(None, help="with a diffusers --init-from: clip width [default: as --height]"),
    frames: int = typer.Option(None, help="with a diffusers --init-from: clip frames, 1 + 4k [default: as --height]"),
    image_padding: str = typer.Option("zero", help="first-frame latent in the I2V concat channels: zero (Magic 1-For-1) "
                                      "or repeat (over every latent frame; docs/DECISIONS.md)"),
    embed_tokens: int = typer.Option(1, help="tokens per side the patch embedding reads (odd; 1 = diffusers' "
                                     "layout; docs/DECISIONS.md)"),
    skip: str = typer.Option("none", help="none | gated (a learned skip that passes the input through at small "
                             "noise; docs/DECISIONS.md)"),
    train_shift: float = typer.Option(3.0, help="training sigma = shift(logit-normal); 1 = SD3's logit-normal"),
    guidance: float = typer.Option(2.0, help="CFG scale of the preview samples and of the sampler recorded in "
                                   "teacher/dit.json"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
    config: Path = typer.Option(None, help="a JSON TeacherTrainConfig, used instead of the flags"),
    checkpoint_every: int = typer.Option(250),
    sample_every: int = typer.Option(1000),
    cache_dir: Path = CACHE_DIR_OPTION,
    data: Path = DATA_OPTION,
    log: str = LOG_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    resume: bool = RESUME_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Train a teacher (flow matching) on synthetic portrait videos (or your own: --data)."""
    _quiet()
    from .config import TeacherTrainConfig
    from .pipeline import SHIPPED_DIR

    def run(cfg):
        from .models.folder import is_real_folder

        if cfg.init_from and is_real_folder(cfg.init_from):  # Wan / HunyuanVideo: train/real_teacher_train.py
            from .train.real_teacher_train import train_real_teacher

            if vae is not None:
                raise ValueError(f"--vae does not apply to {cfg.init_from}: a diffusers folder uses its own vae/")
            train_real_teacher(cfg, out, resume=resume, cache_dir=cache_dir, overwrite=overwrite, height=height,
                               width=width, frames=frames,
                               task_given=getattr(ctx.get_parameter_source("task"), "name", "") == "COMMANDLINE")
            return
        if height or width or frames:
            raise ValueError("--height/--width/--frames apply with a diffusers --init-from folder; the tiny "
                             "teacher's clip format is --config's data")
        from .train.teacher import train_teacher

        train_teacher(cfg, str(out), resume=resume, cache_dir=str(cache_dir) if cache_dir else None,
                      overwrite=overwrite, log=log)

    _run_with_config(
        TeacherTrainConfig, config, dry_run, run, task=task, steps=steps, batch_size=batch_size, lr=lr,
        num_clips=num_clips, seed=seed, device=device, dtype=dtype, checkpoint_every=checkpoint_every,
        sample_every=sample_every, vae_dir=str(vae or SHIPPED_DIR / "vae"), init_from=str(init_from or ""),
        train_shift=train_shift, guidance=guidance, data_cache=str(data or ""),
        dit={"image_padding": image_padding, "embed_tokens": embed_tokens, "skip": skip})


@app.command("distill")
def distill_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, samples/, generator/)"),
    method: str = typer.Option("w2s", help="w2s (weak-to-strong DMD) | dmd (vanilla DMD2) | lcm | cfg (guidance "
                                            "distillation) | euler (N-step teacher, nothing trained)"),
    steps: int = typer.Option(4, help="the generator's sampling steps"),
    iters: int = typer.Option(200, help="distillation iterations"),
    teacher: Path = typer.Option(None, help="teacher model folder [default: the shipped tiny teacher]"),
    alpha_weak: float = typer.Option(0.25, help="LoRA scale of the real score (0 = vanilla DMD2)"),
    alpha_strong: float = typer.Option(1.0, help="LoRA scale of the fake score"),
    lambda_reg: float = typer.Option(0.0, help="weight of the ground-truth regularisation L_reg"),
    input_mode: str = typer.Option("noised_data", help="noised_data | backward_simulation"),
    scores: str = typer.Option("shared_lora", help="shared_lora (one backbone + one LoRA, W2S) | separate (full "
                                                   "real and fake copies, DMD2 as published)"),
    generator: str = typer.Option("full", help="full (a trainable copy of the teacher) | lora (an adapter on the "
                                              "scores' frozen backbone: far less memory)"),
    batch_size: int = typer.Option(4),
    real_guidance: float = typer.Option(None, help="CFG scale of the real score [default: the teacher's own]"),
    preset: str = typer.Option(None, help="paper: the paper's hyper-parameters (batch 16, lr 2e-6, generator every "
                                          "5th iteration); flags given on the command line override it"),
    num_clips: int = typer.Option(1000, help="synthetic training clips to encode"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
    config: Path = typer.Option(None, help="a JSON DistillConfig, used instead of the flags"),
    cache_dir: Path = CACHE_DIR_OPTION,
    data: Path = DATA_OPTION,
    log: str = LOG_OPTION,
    lora_rank: int = typer.Option(16, help="rank of the scores' LoRA"),
    generator_lora_rank: int = typer.Option(16, help="rank of a LoRA generator's adapter"),
    lora_targets: str = typer.Option("attention", help="attention | attention_ffn: the projections the LoRAs adapt"),
    checkpointing: bool = typer.Option(False, "--checkpointing", help="recompute each transformer block's "
                                                                      "activations in the backward pass"),
    mixed_precision: str = typer.Option("no", help="no | bf16 (autocast; frozen backbone in bf16, float32 masters)"),
    dry_run: bool = DRY_RUN_OPTION,
    resume: bool = RESUME_OPTION,
    height: int = typer.Option(None, help="training clip height [default: the teacher folder's record, else its "
                                          "pipeline's default]"),
    width: int = typer.Option(None, help="training clip width [default: as --height]"),
    frames: int = typer.Option(None, help="training clip frames [default: as --height]"),
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Distil the teacher into a few-step generator (MagicDistillation W2S, DMD2, or the Euler baseline)."""
    _quiet()
    from .config import DistillConfig
    from .pipeline import SHIPPED_DIR

    def run(cfg):
        from .distill.trainer import distill

        distill(cfg, teacher or SHIPPED_DIR / "teacher", out, resume=resume, cache_dir=cache_dir, height=height,
                width=width, frames=frames, overwrite=overwrite, log=log)

    flags = dict(method=method, steps=steps, iters=iters, alpha_weak=alpha_weak, alpha_strong=alpha_strong,
                 lambda_reg=lambda_reg, input_mode=input_mode, scores=scores, batch_size=batch_size,
                 real_guidance=real_guidance, num_clips=num_clips, seed=seed, device=device, dtype=dtype,
                 generator=generator, data=str(data or ""), lora_rank=lora_rank, generator_lora_rank=generator_lora_rank,
                 lora_targets=lora_targets, checkpointing=checkpointing, mixed_precision=mixed_precision)
    if preset:  # the preset's values stand unless a flag was typed
        if config:
            _fail("--preset and --config: use one (the JSON config is the whole config)")
        # by name: typer may ship its own copy of click's ParameterSource enum
        flags = {k: v for k, v in flags.items() if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    flags = {k: v for k, v in flags.items() if k != "real_guidance" or v is not None}
    if "data" in flags:  # the flag --data is the config's data_cache
        flags["data_cache"] = flags.pop("data")
    from .config import distill_preset

    _run_with_config(DistillConfig, config, dry_run, run, base=(lambda: distill_preset(preset)) if preset else None,
                     **flags)


@app.command("cache")
def cache_cmd(
    out: Path = typer.Option(..., help="cache folder to write (re-running the same command continues it)"),
    videos: Path = typer.Option(None, help="folder of videos with NAME.txt captions, or a .csv/.jsonl manifest "
                                           "(path, caption)"),
    prompts: Path = typer.Option(None, help="instead of --videos: a text file, one prompt per line (a data-free cache "
                                            "for the DMD terms alone)"),
    teacher: Path = typer.Option(None, help="the model whose VAE and text encoder encode the cache [default: the "
                                            "shipped tiny teacher]"),
    height: int = typer.Option(None, help="frame height [default: the teacher's]"),
    width: int = typer.Option(None, help="frame width [default: the teacher's]"),
    frames: int = typer.Option(None, help="frames per clip, 1 + 4k [default: the teacher's]"),
    fps: float = typer.Option(None, help="frames are sampled at this rate [default: the teacher's]"),
    max_crop: float = typer.Option(0.25, help="skip clips whose centre crop would cut more than this fraction of a side"),
    shard_size: int = typer.Option(256, help="clips per shard"),
    vae_tiling: bool = typer.Option(True, help="Wan / HunyuanVideo: encode with the VAE's spatial tiling and slicing "
                                               "(bounded memory at real resolutions)"),
    device: str = typer.Option("cpu"),
) -> None:
    """Encode your own clips (or prompts) with the teacher's VAE and text encoder into latent shards (docs/DATA.md)."""
    _quiet()
    from .data.cache_command import run_cache
    from .pipeline import SHIPPED_DIR

    try:
        summary = run_cache(teacher or SHIPPED_DIR / "teacher", out, videos=videos, prompts=prompts, height=height,
                            width=width, frames=frames, fps=fps, max_crop=max_crop, shard_size=shard_size, device=device,
                            vae_tiling=vae_tiling)
    except ValueError as e:
        _fail(str(e))
    typer.echo(summary.report(), err=True)
    typer.echo(str(summary.path))


@app.command("plan")
def plan_cmd(
    teacher: Path = typer.Option(None, help="teacher model folder [default: the shipped tiny teacher]"),
    method: str = typer.Option("w2s", help="w2s | dmd"),
    generator: str = typer.Option("full", help="full (a trainable copy) | lora (an adapter on the frozen backbone)"),
    scores: str = typer.Option("shared_lora", help="shared_lora (W2S: one backbone + one LoRA) | separate (DMD2 as "
                                                   "published: a frozen real and a trainable fake copy)"),
    gpus: int = typer.Option(1, help="GPUs (FSDP2 shards parameters, gradients, optimizer states and EMA over them)"),
    batch_size: int = typer.Option(1, help="clips per GPU per iteration"),
    data: Path = typer.Option(None, "--data", help="a cache folder: its clips' token count [default: the teacher's format]"),
    lora_rank: int = typer.Option(16),
    generator_lora_rank: int = typer.Option(16),
    lora_targets: str = typer.Option("attention", help="attention | attention_ffn"),
    checkpointing: bool = typer.Option(False, "--checkpointing", help="recompute each block's activations"),
    mixed_precision: str = typer.Option("no", help="no | bf16 (bf16 frozen backbone, float32 masters)"),
    dtype: str = DTYPE_OPTION,
) -> None:
    """Per-GPU memory of a distillation run, part by part, from the teacher folder's config (docs/SCALING.md)."""
    _quiet()
    from .memory_plan import plan_for
    from .pipeline import SHIPPED_DIR

    try:
        plan = plan_for(teacher or SHIPPED_DIR / "teacher", data=data, method=method, generator=generator,
                        scores=scores, gpus=gpus, batch_size=batch_size, lora_rank=lora_rank,
                        generator_lora_rank=generator_lora_rank, lora_targets=lora_targets, checkpointing=checkpointing,
                        mixed_precision=mixed_precision, dtype=dtype)
    except ValueError as e:
        _fail(str(e))
    typer.echo(plan.report())


@app.command("train-probe")
def train_probe_cmd(
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, probe/)"),
    steps: int = typer.Option(None, help="optimizer steps (default 800)"),
    batch_size: int = typer.Option(None, help="clips per step, plus a third as many shuffled copies (default 24)"),
    pool_clips: int = typer.Option(None, help="synthetic training clips rendered once (default 1500)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    resume: bool = RESUME_OPTION,
) -> None:
    """Train the evaluation probe: predicts synthetic clips' identity and motion attributes (docs/PROBE.md)."""
    _quiet()
    from .train.probe_trainer import ProbeTrainConfig, train_probe

    given = {"steps": steps, "batch_size": batch_size, "pool_clips": pool_clips}  # None: ProbeTrainConfig's default
    _run_with_config(ProbeTrainConfig, None, False, lambda cfg: train_probe(cfg, str(out), resume=resume), seed=seed,
                     device=device, **{k: v for k, v in given.items() if v is not None})


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Option(..., help="what happens in the video"),
    out: Path = typer.Option(..., help="output .mp4 path"),
    image: Path = typer.Option(None, help="first frame (any size/aspect: resized to cover, centre-cropped) [default: "
                                          "chosen by the prior: --t2i, or retrieval from --index]"),
    t2i: Path = typer.Option(None, help="without --image: a local diffusers text-to-image pipeline folder makes the "
                                        "first frame (docs/PRIOR.md)"),
    index: Path = typer.Option(None, help="without --image: retrieve the first frame from this image index "
                                          "(magicdistill index-images) [default: the shipped synthetic identities]"),
    steps: int = typer.Option(None, help="sampling steps, at most 1000 [default: the model's sampler; 50 for a "
                                         "teacher]"),
    guidance: float = typer.Option(None, help="CFG scale w in v_u + w (v_c - v_u); 1 = no guidance [default: 6, "
                                              "or the model's]"),
    shift: float = typer.Option(None, help="timestep shift s of the sigma schedule [default: 5]"),
    eta: float = typer.Option(None, help="0 = the Euler ODE; up to 1 = re-noise each step with fresh noise "
                                         "(stochastic Euler) [default: the model's sampler, else 0]"),
    seed: int = typer.Option(0),
    frames: int = typer.Option(None, help="number of frames in one window, at most 257 (longer: --seconds) "
                                          "[default: the model's]"),
    height: int = typer.Option(None, help="frame height in pixels [default: the model folder's record, else its "
                                          "pipeline's default]"),
    width: int = typer.Option(None, help="frame width in pixels [default: as --height]"),
    seconds: float = typer.Option(None, help="a long video of this many seconds (at most 600) by a sliding window "
                                             "of model-length windows; excludes --frames (docs/LONG_VIDEO.md)"),
    overlap: int = typer.Option(None, help="with --seconds: latent frames each window shares with the previous one "
                                           "[default: long_video.DEFAULT_OVERLAP]"),
    fps: float = typer.Option(None, help="frames per second of the mp4 [default: the model's]"),
    model: Path = typer.Option(None, help="model folder [default: the shipped 4-step distilled generator]"),
    teacher: bool = typer.Option(False, "--teacher", help="sample the shipped teacher (50-step CFG) instead"),
    vae: Path = typer.Option(None, help="VAE folder [default: the model's]"),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
    quantize: str = typer.Option(None, help="int8: int8 weight-only DiT and encoders, quantized on load "
                                            "(docs/QUANTIZATION.md)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer (slow first step; see "
                                                         "docs/BENCHMARKS.md)"),
    upscale: int = typer.Option(None, help="integer nearest-neighbour upscale of the mp4, 1-8 (keeps a small "
                                           "video's colours through 4:2:0) [default: short side >= 256 px]"),
    lossless: bool = typer.Option(False, "--lossless", help="bit-exact RGB H.264 (not upscaled; most browsers do "
                                                           "not play it)"),
    frames_dir: Path = typer.Option(None, help="also write the frames as PNG files into this folder"),
) -> None:
    """Image(+text)-to-video: write a playable H.264 mp4 whose first frame is the image (without --image: one
    chosen by the text->image prior, saved as OUT.prior.png/.json; docs/PRIOR.md)."""
    _quiet()
    import time

    from .generate import generate

    try:
        t0 = time.time()
        path = generate(prompt=prompt, out=out, image=image, steps=steps, guidance=guidance, shift=shift, eta=eta,
                        seed=seed, frames=frames, fps=fps, model=model, teacher=teacher, vae=vae, device=device,
                        dtype=dtype, seconds=seconds, overlap=overlap, t2i=t2i, index=index, quantize=quantize,
                        compile=compile, height=height, width=width, upscale=upscale, lossless=lossless,
                        frames_dir=frames_dir)
    except ValueError as e:
        _fail(str(e))
    except OSError as e:
        _fail(_os_error(e))
    typer.echo(f"done in {time.time() - t0:.1f} s", err=True)
    typer.echo(str(path))


@app.command("quantize")
def quantize_cmd(
    out: Path = typer.Option(..., help="new folder for the quantized model (usable as generate --model OUT)"),
    model: Path = typer.Option(None, help="model folder (default: the shipped 4-step distilled generator)"),
    vae: Path = typer.Option(None, help="VAE folder (default: the model's)"),
    check: bool = typer.Option(True, "--check/--no-check", help="run the quality gate (quantized vs unquantized on "
                                                               "held-out first frames) and report it"),
) -> None:
    """int8 weight-only quantization of a model folder's DiT, vision and text encoders (docs/QUANTIZATION.md).
    Exit code 1 if the quality gate fails (the folder is still written)."""
    _quiet()
    from .generate import default_model
    from .quant.folder import quantize_folder

    from .validate import check_model_folder

    try:
        source = Path(model or default_model(False))
        if source.is_dir():  # damaged weights or record: one line naming the file, before any writing
            check_model_folder(source)
        if vae:
            check_model_folder(vae, "--vae")
        if out.resolve() == source.resolve():
            raise ValueError("--out is the source model folder: choose a new folder")
        path, gate = quantize_folder(source, out, vae_dir=vae, check=check)
    except ValueError as e:
        _fail(str(e))
    if gate is not None:
        typer.echo(gate.report())
    typer.echo(str(path))
    if gate is not None and not gate.passed:
        raise typer.Exit(1)


@app.command("cast-weights")
def cast_weights_cmd(
    model: Path = typer.Option(..., help="model folder (a teacher or generator: transformer/, dit.json)"),
    out: Path = typer.Option(..., help="new model folder, the same model with its weights stored as --dtype"),
    dtype: str = typer.Option("float16", help="float16 | bfloat16 | float32"),
) -> None:
    """Store a model folder's weights in another dtype (half the size in float16; loading casts back)."""
    _quiet()
    from .models.cast import cast_weights
    from .validate import check_model_folder

    try:
        if model.is_dir():  # damaged weights or record: one line naming the file, before any writing
            check_model_folder(model)
        if out.resolve() == model.resolve():
            raise ValueError("--out is the source model folder: choose a new folder")
        typer.echo(str(cast_weights(model, out, dtype)))
    except ValueError as e:
        _fail(str(e))


@app.command("index-images")
def index_images_cmd(
    corpus: Path = typer.Argument(None, help="folder of images (recursive); captions from NAME.txt sidecars, else "
                                             "file names"),
    out: Path = typer.Option(..., help="index folder to write (index.json + embeddings.npy)"),
    clip: Path = typer.Option(None, help="a local Hugging Face CLIP folder: embed the images' pixels with CLIP "
                                         "instead of their captions with MiniLM"),
    synthetic: int = typer.Option(None, help="instead of CORPUS: index this many synthetic portrait identities "
                                             "(their first frames are stored in OUT/images)"),
    seed: int = typer.Option(0, help="with --synthetic: which synthetic clips"),
    device: str = typer.Option("cpu"),
) -> None:
    """Build an image index for the retrieval prior (generate --prompt without --image; docs/PRIOR.md)."""
    _quiet()
    try:
        if (corpus is None) == (synthetic is None):
            raise ValueError("give either an image folder CORPUS or --synthetic N")
        if synthetic is not None and clip is not None:
            raise ValueError("--clip applies to an image folder; the synthetic index embeds captions with MiniLM")
        if synthetic is not None:
            from .prior.synthetic_index import build_synthetic_index

            index = build_synthetic_index(out, synthetic, seed=seed, device=device)
        else:
            from .prior.retrieval import build_index

            index = build_index(corpus, out, clip=clip, device=device)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"{len(index)} images indexed with {index.embedder['kind']}", err=True)
    typer.echo(str(out))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo"), help="demo folder (distillation run, cache, report/)"),
    iters: int = typer.Option(150, help="W2S distillation iterations"),
    clips: int = typer.Option(4, help="held-out clips to sample"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
) -> None:
    """The embedded default end to end: distil the shipped teacher (W2S, 4 steps), sample held-out
    first frames with the 50-step teacher, the 4-step teacher and the distilled generator, and
    write side-by-side videos, timings and a metrics table. Re-running continues a killed demo."""
    _quiet()
    from .demo import run_demo

    try:
        report = run_demo(out, iters=iters, clips=clips, seed=seed, device=device)
    except ValueError as e:
        _fail(str(e))
    typer.echo((report / "report.md").read_text())
    typer.echo(str(report))


@app.command("serve")
def serve_cmd(
    model: list[Path] = typer.Option(None, metavar="DIR", help="a model folder to keep warm (repeatable; the first "
                                     "is the default) [default: the shipped 4-step generator and the shipped teacher]"),
    host: str = typer.Option("127.0.0.1", help="address to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(8000),
    queue_size: int = typer.Option(8, help="jobs that may wait; beyond it a request gets 429 + Retry-After"),
    max_upload_mb: float = typer.Option(10.0, help="largest accepted input image, in MiB"),
    max_seconds: int = typer.Option(12, help="longest video a request may ask for (sliding window beyond a clip)"),
    keep: int = typer.Option(100, help="finished jobs kept with their videos (older ones are removed)"),
    out_dir: Path = typer.Option(None, help="where finished videos are kept [default: a temporary folder removed "
                                            "at shutdown]"),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
) -> None:
    """Serve warm models over HTTP: OpenAI's Videos API (POST /v1/videos ...), /v1/models, /health, /metrics,
    and a web page at / (docs/SERVE.md)."""
    _quiet()
    from .serve.server import serve

    try:
        serve(models=model or None, host=host, port=port, queue_size=queue_size, max_upload_mb=max_upload_mb,
              max_seconds=max_seconds, keep=keep, out_dir=out_dir, device=device, dtype=dtype,
              announce=lambda line: typer.echo(line, err=True))
    except ValueError as e:
        _fail(str(e))


@app.command("bench")
def bench_cmd(
    out: Path = typer.Option(..., help="bench folder (distillation runs, latent cache, results/*.json); re-running "
                                       "continues it"),
    quick: bool = typer.Option(False, "--quick", help="a few-minute version: 16 iterations, 4 clips, 1 sampling "
                                                      "seed, 2 distillation seeds"),
    seeds: int = typer.Option(None, help="sampling seeds per clip [default: 2, --quick 1]"),
    clips: int = typer.Option(None, help="held-out clips [default: 32, --quick 4]"),
    clip_block: int = typer.Option(None, help="clips per metric cell (FVD/FID are set metrics) [default: 8, --quick 2]"),
    distill_seeds: int = typer.Option(None, help="distillation seeds per trained row [default: 2]"),
    iters: int = typer.Option(None, help="distillation iterations per generator [default: 200, --quick 16]"),
    docs: Path = typer.Option(Path("docs/RESULTS.md"), help="the results page to write (plots go to its plots/)"),
    teacher: Path = typer.Option(None, help="TI2V teacher folder [default: the shipped tiny teacher]"),
    t2v_teacher: Path = typer.Option(None, help="a T2V teacher folder: adds the T2V-vs-TI2V distillation curve"),
    probe: Path = typer.Option(None, help="probe folder for the metrics [default: the shipped probe]"),
    data: Path = typer.Option(None, "--data", help="a cache folder of your clips (magicdistill cache): its last --clips "
                                                   "clips are held out, the others distilled on [default: the "
                                                   "synthetic portraits]"),
    device: str = typer.Option("cpu"),
) -> None:
    """The papers' tables in miniature: Euler/LCM/DMD2/W2S at 1-50 steps, the alpha_weak ablation and
    metric vs distillation iterations, with 95% intervals over seeds; writes docs/RESULTS.md + plots."""
    _quiet()
    import shlex

    from .bench.plan import settings_for
    from .bench.runner import run_bench

    try:
        settings = settings_for(quick, iters=iters, clips=clips, seeds=seeds, clip_block=clip_block,
                                distill_seeds=distill_seeds)
        path = run_bench(out, settings, teacher_dir=teacher, t2v_teacher=t2v_teacher, docs=docs, device=device,
                         probe=probe, command=shlex.join(["magicdistill", *sys.argv[1:]]), data=data)
    except ValueError as e:
        _fail(str(e))
    typer.echo(str(path))


@app.command("evaluate")
def evaluate_cmd(
    videos: Path = typer.Option(..., help="folder of generated .mp4 files, or a run folder (its newest samples/ grid)"),
    reference: Path = typer.Option(None, help="folder of reference .mp4 files (default for a run folder: the "
                                              "ground truth beside its samples)"),
    json_out: Path = typer.Option(None, "--json", help="also write the results to this JSON file (atomically)"),
    extractor: str = typer.Option("probe", help="probe | inception | i3d | vgg16 (see docs/EVALUATION.md)"),
    weights: Path = typer.Option(None, help="the extractor's local file (inception-2015-12-05.pt, "
                                            "i3d_torchscript.pt, vgg16.pt) or probe folder"),
    max_videos: int = typer.Option(None, help="use at most this many videos of each folder"),
    images: Path = typer.Option(None, help="folder of the conditioning images, paired with the videos by name "
                                           "order, for i2v_subject (default: frame 0 of each video)"),
    device: str = typer.Option("cpu"),
) -> None:
    """FID, FVD, KID (+ paired perceptual distance) and VBench-style dimensions of generated videos."""
    _quiet()
    from .eval.suite import evaluate_folders, print_table, write_json

    try:
        result, notes = evaluate_folders(videos, reference, extractor=extractor, weights=weights,
                                         max_videos=max_videos, images=images, device=device)
    except ValueError as e:
        _fail(str(e))
    for note in notes:
        typer.echo(note, err=True)
    print_table(result, title=f"magicdistill evaluate ({result['extractor']})")
    if json_out:
        typer.echo(str(write_json(json_out, result)))


@app.command("convert-i2v")
def convert_i2v_cmd(
    model: Path = typer.Option(..., help="text-to-video diffusers pipeline folder (WanPipeline, HunyuanVideoPipeline)"),
    out: Path = typer.Option(..., help="new folder: the image-to-video pipeline (docs/REAL_MODELS.md)"),
    image_encoder_from: Path = typer.Option(None, help="Wan: a Wan 2.1 I2V folder whose CLIP image encoder is used "
                                                       "(adds zero-initialised image-token weights)"),
    text_encoder_from: Path = typer.Option(None, help="HunyuanVideo: a HunyuanVideo-I2V folder whose Llava text "
                                                      "encoder, tokenizer and image processor are used"),
) -> None:
    """Widen a T2V model to I2V (noise + first-frame latent + mask channels, new weights zero): equal to the T2V
    model until fine-tuned."""
    _quiet()
    from .models.convert import convert_to_i2v

    try:
        path = convert_to_i2v(model, out, image_encoder_from=image_encoder_from, text_encoder_from=text_encoder_from)
    except ValueError as e:
        _fail(str(e))
    typer.echo(str(path))


@app.command("export")
def export_cmd(
    model: Path = typer.Option(..., help="a generator folder distilled from a diffusers Wan/HunyuanVideo folder"),
    out: Path = typer.Option(None, help="new folder: a standard diffusers pipeline (DiffusionPipeline.from_pretrained)"),
    lora: Path = typer.Option(None, help="new .safetensors file: a LoRA for pipe.load_lora_weights on the base pipeline"),
    rank: int = typer.Option(32, help="with --lora: the LoRA rank (SVD of the generator's weight change)"),
) -> None:
    """Export a distilled generator for plain diffusers: a pipeline folder and/or a LoRA (docs/REAL_MODELS.md)."""
    _quiet()
    from .models.export import export_model

    try:
        lines = export_model(model, out, lora=lora, rank=rank)
    except ValueError as e:
        _fail(str(e))
    for line in lines:
        typer.echo(line)


def main() -> None:
    try:  # typer >= 0.29 vendors its own click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_exc

    from .train.process_end import exit_process

    try:
        rc = app(standalone_mode=False)  # returns the exit code of typer.Exit raised in a command
        exit_process(rc if isinstance(rc, int) else 0)
    except click_exc.NoArgsIsHelpError:
        sys.exit(0)
    except click_exc.UsageError as e:  # unknown option, bad type, missing value: one line, exit 2
        typer.secho(f"error: {e.format_message()}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except click_exc.ClickException as e:
        typer.secho(f"error: {e.format_message()}", err=True, fg=typer.colors.RED)
        sys.exit(e.exit_code or 1)
    except KeyboardInterrupt as e:  # a trainer says what it kept (train/run.py closes_runs)
        typer.secho(f"interrupted: {e}" if str(e) else "interrupted", err=True)
        sys.exit(130)
