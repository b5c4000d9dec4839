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
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@app.command("train-vae")
def train_vae_cmd(
    out: Path = typer.Option(..., help="run folder (config, metrics, checkpoint, vae/)"),
    steps: int = typer.Option(1200, help="optimizer steps"),
    batch_size: int = typer.Option(4),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoint"),
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
