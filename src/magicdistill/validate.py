"""Checks at the boundary: what a user hands the CLI (flags, paths, model folders) is checked before any
model loads, and a mistake is a ValueError whose one line names the flag or file and what to do.

Each check is a small function so it can move into the typed record that owns its concept.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

MAX_SEED = 2 ** 63 - 1 - 10 ** 6  # torch generators take int64; clips and windows add small offsets to it
MAX_STEPS = 1000  # sampling steps: the teacher uses 50; 1000 already takes minutes a video on a CPU
MAX_FRAMES = 257  # frames in one window; longer videos: --seconds (a sliding window)
MAX_GUIDANCE = 100.0
MAX_SHIFT = 100.0
NAME_MAX = 255  # bytes in one file name on every common file system


def check_finite(flag: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False) -> None:
    """A float flag that must be a finite number in [lo, hi] (or (lo, hi])."""
    if value is None:
        return
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise ValueError(f"{flag} must be a finite number in {bracket}{lo:g}, {hi:g}], got {value}")


def check_seed(seed: int, flag: str = "--seed") -> None:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} must be in [0, {MAX_SEED}], got {seed}")


def check_prompt(prompt: str) -> None:
    """A prompt that is text: a byte string that is not UTF-8 reaches Python as lone surrogates."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("--prompt is not valid UTF-8 text; pass the prompt in UTF-8") from None


def check_device(device: str, flag: str = "--device") -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {device!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{flag} {device}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{flag} {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag} {device!r} is not supported; use cpu, cuda, cuda:N or mps")


def check_out_file(out: Path, flag: str = "--out", *, inputs: dict[str, Path | None] = {}) -> None:
    """``out`` can be written: not one of the inputs, its name within the file system's limit, its folder
    (or the first existing one above it) a writable folder."""
    for name, path in inputs.items():
        if path is not None and _same_file(out, Path(path)):
            raise ValueError(f"{flag} {out} is the {name} file; write to another path")
    if len(out.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise ValueError(f"{flag} file name is {len(out.name.encode('utf-8', 'surrogateescape'))} bytes; the file "
                         f"system allows {NAME_MAX}: choose a shorter name")
    check_writable_folder(out.parent, flag)


def check_writable_folder(folder: Path, flag: str = "--out") -> None:
    """``folder`` exists and is writable, or can be created (the first existing folder above it is)."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{flag}: {probe} is a file, not a folder; choose a path under a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: the folder {probe} is not writable; choose another location")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_config_file(path: Path | None, flag: str = "--config") -> None:
    if path is None:
        return
    if not path.exists():
        raise ValueError(f"{flag} {path} not found")
    if not path.is_file():
        raise ValueError(f"{flag} {path} is not a file (a JSON config is expected)")


def check_safetensors(file: Path) -> None:
    """``file`` is a whole safetensors file: an 8-byte header length, a JSON header, and every tensor's
    bytes present. Catches zero-length, truncated and garbage files before a loader fails obscurely."""
    file = Path(file)
    size = file.stat().st_size
    hint = "re-create or re-download it"
    try:
        with open(file, "rb") as f:
            if size < 8:
                raise ValueError("empty or shorter than its header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, 100 * 2 ** 20):
                raise ValueError("its header length is beyond the file: not safetensors, or truncated")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not a valid safetensors file ({e}); {hint}") from None
    if 8 + n + end > size:
        raise ValueError(f"{file} is truncated ({size} bytes, its header needs {8 + n + end}); {hint}")


def check_model_folder(folder: Path, flag: str = "--model") -> None:
    """A model folder's record and every weights file in it (and its own VAE folder) is whole."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder} is not a folder")
    if (folder / "dit.json").is_file():
        check_model_record(read_json_file(folder / "dit.json"), folder / "dit.json")
    for f in sorted(folder.rglob("*.safetensors")):
        check_safetensors(f)


def read_json_file(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (a JSON file is expected)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


_RECORD_INTS = ("height", "width", "num_frames", "text_dim", "max_text_tokens", "embed_tokens")
_SAMPLER_FLOATS = {"guidance": (0.0, MAX_GUIDANCE), "shift": (1e-6, MAX_SHIFT), "eta": (0.0, 1.0)}


def check_model_record(record: object, file: Path) -> None:
    """The types of a model folder's dit.json (what generate and distill read from it): a one-line error
    naming the file and the key instead of a TypeError deep inside sampling."""
    if not isinstance(record, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(record).__name__}")
    for key in _RECORD_INTS:
        v = record.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ValueError(f"{file}: {key} must be a positive integer, got {v!r}")
    tokens = record.get("image_tokens")  # 0: a text-to-video model
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0):
        raise ValueError(f"{file}: image_tokens must be a non-negative integer, got {tokens!r}")
    fps = record.get("fps")
    if fps is not None and (not _is_number(fps) or not 0 < fps <= 240):
        raise ValueError(f"{file}: fps must be a number in (0, 240], got {fps!r}")
    for key in ("vae", "task", "text_encoder", "prediction", "image_padding", "skip"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ValueError(f"{file}: {key} must be a string, got {record[key]!r}")
    sampler = record.get("sampler", {})
    if not isinstance(sampler, dict):
        raise ValueError(f"{file}: sampler must be an object, got {sampler!r}")
    steps = sampler.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS):
        raise ValueError(f"{file}: sampler.steps must be an integer in [1, {MAX_STEPS}], got {steps!r}")
    for key, (lo, hi) in _SAMPLER_FLOATS.items():
        v = sampler.get(key)
        if v is not None and (not _is_number(v) or not math.isfinite(v) or not lo <= v <= hi):
            raise ValueError(f"{file}: sampler.{key} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
