"""The ``magicdistill`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil video diffusion transformers into few-step generators, and run them.")


@app.callback()
def _root() -> None:
    """Distil video diffusion transformers into few-step generators, and run them."""


def _quiet() -> None:
    # Offline by design: never reach for a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("torchao", "torch._dynamo", "diffusers", "transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg.splitlines()[0] if msg else 'failed'}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


# options shared by several commands
CACHE_DIR_OPTION = typer.Option(None, help="where the encoded dataset is cached [default: OUT/cache]")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="print the resolved config and exit")
RESUME_OPTION = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint")
DTYPE_OPTION = typer.Option("float32", help="float32 | bfloat16 | float16")


def _resolve_config(cls, config: Path | None, dry_run: bool, **flags):
    """The run's config: a JSON file (used instead of the flags) or the flags over the defaults.
    With --dry-run it is printed and None returned. Raises ValueError naming a bad field."""
    cfg = cls.from_json(config) if config else cls.strict_update(cls(), **flags)
    if dry_run:
        typer.echo(cfg.model_dump_json(indent=1))
        return None
    return cfg


@app.command("train-vae")
def train_vae_cmd(
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, vae/)"),
    steps: int = typer.Option(1000, help="optimizer steps"),
    batch_size: int = typer.Option(4),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    resume: bool = RESUME_OPTION,
) -> None:
    """Train the embedded default's causal video VAE on synthetic portrait clips."""
    _quiet()
    from .config import VAETrainConfig
    from .train.vae_trainer import train_vae

    try:
        cfg = VAETrainConfig.strict_update(VAETrainConfig(), steps=steps, batch_size=batch_size, seed=seed, device=device)
        train_vae(cfg, str(out), resume=resume)
    except ValueError as e:
        _fail(str(e))


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, samples/, teacher/)"),
    vae: Path = typer.Option(None, help="diffusers VAE folder [default: the shipped tiny VAE]"),
    task: str = typer.Option("i2v", help="i2v (Magic 1-For-1 TI2V) or t2v"),
    steps: int = typer.Option(4000),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(3e-4),
    num_clips: int = typer.Option(3000, help="synthetic training clips to encode"),
    init_from: Path = typer.Option(None, help="a T2V teacher folder to convert (widen to 2C+1 channels) and fine-tune"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
    config: Path = typer.Option(None, help="a JSON TeacherTrainConfig, used instead of the flags"),
    checkpoint_every: int = typer.Option(250),
    sample_every: int = typer.Option(1000),
    cache_dir: Path = CACHE_DIR_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    resume: bool = RESUME_OPTION,
) -> None:
    """Train a teacher (flow matching) on synthetic portrait videos."""
    _quiet()
    from .config import TeacherTrainConfig
    from .pipeline import SHIPPED_DIR

    try:
        cfg = _resolve_config(
            TeacherTrainConfig, config, dry_run, task=task, steps=steps, batch_size=batch_size, lr=lr,
            num_clips=num_clips, seed=seed, device=device, dtype=dtype, checkpoint_every=checkpoint_every,
            sample_every=sample_every, vae_dir=str(vae or SHIPPED_DIR / "vae"), init_from=str(init_from or ""))
        if cfg is None:
            return
        from .train.teacher import train_teacher

        train_teacher(cfg, str(out), resume=resume, cache_dir=str(cache_dir) if cache_dir else None)
    except ValueError as e:
        _fail(str(e))


@app.command("distill")
def distill_cmd(
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
    batch_size: int = typer.Option(4),
    num_clips: int = typer.Option(1000, help="synthetic training clips to encode"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
    config: Path = typer.Option(None, help="a JSON DistillConfig, used instead of the flags"),
    cache_dir: Path = CACHE_DIR_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    resume: bool = RESUME_OPTION,
) -> None:
    """Distil the teacher into a few-step generator (MagicDistillation W2S, DMD2, or the Euler baseline)."""
    _quiet()
    from .config import DistillConfig
    from .pipeline import SHIPPED_DIR

    try:
        cfg = _resolve_config(
            DistillConfig, config, dry_run, method=method, steps=steps, iters=iters, alpha_weak=alpha_weak,
            alpha_strong=alpha_strong, lambda_reg=lambda_reg, input_mode=input_mode, scores=scores, batch_size=batch_size,
            num_clips=num_clips, seed=seed, device=device, dtype=dtype)
        if cfg is None:
            return
        from .distill.trainer import distill

        distill(cfg, teacher or SHIPPED_DIR / "teacher", out, resume=resume, cache_dir=cache_dir)
    except ValueError as e:
        _fail(str(e))


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Option(..., help="what happens in the video"),
    out: Path = typer.Option(..., help="output .mp4 path"),
    image: Path = typer.Option(None, help="first frame (any size/aspect: resized to cover, centre-cropped)"),
    steps: int = typer.Option(None, help="sampling steps [default: the model's sampler; 50 for a teacher]"),
    guidance: float = typer.Option(None, help="CFG scale w in v_u + w (v_c - v_u); 1 = no guidance [default: 6, "
                                              "or the model's]"),
    shift: float = typer.Option(None, help="timestep shift s of the sigma schedule [default: 5]"),
    seed: int = typer.Option(0),
    frames: int = typer.Option(None, help="number of frames [default: the model's]"),
    fps: float = typer.Option(None, help="frames per second of the mp4 [default: the model's]"),
    model: Path = typer.Option(None, help="model folder [default: the shipped 4-step distilled generator]"),
    teacher: bool = typer.Option(False, "--teacher", help="sample the shipped teacher (50-step CFG) instead"),
    vae: Path = typer.Option(None, help="VAE folder [default: the model's]"),
    device: str = typer.Option("cpu"),
    dtype: str = DTYPE_OPTION,
) -> None:
    """Image(+text)-to-video: write a playable H.264 mp4 whose first frame is the image."""
    _quiet()
    import time

    from .generate import generate

    try:
        t0 = time.time()
        path = generate(prompt=prompt, out=out, image=image, steps=steps, guidance=guidance, shift=shift, seed=seed,
                        frames=frames, fps=fps, model=model, teacher=teacher, vae=vae, device=device,
                        dtype=dtype)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"done in {time.time() - t0:.1f} s", err=True)
    typer.echo(str(path))


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


def main() -> None:
    try:  # typer >= 0.29 vendors its own click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_exc

    try:
        rc = app(standalone_mode=False)  # returns the exit code of typer.Exit raised in a command
        sys.exit(rc if isinstance(rc, int) else 0)
    except click_exc.NoArgsIsHelpError:
        sys.exit(0)
    except click_exc.UsageError as e:  # unknown option, bad type, missing value: one line, exit 2
        typer.secho(f"error: {e.format_message()}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except click_exc.ClickException as e:
        typer.secho(f"error: {e.format_message()}", err=True, fg=typer.colors.RED)
        sys.exit(e.exit_code or 1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
