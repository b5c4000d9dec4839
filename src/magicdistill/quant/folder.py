"""Quantized model folders: what ``magicdistill quantize --out DIR`` writes and every loader reads.

A quantized folder is an ordinary model folder (``generate --model DIR`` works) except that
the weights are int8 (``quant/int8.py``), stored without pickle in safetensors:

    DIR/dit.json                   the source's record + ``quantization`` (+ the quality gate)
    DIR/transformer/config.json    the diffusers config (the architecture)
    DIR/dit.int8.safetensors       transformer + vision encoder, int8 layers flattened
    DIR/text_encoder/              the text encoder's config + tokenizer + model.int8.safetensors

``VideoDiT.load`` and ``TextEncoder`` see the record / the int8 file and load it (quant/int8_files.py). Loading
builds the architecture from its config, marks the same layers int8 (their names are in the
file's layout) and assigns the stored tensors: nothing is fetched, nothing is unpickled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..models.folder import is_real_folder, read_record, resolve_vae_dir, with_absolute_vae, write_record
from .int8 import SCHEME, quantize_int8
from .int8_files import DIT_WEIGHTS, TEXT_DIR, TEXT_WEIGHTS, save_int8

# weight files of a Hugging Face folder: not copied next to the int8 weights
_HF_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".onnx", ".msgpack", ".ckpt")


def quantize_pipeline(pipe, scheme: str = "int8") -> dict[str, list[str]]:
    """Quantize a loaded I2VPipeline in place (DiT incl. vision encoder, and the text encoder; the
    VAE stays: it runs once per video and its convolutions are small). The null prompt is
    re-encoded so that both CFG branches see the same (quantized) encoder."""
    if scheme != "int8":
        raise ValueError(f"unknown quantization {scheme!r}: the choice is int8")
    layers = {"dit": quantize_int8(pipe.dit), "text_encoder": quantize_int8(pipe.text_encoder.model)}
    pipe.null_text = pipe.text_encoder([""])
    return layers


def save_quantized_dit(dit, out_dir: Path, meta: dict) -> None:
    """The DiT part of a quantized folder: config, int8 weights, and ``meta`` as dit.json (it must
    hold the ``quantization`` record that sends ``VideoDiT.load`` to its int8 loader)."""
    assert meta.get("quantization"), "a quantized folder records its quantization"
    out_dir.mkdir(parents=True, exist_ok=True)
    dit.transformer.save_config(str(out_dir / "transformer"))
    save_int8(dit, out_dir / DIT_WEIGHTS)
    from ..models.patch_embed import embed_tokens

    write_record(out_dir / "dit.json",
                 {**meta, "has_vision": dit.vision is not None, "embed_tokens": embed_tokens(dit.transformer.x_embedder.proj)})


def save_quantized(pipe, out_dir: Path, *, source_dir: Path, vae_dir: Path, text_encoder_dir: Path,
                   layers: dict[str, list[str]]) -> None:
    """Write a quantized pipeline's DiT + text encoder as a model folder (``out_dir`` is new)."""
    import torchao

    out_dir.mkdir(parents=True)
    (out_dir / TEXT_DIR).mkdir()
    for f in Path(text_encoder_dir).iterdir():  # config + tokenizer files, not the fp weights
        if f.is_file() and not f.name.endswith(_HF_WEIGHT_SUFFIXES):
            shutil.copy2(f, out_dir / TEXT_DIR / f.name)
    save_int8(pipe.text_encoder.model, out_dir / TEXT_DIR / TEXT_WEIGHTS)
    meta = {k: v for k, v in getattr(pipe.dit, "meta", {}).items() if k not in ("quantization", "quality_gate")}
    meta = with_absolute_vae(meta, vae_dir)
    meta.update(
        text_encoder=TEXT_DIR,
        quantization={"scheme": SCHEME, "library": f"torchao {torchao.__version__}", "weights": DIT_WEIGHTS,
                      "granularity": "per output row, symmetric", "activations": "compute dtype",
                      "source": str(Path(source_dir).resolve()),
                      "dit_layers": len(layers["dit"]), "text_encoder_layers": len(layers["text_encoder"])})
    save_quantized_dit(pipe.dit, out_dir, meta)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is a file: give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty: give a new folder (or delete it)")


def quantize_folder(model_dir: str | Path, out: str | Path, *, vae_dir: str | Path | None = None,
                    text_encoder: str | Path | None = None, check: bool = True, clips: int = 4):
    """``magicdistill quantize``: load, quantize, write ``out`` atomically (a temporary sibling
    renamed at the end, so a failure leaves nothing), and with ``check`` run the quality gate on
    the written folder (which also proves the round trip). -> (out, GateResult | None)."""
    from ..models.text import default_text_encoder_path
    from ..pipeline import I2VPipeline
    from .gate import quality_gate

    model_dir, out = Path(model_dir), Path(out)
    check_out_dir(out)
    if is_real_folder(model_dir):  # Wan / HunyuanVideo: int8 transformer; VAE and the folder's own encoders kept
        from ..models.families.derived import quantize_real

        if vae_dir or text_encoder:
            raise ValueError(f"--vae / --text-encoder do not apply to {model_dir}: it keeps its own")
        if out.is_dir():
            out.rmdir()  # checked empty above
        return quantize_real(model_dir, out), None
    if not (model_dir / "transformer" / "config.json").is_file():
        raise ValueError(f"no model at {model_dir} (expected transformer/config.json)")
    meta = read_record(model_dir)
    if meta.get("quantization"):
        raise ValueError(f"{model_dir} is already quantized ({meta['quantization']['scheme']})")
    vae_dir = resolve_vae_dir(model_dir, vae_dir)
    text_dir = Path(text_encoder) if text_encoder else (model_dir / meta["text_encoder"] if meta.get("text_encoder")
                                                        else default_text_encoder_path())
    reference = I2VPipeline.from_dir(model_dir, vae_dir=vae_dir, text_encoder=str(text_dir))
    quantized = I2VPipeline.from_dir(model_dir, vae_dir=vae_dir, text_encoder=str(text_dir))
    layers = quantize_pipeline(quantized)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_quantized(quantized, tmp, source_dir=model_dir, vae_dir=vae_dir, text_encoder_dir=text_dir, layers=layers)
        gate = None
        if check:
            gate = quality_gate(reference, I2VPipeline.from_dir(tmp), clips=clips)
            write_record(tmp / "dit.json", {**read_record(tmp), "quality_gate": gate.as_dict()})
        if out.is_dir():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, gate
