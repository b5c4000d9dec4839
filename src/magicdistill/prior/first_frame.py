"""Stage 0 for ``generate`` without ``--image``: pick the first frame from a T2I pipeline or by retrieval,
and save it beside the video (``OUT.prior.png`` + ``OUT.prior.json``) so the choice can be inspected."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_file, write_text_atomic
from ..pipeline import SHIPPED_DIR
from ..video import load_image
from .retrieval import ImageIndex
from .t2i import check_t2i_dir, load_t2i, text_to_image

SHIPPED_INDEX = SHIPPED_DIR / "prior"


@dataclass
class PriorPlan:
    """What ``--image/--t2i/--index`` resolved to, validated before any model is loaded."""

    t2i: Path | None = None
    index: ImageIndex | None = None
    index_dir: Path | None = None


@dataclass
class PriorChoice:
    pixels: np.ndarray  # (H, W, 3) uint8 at the video model's frame size
    record: dict  # what OUT.prior.json says


def plan_prior(*, image, t2i, index) -> PriorPlan | None:
    """None when the user gave --image; else the prior to use (the shipped index by default)."""
    if image is not None and (t2i is not None or index is not None):
        raise ValueError("give --image (your first frame) or a prior (--t2i DIR / --index DIR), not both")
    if t2i is not None and index is not None:
        raise ValueError("give either --t2i DIR (generate the first frame) or --index DIR (retrieve it), not both")
    if image is not None:
        return None
    if t2i is not None:
        return PriorPlan(t2i=check_t2i_dir(t2i))
    index_dir = Path(index) if index is not None else SHIPPED_INDEX
    return PriorPlan(index=ImageIndex.load(index_dir), index_dir=index_dir)


def choose_first_frame(plan: PriorPlan, prompt: str, height: int, width: int, *, seed: int = 0,
                       device: str = "cpu", dtype=None) -> PriorChoice:
    if plan.t2i is not None:
        pipe = load_t2i(plan.t2i, device=device, dtype=dtype or torch.float32)
        pixels = text_to_image(pipe, prompt, height, width, seed=seed)
        return PriorChoice(pixels, {"source": "t2i", "t2i": str(plan.t2i.resolve()), "seed": seed,
                                    "pipeline": type(pipe).__name__, "prompt": prompt})
    match = plan.index.search(prompt, k=1, device=device)[0]
    pixels = load_image(match.path, height, width)  # names the file if it vanished or is unreadable
    return PriorChoice(pixels, {"source": "retrieval", "index": str(plan.index_dir.resolve()),
                                "embedder": plan.index.embedder["kind"], "image": str(match.path.resolve()),
                                "caption": match.caption, "score": round(match.score, 6), "prompt": prompt})


def prior_paths(out_mp4: str | Path) -> tuple[Path, Path]:
    out = Path(out_mp4)
    return out.with_suffix(".prior.png"), out.with_suffix(".prior.json")


def save_prior(out_mp4: str | Path, choice: PriorChoice) -> tuple[Path, Path]:
    """Write OUT.prior.png and OUT.prior.json atomically (temporary name, then rename)."""
    from PIL import Image

    png, js = prior_paths(out_mp4)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(png) as tmp:
        Image.fromarray(choice.pixels).save(tmp, format="PNG")
    write_text_atomic(js, json.dumps(choice.record, indent=1))
    return png, js
