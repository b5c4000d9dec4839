"""What every real model family shares: loading a diffusers pipeline folder's components through the
folder record, the transformer in the project's convention (``RealDiT``), and sampling (``RealPipeline``).

A family module (wan.py, hunyuan.py) supplies a ``Family``: how it encodes prompts and the first frame
(with the diffusers pipeline's own methods, so our conditions are its conditions), which inputs its
transformer takes, its scheduler's sigmas, and whether guidance is a CFG pair or an embedded scalar.
The sampler is the project's (sampling.euler_sample: Euler on the scheduler's sigmas, CFG batched).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..discriminator import untapped
from ..dit import Condition
from ..folder import ModelFolder, read_json
from ..parallelize import any_process, is_sharded
from ..text import TextEmbedding
from ..vae import VideoVAE

# components a family's sampling needs; the others (tokenizers, image processors) load on the CPU as-is
WEIGHTED = ("transformer", "transformer_2", "vae", "text_encoder", "text_encoder_2", "image_encoder")


def load_component(folder: ModelFolder, name: str, *, dtype: torch.dtype, device="cpu"):
    """Component ``name`` of ``folder`` with the class its model_index.json names; a one-line ValueError
    (naming the folder) when it is missing, names another class, or its weights do not load."""
    if name not in folder.components:
        raise ValueError(f"{folder.path}: its model_index.json has no component {name!r}")
    lib, cls_name = folder.components[name]
    path = folder.component_path(name)
    for cfg_name in ("config.json", "scheduler_config.json", "preprocessor_config.json"):
        if (path / cfg_name).is_file():
            declared = read_json(path / cfg_name).get("_class_name")
            if declared is not None and declared != cls_name and not cls_name.endswith("Tokenizer"):
                raise ValueError(f"{path / cfg_name} names class {declared!r} but model_index.json says {cls_name!r}")
            break
    try:
        cls = getattr(importlib.import_module(lib), cls_name)
    except (ImportError, AttributeError):
        raise ValueError(f"{folder.path}: component {name} needs {lib}.{cls_name}, which is not installed") from None
    kwargs: dict[str, Any] = {}
    if name in WEIGHTED:
        kwargs["torch_dtype"] = dtype
    try:
        obj = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 -- a broken folder: diffusers/transformers raise many kinds
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load {name} ({cls_name}) from {path}: {msg[:300]}") from None
    if isinstance(obj, nn.Module):
        obj = obj.to(device).eval().requires_grad_(False)
    return obj


class RealDiT(nn.Module):
    """A diffusers video transformer (Wan 2.2 A14B: two experts) called like ``VideoDiT``:
    ``forward(x_t, sigma, cond) -> v = eps - x0`` with sigma in [0, 1] (timestep = 1000 sigma, as the
    flow-matching schedulers pass it). The family supplies the transformer's other inputs."""

    prediction = "v"

    def __init__(self, family: "Family", transformer: nn.Module, transformer_2: nn.Module | None = None, *,
                 boundary: float | None = None, record: dict | None = None):
        super().__init__()
        self.family = family
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary = boundary  # sigma at and above which `transformer` runs (A14B's high-noise expert)
        self.meta = dict(record or {})  # {"sampler": ...}: what with_teacher_guidance reads
        self.embedded_guidance: float | None = None  # a guidance-embedded teacher's scale, when no guidance is passed
        self.vision = None  # the tiny default's own vision encoder; a real family's image tokens come from its folder
        self.folder: ModelFolder | None = None  # where it was loaded from: what a derived folder records as base
        self.image_conditioner = None  # I2V training: first frames -> the family's extra inputs (wan.py)

    @property
    def is_i2v(self) -> bool:
        return self.family.is_i2v(self.transformer)

    @property
    def guidance_embeds(self) -> bool:
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    @property
    def spatial_patch(self) -> int:
        """The transformer's spatial patch size (HunyuanVideo, Wan: 2; HunyuanVideo-1.5: 1)."""
        p = self.transformer.config.patch_size
        return int(p[-1] if isinstance(p, (tuple, list)) else p)

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.out_channels

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def condition(self, text: TextEmbedding, image=None, image_latent=None, drop_image=None, image_tokens=None,
                  extra: dict | None = None) -> Condition:
        """``extra``: the family's own inputs; for an I2V model without them, its ``image_conditioner`` makes
        them from the first frames ``image`` (B, 3, H, W) in [-1, 1] (training: distill/real_teacher.py)."""
        if self.is_i2v and extra is None and self.family.i2v_extra:
            if self.image_conditioner is None:
                raise ValueError(f"training on an image-to-video {self.family.name} teacher is not supported yet: "
                                 f"use its text-to-video folder")
            if image is None:
                raise ValueError("an image-to-video model needs the first frame")
            extra = self.image_conditioner(image)
        return Condition(text.tokens.to(self.dtype), text.mask, text.pooled.to(self.dtype), image_latent, extra)

    def conditions(self, text: TextEmbedding, null_text: TextEmbedding, image=None, image_latent=None):
        """(cond, uncond); a guidance-embedded model has no CFG pair (uncond None): its scale is an input.
        Both branches share the first frame's inputs (computed once)."""
        cond = self.condition(text, image, image_latent)
        uncond = None if self.guidance_embeds else self.condition(null_text, image, image_latent, extra=cond.extra)
        return cond, uncond

    def save(self, path: str | Path, **fields) -> None:
        """A derived model folder (models/folder.py): ``transformer/`` (+ ``transformer_2/``) in diffusers
        format and magicdistill.json pointing at the source pipeline folder for everything else.
        ``fields``: the record's sampler, method, ...; a tiny record's clip keys become its ``video``."""
        from ..folder import write_derived_record

        if self.folder is None:
            raise ValueError("this model was not loaded from a folder: nothing to record as its base")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(str(path / "transformer"), safe_serialization=True)
        if self.transformer_2 is not None:
            self.transformer_2.save_pretrained(str(path / "transformer_2"), safe_serialization=True)
        clip = {k: fields.pop(k) for k in ("height", "width", "num_frames", "fps") if k in fields}
        if clip:
            fields["video"] = {"height": clip["height"], "width": clip["width"], "frames": clip["num_frames"],
                               "fps": clip["fps"]}
        fields = {k: v for k, v in fields.items() if k not in ("vae", "text_encoder")}
        write_derived_record(path, self.folder, weights_dtype=str(self.dtype).removeprefix("torch."), **fields)

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Condition, guidance: torch.Tensor | None = None,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        """Each row runs the expert of its own sigma (training batches mix sigmas on both sides of A14B's
        boundary; a sampling step's rows share one)."""
        sigma = sigma.to(x_t.device, torch.float32).expand(x_t.shape[0])
        if guidance is None and self.guidance_embeds:
            if self.embedded_guidance is None:
                raise ValueError("this model is guidance-distilled: pass the guidance scale")
            guidance = torch.tensor([self.embedded_guidance])
        if self.transformer_2 is None or self.boundary is None:
            return self._run(self.transformer, x_t, sigma, cond, guidance, attention_kwargs)
        high = sigma >= self.boundary
        pairs = ((self.transformer, high), (self.transformer_2, ~high))
        # a sharded expert's all-gathers (and, in training, gradient reduce-scatters) are collective: it runs on
        # every process when it has rows on any (and on none otherwise, as in one process, where an expert
        # without rows gets no gradient at all rather than a zero one, which AdamW would count as a step)
        used = any_process([bool(rows.any()) for _, rows in pairs], x_t.device) if is_sharded(self.transformer) \
            else [True, True]
        outs, order, unused = [], [], x_t.new_zeros(())
        for (model, rows), anywhere in zip(pairs, used):
            idx = rows.nonzero().flatten()
            if len(idx):
                outs.append(self._run(model, x_t[idx], sigma[idx], cond.index(idx), _rows(guidance, idx, x_t),
                                      attention_kwargs))
                order.append(idx)
            elif anywhere and is_sharded(model):  # rows on another process: here its first row, counted zero times
                first = torch.zeros(1, dtype=torch.long, device=x_t.device)
                with untapped():
                    unused = unused + 0.0 * self._run(model, x_t[first], sigma[first], cond.index(first),
                                                      _rows(guidance, first, x_t), attention_kwargs).sum()
        out = torch.cat(outs)[torch.cat(order).argsort()]
        return out + unused if unused.requires_grad else out

    def _run(self, model: nn.Module, x_t: torch.Tensor, sigma: torch.Tensor, cond: Condition,
             guidance: torch.Tensor | None, attention_kwargs: dict | None) -> torch.Tensor:
        inputs = self.family.transformer_inputs(self, x_t.to(self.dtype), sigma, cond)
        if self.guidance_embeds:
            inputs["guidance"] = guidance.to(x_t.device, self.dtype).expand(x_t.shape[0]) * 1000.0
        out = model(timestep=sigma * 1000.0, attention_kwargs=attention_kwargs, return_dict=False, **inputs)[0]
        return out.to(x_t.dtype)


def _rows(guidance: torch.Tensor | None, idx: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor | None:
    """A per-row guidance scale's rows (a single scale is shared by every row)."""
    if guidance is None or guidance.numel() == 1 or guidance.shape[0] != x_t.shape[0]:
        return guidance
    return guidance[idx.to(guidance.device)]


@dataclass
class Encoded:
    """Everything sampling needs besides the noise: the conditions and the initial latents' recipe."""

    cond: Condition
    uncond: Condition | None  # None: no CFG pair (guidance 1 or embedded)
    init: Any = None  # family hook: noise -> initial latents (HunyuanVideo-I2V mixes in the image latent)
    keep: slice | None = None  # latent frames the pipeline returns (HunyuanVideo-I2V drops its first)


class Family:
    """The interface a family module implements (see wan.py, hunyuan.py)."""

    name: str
    i2v_extra = False  # whether its I2V inputs live in Condition.extra (Wan) rather than image_latent (HunyuanVideo)

    def is_i2v(self, transformer: nn.Module) -> bool:
        raise NotImplementedError

    def transformer_inputs(self, dit: RealDiT, x: torch.Tensor, sigma: torch.Tensor, cond: Condition) -> dict:
        raise NotImplementedError

    def scheduler_sigmas(self, scheduler, steps: int, shift: float) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, pipe, dit: RealDiT, prompts: list[str], *, max_sequence_length: int, device,
                    images: list | None = None) -> TextEmbedding:
        """Prompts -> the transformer's text inputs; ``images`` (PIL, one per prompt) for a family whose
        prompt embedding depends on the first frame (``text_needs_image``)."""
        raise NotImplementedError

    def text_needs_image(self, dit: RealDiT) -> bool:
        """Whether the prompt is encoded together with the first frame (HunyuanVideo-I2V's Llava)."""
        return False

    def encode(self, pipe, dit: RealDiT, prompts: list[str], image, *, height: int, width: int, frames: int,
               guidance: float, noise: torch.Tensor, max_sequence_length: int, device) -> Encoded:
        raise NotImplementedError

    def default_max_sequence_length(self) -> int:
        raise NotImplementedError
