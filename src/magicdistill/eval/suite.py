"""The whole evaluation in one call: feature distances to a reference set plus the VBench-style dimensions.

``evaluate_videos`` is what ``magicdistill evaluate`` and ``magicdistill bench`` both run. Features
are extracted once per set and shared by FID, KID, FVD and the feature-based dimensions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import write_text_atomic
from . import vbench
from .features import FeatureExtractor, perceptual_features
from .frechet import frechet_from_features, kid, perceptual_distance

KEYS = ("fid", "fvd", "kid", *vbench.DIMENSIONS, "average")
TEACHER_KEYS = ("fvd_teacher", "fid_teacher")  # with ``teacher=``: the same distances to the teacher's samples


def _check_sets(videos: torch.Tensor, reference: torch.Tensor) -> None:
    for name, v in (("videos", videos), ("reference", reference)):
        if v.ndim != 5 or v.shape[1] != 3:
            raise ValueError(f"{name} must be (N, 3, T, H, W) in [-1, 1], got {tuple(v.shape)}")
        if v.shape[0] < 1:
            raise ValueError(f"{name} holds no videos")
    if videos.shape[2:] != reference.shape[2:]:
        raise ValueError(f"videos {tuple(videos.shape[2:])} and reference {tuple(reference.shape[2:])} differ in "
                         "(T, H, W); bring them to one size and length first (magicdistill evaluate does)")
    if videos.shape[2] < 3:
        raise ValueError(f"videos need at least 3 frames (motion smoothness interpolates), got {videos.shape[2]}")


@torch.no_grad()
def evaluate_videos(videos: torch.Tensor, reference: torch.Tensor, *, extractor: FeatureExtractor | None = None,
                    cond_images: torch.Tensor | None = None, teacher: torch.Tensor | None = None) -> dict:
    """Metrics of generated ``videos`` against ``reference`` videos, both (N, 3, T, H, W) in [-1, 1].

    Returns fid (per-frame features), fvd (per-clip features; None with fewer than 2 videos in a
    set: a covariance needs 2), kid (per-frame), the six VBench-style dimensions and their average
    (of ``videos`` only, except imaging_quality which is relative to the reference), plus
    ``perceptual`` (paired frame-by-frame distance) when both sets hold the same number of videos,
    and the extractor's name. ``cond_images`` (N, 3, H, W): the conditioning images for
    i2v_subject [default: frame 0 of each video]. ``extractor`` [default: the shipped probe].
    ``teacher``: the teacher's samples of the same clips (N', 3, T, H, W); adds fvd_teacher and fid_teacher, the
    distances of ``videos`` to them (how far a distilled generator is from what it was trained to match)."""
    _check_sets(videos, reference)
    if teacher is not None:
        _check_sets(videos, teacher)
    if cond_images is not None and (cond_images.ndim != 4 or cond_images.shape[0] != videos.shape[0]):
        raise ValueError(f"cond_images must be (N, 3, H, W) with N = {videos.shape[0]} videos, "
                         f"got {tuple(cond_images.shape)}")
    if extractor is None:
        from .probe import load_probe

        extractor = load_probe()
    videos, reference = videos.float(), reference.float()
    n, t = videos.shape[0], videos.shape[2]
    # 1. features, once per set
    fv, fr = extractor.frame_features(videos), extractor.frame_features(reference)
    # 2. distribution distances
    out: dict = {"fid": frechet_from_features(fv, fr), "kid": kid(fv, fr)}
    cv = extractor.clip_features(videos) if n >= 2 else None
    out["fvd"] = frechet_from_features(cv, extractor.clip_features(reference)) if reference.shape[0] >= 2 and n >= 2 else None
    if teacher is not None:  # the videos' features are reused: only the teacher's are extracted
        teacher = teacher.float()
        out["fid_teacher"] = frechet_from_features(fv, extractor.frame_features(teacher))
        out["fvd_teacher"] = (frechet_from_features(cv, extractor.clip_features(teacher))
                              if teacher.shape[0] >= 2 and n >= 2 else None)
    # 3. VBench-style dimensions
    grid = fv.reshape(n, t, -1)
    cond = grid[:, 0] if cond_images is None else vbench.image_features(cond_images.float(), extractor)
    out["i2v_subject"] = vbench.i2v_subject_from_features(grid, cond)
    out["subject_consistency"] = vbench.subject_consistency_from_features(grid)
    out["motion_smoothness"] = vbench.motion_smoothness(videos)
    out["dynamic_degree"] = vbench.dynamic_degree(videos)
    out["motion_ratio"] = vbench.motion_ratio(videos, reference)
    out["temporal_flickering"] = vbench.temporal_flickering(videos)
    out["imaging_quality"] = vbench.imaging_quality(videos, reference)
    out["average"] = vbench.average(out)
    # 4. paired distance when the sets correspond one to one
    if reference.shape[0] == n:
        own = hasattr(extractor, "perceptual_features")  # else the frame features already computed
        out["perceptual"] = perceptual_distance(perceptual_features(extractor, videos) if own else fv,
                                                perceptual_features(extractor, reference) if own else fr)
    out["extractor"] = extractor.name
    return {k: out[k] for k in (*KEYS, "perceptual", "motion_ratio", *TEACHER_KEYS, "extractor") if k in out}


LABELS = {"fid": "FID (per frame) ↓", "fvd": "FVD (per clip) ↓", "kid": "KID (per frame) ↓",
          "perceptual": "perceptual distance (paired) ↓", "fvd_teacher": "FVD vs teacher ↓",
          "fid_teacher": "FID vs teacher ↓", "i2v_subject": "i2v subject ↑",
          "subject_consistency": "subject consistency ↑", "motion_smoothness": "motion smoothness ↑",
          "dynamic_degree": "dynamic degree ↑ (more motion)", "motion_ratio": "motion / reference's (1 = same)",
          "temporal_flickering": "temporal flickering ↑ (less)",
          "imaging_quality": "imaging quality (proxy) ↑", "average": "average of the six dimensions ↑"}


def table_rows(result: dict) -> list[tuple[str, str]]:
    """(label, value) rows in a fixed order; None (not computable) shows as 'n/a'."""
    order = ("fid", "fvd", "kid", "perceptual", *vbench.DIMENSIONS, "average", "motion_ratio", *TEACHER_KEYS)
    return [(LABELS[k], "n/a" if result[k] is None else f"{result[k]:.4f}") for k in order if k in result]


def print_table(result: dict, title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in table_rows(result):
        table.add_row(label, value)
    Console().print(table)


def write_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` as JSON atomically (temporary name, then rename)."""
    return write_text_atomic(path, json.dumps(result, indent=1) + "\n")


def evaluate_folders(videos: str | Path, reference: str | Path | None = None, *, extractor: str = "probe",
                     weights: str | Path | None = None, max_videos: int | None = None, images: str | Path | None = None,
                     device: str = "cpu") -> tuple[dict, list[str]]:
    """``magicdistill evaluate``: read both folders (eval/folders.py format rule), run ``evaluate_videos``.
    ``images``: a folder of conditioning images paired with the videos by name order [default: frame 0
    of each video, with which i2v_subject reduces to subject_consistency]. Returns the result (with
    the notes under ``notes``) and the notes."""
    from .features import get_extractor
    from .folders import load_sets, read_images

    if max_videos is not None and max_videos < 1:
        raise ValueError("--max-videos must be >= 1")
    v, r, notes = load_sets(videos, reference, max_videos)  # folder mistakes fail before any model loads
    cond = read_images(images, v.shape[0], v.shape[3], v.shape[4]) if images is not None else None
    if cond is None:
        notes.append("no --images: frame 0 of each video is its conditioning image (i2v_subject = subject_consistency)")
    ext = get_extractor(extractor, weights, device=device)
    result = evaluate_videos(v, r, extractor=ext, cond_images=cond)
    if result["fvd"] is None:
        notes.append("FVD needs at least 2 videos per set; reported as null")
    return {**result, "num_videos": v.shape[0], "num_reference": r.shape[0], "notes": notes}, notes
