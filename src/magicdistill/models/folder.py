"""The model folder: the one module that reads a folder's record and resolves its component paths.

Three layouts are read:

1. **magicdistill tiny folders** (the embedded default and what `train` / `distill` write for it):
   ``dit.json`` (the record: conditioning, clip format, sampler), ``transformer/`` (diffusers format),
   ``vision.safetensors``; the VAE is a ``vae`` folder beside it (how models are shipped: "../vae")
   or the path recorded in dit.json (relative to the folder, or absolute).
2. **standard diffusers pipeline folders** (``model_index.json`` + one subfolder per component, e.g.
   Wan-AI/Wan2.1-T2V-1.3B-Diffusers, hunyuanvideo-community/HunyuanVideo): no hand-written file; the
   family comes from the pipeline class, the sampler's shift from the scheduler's config, the rest
   from the pipeline's own defaults.
3. **folders magicdistill writes for a real family** (a distilled generator, a cast or quantized copy,
   a converted I2V model): only the changed components in diffusers format (``transformer/``,
   optionally ``transformer_2/``, ...) plus ``magicdistill.json``::

       {"family": "wan" | "hunyuan" | "hunyuan15",
        "base": "<path of the source diffusers pipeline folder, RELATIVE to this folder>",
        "pipeline": "<the base's pipeline class, e.g. WanImageToVideoPipeline>",      (optional)
        "sampler": {"kind": "euler", "steps": 4, "shift": 5.0, "guidance": 1.0, "eta": 0.0},
        "video": {"height": 480, "width": 832, "frames": 81, "fps": 16},
        ...}                                                    (other keys are kept, e.g. "method")

   A component not present in the folder is read from ``base``. Readers use
   ``read_model_folder(path).component_path(name)``; nothing else joins component paths.

Records are JSON without NaN/Infinity (``write_record``); a non-finite number in a record is a
one-line ValueError naming the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RECORD = "magicdistill.json"
TINY_RECORD = "dit.json"
INDEX = "model_index.json"

# pipeline class -> (family, task); the families' modules (models/families/) own everything else
PIPELINES: dict[str, tuple[str, str]] = {
    "WanPipeline": ("wan", "t2v"),
    "WanImageToVideoPipeline": ("wan", "i2v"),
    "HunyuanVideoPipeline": ("hunyuan", "t2v"),
    "HunyuanVideoImageToVideoPipeline": ("hunyuan", "i2v"),
    "HunyuanVideo15Pipeline": ("hunyuan15", "t2v"),
    "HunyuanVideo15ImageToVideoPipeline": ("hunyuan15", "i2v"),
}
# what each pipeline does when called without arguments (diffusers 0.42's __call__ defaults)
PIPELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "WanPipeline": {"guidance": 5.0, "video": (480, 832, 81, 16.0)},
    "WanImageToVideoPipeline": {"guidance": 5.0, "video": (480, 832, 81, 16.0)},
    "HunyuanVideoPipeline": {"guidance": 6.0, "video": (720, 1280, 129, 15.0)},
    "HunyuanVideoImageToVideoPipeline": {"guidance": 1.0, "video": (720, 1280, 129, 15.0)},
    # HunyuanVideo-1.5: the 480p size (target_size 640, 16:9); its guidance is the folder's guider (_guider_scale)
    "HunyuanVideo15Pipeline": {"guidance": 6.0, "video": (480, 848, 121, 24.0)},
    "HunyuanVideo15ImageToVideoPipeline": {"guidance": 6.0, "video": (480, 848, 121, 24.0)},
}
TEACHER_SAMPLER = {"kind": "euler", "steps": 50, "guidance": 6.0, "shift": 5.0, "eta": 0.0}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class SamplerRecord(_Record):
    kind: Literal["euler", "consistency"] = "euler"
    steps: int = Field(50, ge=1)
    guidance: float = Field(6.0, ge=0, allow_inf_nan=False)
    shift: float = Field(5.0, gt=0, allow_inf_nan=False)
    eta: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    # real families: "scheduler" = the sigmas of the folder's scheduler (what its diffusers pipeline
    # steps through); "shifted_linear" = flow.sigma_schedule(steps, shift), what a distilled generator
    # was trained at
    schedule: Literal["scheduler", "shifted_linear"] = "scheduler"


class VideoRecord(_Record):
    height: int = Field(ge=8)
    width: int = Field(ge=8)
    frames: int = Field(ge=1)
    fps: float = Field(gt=0, allow_inf_nan=False)


class ModelFolder(_Record):
    """A model folder as read: its layout, family, sampler and clip defaults, and where each component is."""

    path: Path
    layout: Literal["tiny", "diffusers", "derived"]
    family: Literal["tiny", "wan", "hunyuan", "hunyuan15"]
    task: Literal["t2v", "i2v"]
    pipeline: Optional[str] = None  # the diffusers pipeline class (real families)
    base: Optional[Path] = None  # derived folders: the source pipeline folder (resolved)
    sampler: SamplerRecord
    video: VideoRecord
    record: dict[str, Any] = {}  # the raw record (dit.json / magicdistill.json); {} for a plain diffusers folder
    components: dict[str, tuple[str, str]] = {}  # name -> (library, class) from the base's model_index.json

    def component_path(self, name: str) -> Path:
        """Where component ``name`` is: this folder's own copy if it has one, else the base pipeline's.
        For tiny folders: "transformer", "vae" (beside the folder or recorded) and "text_encoder" (a
        quantized copy's own; else the default MiniLM, which is not in any folder)."""
        if self.layout == "tiny":
            return _tiny_component(self, name)
        own = self.path / name
        if own.is_dir():
            return own
        if self.base is not None and (self.base / name).is_dir():
            return self.base / name
        raise ValueError(f"{self.path}: no component {name!r} (expected the folder {own}"
                         + (f" or {self.base / name}" if self.base is not None else "") + ")")

    def has_component(self, name: str) -> bool:
        try:
            self.component_path(name)
            return True
        except ValueError:
            return False

    @property
    def is_i2v(self) -> bool:
        return self.task == "i2v"


# --- JSON ------------------------------------------------------------------------------------------
def _reject_constant(token: str):
    raise ValueError(token)


def read_json(file: str | Path) -> dict:
    """A JSON object from ``file``; NaN / Infinity (which Python's json would accept) are a ValueError."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(), parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e.msg} at line {e.lineno}): rewrite or delete it") from None
    except ValueError as e:
        raise ValueError(f"{file} holds a non-finite number ({e}): records must hold finite numbers") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object")
    return data


def write_record(file: str | Path, data: dict) -> None:
    """Write ``data`` as valid JSON (a NaN or inf raises instead of writing what no JSON parser reads)."""
    try:
        text = json.dumps(data, indent=1, allow_nan=False, default=str)
    except ValueError:
        raise ValueError(f"refusing to write {file}: the record holds a non-finite number") from None
    Path(file).write_text(text)


def _check_finite(file: Path, data: Any, where: str = "") -> None:
    if isinstance(data, float) and not math.isfinite(data):
        raise ValueError(f"{file}: {where or 'a value'} is {data}: records must hold finite numbers")
    if isinstance(data, dict):
        for k, v in data.items():
            _check_finite(file, v, f"{where}.{k}" if where else str(k))
    if isinstance(data, list):
        for i, v in enumerate(data):
            _check_finite(file, v, f"{where}[{i}]")


# --- tiny (dit.json) records ------------------------------------------------------------------------
def read_record(model_dir: str | Path) -> dict:
    """A folder's dit.json as a dict ({} when there is none)."""
    from ..validate import check_model_record

    f = Path(model_dir) / TINY_RECORD
    if not f.is_file():
        return {}
    record = read_json(f)
    check_model_record(record, f)  # types and ranges: a one-line error naming the file, not a TypeError later
    return record


def model_sampler(meta: dict) -> dict:
    """How a tiny model folder samples by default: its dit.json ``sampler`` over the teacher defaults
    (50 Euler ODE steps, CFG 6, shift 5). A shipped teacher records the guidance (and eta) chosen for it."""
    return {**TEACHER_SAMPLER, **meta.get("sampler", {})}


def resolve_vae_dir(model_dir: str | Path, vae_dir: str | Path | None = None) -> Path:
    """--vae if given; else a ``vae`` folder beside the model folder (how models are shipped);
    else the VAE path recorded when the model was trained (relative to the folder, or absolute)."""
    if vae_dir:
        return Path(vae_dir)
    sibling = (Path(model_dir) / ".." / "vae").resolve()
    if (sibling / "config.json").is_file():
        return sibling
    recorded = read_record(model_dir).get("vae")
    if recorded:
        return (Path(model_dir) / recorded).resolve()
    raise ValueError(f"no VAE beside {model_dir} and none recorded in its dit.json: pass --vae DIR")


def with_absolute_vae(meta: dict, vae_dir: str | Path) -> dict:
    """A model record for a *new* folder: ``meta`` with its VAE as an absolute path. A recorded path is
    relative to the folder it was written for (the shipped models' "../vae"), so a folder written anywhere
    else (a distilled generator, a cast or quantized copy) must not inherit it."""
    return {**meta, "vae": str(Path(vae_dir).resolve())}


def _tiny_component(folder: ModelFolder, name: str) -> Path:
    if name == "transformer":
        return folder.path / "transformer"
    if name == "vae":
        return resolve_vae_dir(folder.path)
    if name == "text_encoder" and folder.record.get("text_encoder"):
        return folder.path / folder.record["text_encoder"]
    raise ValueError(f"{folder.path}: a magicdistill tiny folder has no component {name!r} of its own")


# --- reading any folder ------------------------------------------------------------------------------
def _validated(cls, file: Path, data: dict):
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ValueError(f"{file}: {loc}: {err['msg']}") from None


def _read_index(pipeline_dir: Path) -> tuple[str, dict[str, tuple[str, str]], dict]:
    index = read_json(pipeline_dir / INDEX)
    cls = index.get("_class_name")
    if cls not in PIPELINES:
        raise ValueError(f"{pipeline_dir / INDEX}: pipeline {cls!r} is not supported "
                         f"(supported: {', '.join(PIPELINES)})")
    comps = {k: (v[0], v[1]) for k, v in index.items()
             if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None}
    return cls, comps, index


def _scheduler_shift(pipeline_dir: Path) -> float:
    f = pipeline_dir / "scheduler" / "scheduler_config.json"
    if not f.is_file():
        raise ValueError(f"{pipeline_dir}: no scheduler/scheduler_config.json (a diffusers pipeline folder has one)")
    cfg = read_json(f)
    _check_finite(f, cfg)
    shift = cfg.get("shift", cfg.get("flow_shift", 1.0))  # FlowMatchEuler: shift; UniPC/DPM++ flow: flow_shift
    return float(shift if shift is not None else 1.0)


def _guider_scale(pipeline_dir: Path, default: float) -> float:
    """A pipeline whose guidance is a component (HunyuanVideo-1.5's ``guider``): its guidance_scale."""
    f = pipeline_dir / "guider" / "guider_config.json"
    if not f.is_file():
        return default
    cfg = read_json(f)
    _check_finite(f, cfg)
    return float(cfg.get("guidance_scale", default))


def is_real_folder(path: str | Path) -> bool:
    """A diffusers pipeline folder or one magicdistill derived from it (not the tiny default's layout)."""
    return (Path(path) / RECORD).is_file() or (Path(path) / INDEX).is_file()


def read_model_folder(path: str | Path) -> ModelFolder:
    """The record of the model folder ``path`` (any of the three layouts); a one-line ValueError when
    ``path`` is none of them or its record is malformed."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no model folder at {path}")
    if (path / RECORD).is_file():
        return _read_derived(path)
    if (path / INDEX).is_file():
        return _read_diffusers(path)
    if (path / "transformer" / "config.json").is_file():
        return _read_tiny(path)
    raise ValueError(f"no model at {path}: expected a diffusers pipeline folder (model_index.json), "
                     f"a magicdistill folder ({RECORD}) or a tiny one (transformer/config.json + {TINY_RECORD})")


def _read_tiny(path: Path) -> ModelFolder:
    meta = read_record(path)
    f = path / TINY_RECORD
    _check_finite(f, meta)
    sampler = _validated(SamplerRecord, f, model_sampler(meta))
    video = _validated(VideoRecord, f, {"height": meta.get("height", 64), "width": meta.get("width", 64),
                                        "frames": meta.get("num_frames", 17), "fps": meta.get("fps", 8.0)})
    return ModelFolder(path=path, layout="tiny", family="tiny", task="t2v" if meta.get("task") == "t2v" else "i2v",
                       sampler=sampler, video=video, record=meta)


def _read_diffusers(path: Path, record: dict | None = None, record_file: Path | None = None,
                    own: Path | None = None) -> ModelFolder:
    cls, comps, _ = _read_index(path)
    family, task = PIPELINES[cls]
    defaults = PIPELINE_DEFAULTS[cls]
    h, w, n, fps = defaults["video"]
    sampler = {"kind": "euler", "steps": 50, "guidance": _guider_scale(path, defaults["guidance"]),
               "shift": _scheduler_shift(path),
               "eta": 0.0}
    video = {"height": h, "width": w, "frames": n, "fps": fps}
    rec = record or {}
    f = record_file or path / INDEX
    sampler.update(rec.get("sampler", {}))
    video.update(rec.get("video", {}))
    return ModelFolder(path=own or path, layout="derived" if own else "diffusers", family=family, task=task,
                       pipeline=cls, base=path if own else None, sampler=_validated(SamplerRecord, f, sampler),
                       video=_validated(VideoRecord, f, video), record=rec, components=comps)


def _read_derived(path: Path) -> ModelFolder:
    f = path / RECORD
    rec = read_json(f)
    _check_finite(f, rec)
    base = rec.get("base")
    if not isinstance(base, str) or not base:
        raise ValueError(f"{f}: no 'base' (the relative path of the source diffusers pipeline folder)")
    base_dir = (path / base).resolve() if not os.path.isabs(base) else Path(base)
    if not (base_dir / INDEX).is_file():
        raise ValueError(f"{f}: its base {base_dir} is not a diffusers pipeline folder (no {INDEX}); "
                         f"was the folder moved without its base?")
    folder = _read_diffusers(base_dir, rec, f, own=path)
    if rec.get("family") not in (None, folder.family):
        raise ValueError(f"{f}: family {rec['family']!r} does not match its base's pipeline {folder.pipeline}")
    return folder


def relative_base(out_dir: str | Path, base_dir: str | Path) -> str:
    """``base_dir`` relative to ``out_dir`` (what a derived folder records, so both can move together)."""
    return os.path.relpath(Path(base_dir).resolve(), Path(out_dir).resolve())


def write_derived_record(out_dir: str | Path, source: ModelFolder, **fields) -> Path:
    """``magicdistill.json`` for a folder derived from ``source`` (a diffusers folder or a derived one):
    its base relative to ``out_dir``, the source's sampler and video unless ``fields`` override them."""
    base = source.base if source.layout == "derived" else source.path
    rec = {k: v for k, v in source.record.items() if k not in ("base",)}
    rec.update(family=source.family, pipeline=source.pipeline, base=relative_base(out_dir, base),
               sampler=source.sampler.model_dump(), video=source.video.model_dump())
    rec.update(fields)
    file = Path(out_dir) / RECORD
    write_record(file, rec)
    return file
