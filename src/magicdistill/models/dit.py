"""The video DiT: diffusers' HunyuanVideoTransformer3DModel plus conditioning (text + image tokens).

Tiny and real models share this class: the embedded default is the same transformer class as
HunyuanVideo-13B at a small config. The wrapper owns the conventions of method.md:
- time is sigma in [0, 1] (1 = noise), passed to the transformer as sigma * 1000;
- the output is the velocity v = eps - x0; a backbone trained to predict x0 instead ("x0"
  prediction, the tiny default) has it converted here, v = (x_t - x0_hat) / max(sigma, SIGMA_FLOOR),
  so samplers, losses and distillation see one convention; "x0_image_residual" (I2V only) predicts
  x0 as the first-frame latent repeated over time plus the network's output, so a still video
  costs the network nothing and its capacity goes to the motion; skip "gated" lets the network pass
  its input through where the input is clean enough (VideoDiT.x0_hat);
- I2V input is the 2C + 1 channel concat (models/i2v.py), the image latent zero- or repeat-padded;
- multi-modal guidance: image tokens from a vision encoder come first in the context, then the
  text tokens (the transformer's mask requires valid tokens to form a prefix).

Saved as a folder: ``transformer/`` (diffusers format), ``vision.safetensors`` and ``dit.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import DiTConfig
from .folder import read_record, write_record
from .i2v import IMAGE_PADDINGS, convert_t2v_to_i2v, i2v_input
from .patch_embed import embed_tokens, set_embed_tokens
from .text import TextEmbedding
from .vision import PatchVisionEncoder


# JiT's clip of the denominator: bounds the 1/sigma^2 weight the v-loss puts on x0 errors near
# sigma = 0. Below it x0_hat = x_t - sigma v blends x_t and the prediction (both ~ x0 there).
SIGMA_FLOOR = 0.05
PREDICTIONS = ("v", "x0", "x0_image_residual")
SKIPS = ("none", "gated")
GATE_INIT = -2.0  # initial gate logits of skip "gated": sigmoid(-2) = 0.12, mostly closed


@dataclass
class Condition:
    """Everything a DiT forward needs besides (x_t, sigma); computed once per sample, reused per step."""

    context: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool, valid prefix
    pooled: torch.Tensor  # (B, D)
    image_latent: torch.Tensor | None  # (B, C, 1, h, w) for I2V
    # a real family's own inputs (models/families/), batch-first: e.g. Wan I2V's mask + image-video latent
    # and CLIP image tokens; None for the tiny default
    extra: dict[str, torch.Tensor] | None = None

    @staticmethod
    def cat(items: list["Condition"]) -> "Condition":
        img = None if items[0].image_latent is None else torch.cat([i.image_latent for i in items])
        extra = None if items[0].extra is None else {k: torch.cat([i.extra[k] for i in items]) for k in items[0].extra}
        return Condition(torch.cat([i.context for i in items]), torch.cat([i.mask for i in items]),
                         torch.cat([i.pooled for i in items]), img, extra)

    def index(self, idx) -> "Condition":
        img = None if self.image_latent is None else self.image_latent[idx]
        extra = None if self.extra is None else {k: v[idx] for k, v in self.extra.items()}
        return Condition(self.context[idx], self.mask[idx], self.pooled[idx], img, extra)


def tiny_transformer(cfg: DiTConfig, in_channels: int | None = None):
    from diffusers import HunyuanVideoTransformer3DModel

    transformer = HunyuanVideoTransformer3DModel(
        in_channels=in_channels or cfg.latent_channels,
        out_channels=cfg.latent_channels * (2 if cfg.skip == "gated" else 1),  # gated: x0 and the gate logits
        num_attention_heads=cfg.hidden_heads,
        attention_head_dim=cfg.head_dim,
        num_layers=cfg.num_layers,
        num_single_layers=cfg.num_single_layers,
        num_refiner_layers=cfg.num_refiner_layers,
        patch_size=cfg.patch_size,
        patch_size_t=1,
        guidance_embeds=False,
        text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.text_dim,
        rope_axes_dim=tuple(cfg.rope_axes_dim),
    )
    return set_embed_tokens(transformer, cfg.embed_tokens)


def load_transformer(path: Path, meta: dict, dtype: torch.dtype):
    """A model folder's ``transformer/``. diffusers' loader expects its own patch embedding, so a wider
    one (dit.json ``embed_tokens`` > 1) is built from the config, widened, then loaded strictly."""
    from diffusers import HunyuanVideoTransformer3DModel

    tokens = meta.get("embed_tokens", 1)
    if tokens == 1:
        return HunyuanVideoTransformer3DModel.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    weights = path / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"no weights at {weights}")
    transformer = empty_transformer(path, tokens)
    transformer.load_state_dict(load_file(str(weights)))
    return transformer.to(dtype)


def empty_transformer(path: Path, tokens: int = 1):
    """The transformer of ``path``'s config.json with a ``tokens``-wide embedding, weights not loaded."""
    from diffusers import HunyuanVideoTransformer3DModel

    return set_embed_tokens(HunyuanVideoTransformer3DModel.from_config(HunyuanVideoTransformer3DModel.load_config(str(path))),
                            tokens)


class VideoDiT(nn.Module):
    def __init__(self, transformer: nn.Module, vision: nn.Module | None = None, *, image_tokens: int = 0,
                 prediction: str = "v", image_padding: str = "zero", skip: str = "none"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
        if skip != "none" and prediction == "v":
            raise ValueError("a skip connection needs an x0 prediction ('x0' or 'x0_image_residual')")
        if image_padding not in IMAGE_PADDINGS:
            raise ValueError(f"image_padding must be one of {IMAGE_PADDINGS}, got {image_padding!r}")
        self.transformer = transformer
        self.vision = vision
        self.image_tokens = image_tokens if vision is not None else 0
        self.prediction = prediction
        self.image_padding = image_padding
        self.skip = skip

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def tiny(cls, cfg: DiTConfig, task: str = "i2v") -> "VideoDiT":
        """A fresh tiny model. I2V is built the Magic 1-For-1 way: T2V first, then widened."""
        transformer = tiny_transformer(cfg)
        if cfg.skip == "gated":  # start mostly closed: an open copy lets noise through until the net learns where not to
            with torch.no_grad():
                transformer.proj_out.bias.view(2 * cfg.latent_channels, -1)[cfg.latent_channels:] = GATE_INIT
        if task == "i2v":
            convert_t2v_to_i2v(transformer)
            vision = PatchVisionEncoder(cfg.text_dim, cfg.image_tokens)
            return cls(transformer, vision, image_tokens=cfg.image_tokens, prediction=cfg.prediction,
                       image_padding=cfg.image_padding, skip=cfg.skip)
        # a T2V model has no first frame to build on (converted to I2V later, it keeps this)
        return cls(transformer, prediction="x0" if cfg.prediction == "x0_image_residual" else cfg.prediction,
                   image_padding=cfg.image_padding, skip=cfg.skip)

    @property
    def is_i2v(self) -> bool:
        return self.transformer.config.image_condition_type == "latent_concat"

    @property
    def latent_channels(self) -> int:
        out = self.transformer.config.out_channels
        return out // 2 if self.skip == "gated" else out

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.x_embedder.proj.weight.dtype

    # --- conditioning -------------------------------------------------------------------------
    def condition(self, text: TextEmbedding, image: torch.Tensor | None = None,
                  image_latent: torch.Tensor | None = None, drop_image: torch.Tensor | None = None,
                  image_tokens: torch.Tensor | None = None) -> Condition:
        """Build the context: [image tokens (if a vision encoder), text tokens].

        ``image`` (B, 3, H, W) in [-1, 1] feeds the vision encoder; ``drop_image`` (B,) bool zeroes
        the image tokens of those samples (condition dropout). ``image_tokens``: the vision
        encoder's output for ``image`` if already computed (the CFG branches share one pass).
        """
        dt = self.dtype
        tokens, mask = text.tokens.to(dt), text.mask
        if self.vision is not None:
            if image is None and image_tokens is None:
                raise ValueError("this model takes image tokens: pass the conditioning image")
            img_tok = self.vision(image.to(dt)) if image_tokens is None else image_tokens
            if drop_image is not None:
                img_tok = img_tok * (~drop_image).to(dt)[:, None, None]
            tokens = torch.cat([img_tok, tokens], dim=1)
            mask = torch.cat([torch.ones(mask.shape[0], img_tok.shape[1], dtype=torch.bool, device=mask.device), mask], 1)
        if self.is_i2v and image_latent is None:
            raise ValueError("an image-to-video model needs the first-frame latent")
        return Condition(tokens, mask, text.pooled.to(dt), image_latent)

    def conditions(self, text: TextEmbedding, null_text: TextEmbedding, image: torch.Tensor | None = None,
                   image_latent: torch.Tensor | None = None) -> tuple[Condition, Condition]:
        """(cond, uncond) for CFG: the unconditional branch drops the text and keeps the image, so
        both branches share one vision-encoder pass."""
        tokens = self.vision(image.to(self.dtype)) if self.vision is not None and image is not None else None
        return (self.condition(text, image, image_latent, image_tokens=tokens),
                self.condition(null_text, image, image_latent, image_tokens=tokens))

    # --- forward --------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Condition, guidance: torch.Tensor | None = None,
                attention_kwargs: dict | None = None) -> torch.Tensor:
        """Velocity v = eps - x0 at noise level sigma (B,) for latents x_t (B, C, T, H, W)."""
        dt = self.dtype
        x = x_t.to(dt)
        if self.is_i2v:
            x = i2v_input(x, cond.image_latent, self.image_padding)
        sigma = sigma.to(x_t.device, torch.float32).expand(x_t.shape[0])
        kwargs = {}
        if self.transformer.config.guidance_embeds:
            if guidance is None:
                raise ValueError("this model is guidance-distilled: pass the guidance scale")
            kwargs["guidance"] = guidance.to(x_t.device, torch.float32).expand(x_t.shape[0]) * 1000.0
        out = self.transformer(x, sigma * 1000.0, cond.context, cond.mask, cond.pooled,
                               attention_kwargs=attention_kwargs, return_dict=False, **kwargs)[0]
        if self.prediction != "v":
            x0_hat = self.x0_hat(x_t.float(), sigma, out.float(), cond.image_latent)
            s = sigma.clamp(min=SIGMA_FLOOR).view(-1, *([1] * (x_t.ndim - 1)))
            return ((x_t.float() - x0_hat) / s).to(x_t.dtype)
        return out.to(x_t.dtype)

    def x0_hat(self, x_t: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor,
               image_latent: torch.Tensor | None) -> torch.Tensor:
        """x0 from the transformer's output ``out``. "x0": out; "x0_image_residual": m + out, m the image
        latent repeated over time. Skip "gated": out also holds gate logits, g = sigmoid(logits) per
        latent value, and x0_hat = m + a (x_t - (1 - sigma) m) / (1 - sigma) + (1 - a) F with
        a = g w(sigma), w = (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2). Where the input is clean enough the
        network passes it through (the copy) instead of re-creating it through its final LayerNorm, which
        a small model does imprecisely; w closes the copy as the noise grows, and the gate closes it
        where the network knows better (a still background: no noise passed). docs/DECISIONS.md."""
        m = image_latent.float() if self.prediction == "x0_image_residual" else None
        if self.skip == "none":
            return out if m is None else out + m  # m broadcasts over latent frames
        c = out.shape[1] // 2
        f, logits = out[:, :c], out[:, c:]
        sig = sigma.view(-1, *([1] * (x_t.ndim - 1)))
        base = torch.zeros_like(x_t[:, :, :1]) if m is None else m
        copy = (x_t - (1 - sig) * base) / (1 - sig).clamp(min=1e-3)  # the residual seen through the noise
        a = torch.sigmoid(logits) * (1 - sig) ** 2 / ((1 - sig) ** 2 + sig ** 2)
        return base + a * copy + (1 - a) * f

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path, **extra) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(str(path / "transformer"), safe_serialization=True)
        if self.vision is not None:
            save_file({k: v.contiguous() for k, v in self.vision.state_dict().items()}, str(path / "vision.safetensors"))
        meta = {"image_tokens": self.image_tokens, "text_dim": self.transformer.config.text_embed_dim,
                "prediction": self.prediction, "image_padding": self.image_padding, "skip": self.skip, **extra,
                # what is stored, whatever a source said
                "embed_tokens": embed_tokens(self.transformer.x_embedder.proj),
                "weights_dtype": str(self.dtype).removeprefix("torch.")}
        write_record(path / "dit.json", meta)

    @classmethod
    def load(cls, path: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu") -> "VideoDiT":
        path = Path(path)
        if not (path / "transformer" / "config.json").is_file():
            raise ValueError(f"no DiT at {path}: expected transformer/config.json (a magicdistill model folder)")
        meta = read_record(path)
        if meta.get("quantization"):  # written by `magicdistill quantize`: int8 weights (quant/folder.py)
            return cls._load_quantized(path, meta, dtype=dtype, device=device)
        transformer = load_transformer(path / "transformer", meta, dtype)
        vision = None
        if (path / "vision.safetensors").is_file():
            vision = PatchVisionEncoder(meta["text_dim"], meta["image_tokens"])
            vision.load_state_dict(load_file(str(path / "vision.safetensors")))
            vision.to(dtype)
        return cls.from_parts(transformer, vision, meta).to(device).eval()

    @classmethod
    def _load_quantized(cls, path: Path, meta: dict, *, dtype: torch.dtype, device) -> "VideoDiT":
        """A folder written by `magicdistill quantize`: the architecture from its config, int8 weights assigned."""
        from ..quant.int8_files import DIT_WEIGHTS, load_int8

        if not (path / DIT_WEIGHTS).is_file():
            raise ValueError(f"{path} is marked quantized but has no {DIT_WEIGHTS}: re-run `magicdistill quantize`")
        transformer = empty_transformer(path / "transformer", meta.get("embed_tokens", 1))
        vision = PatchVisionEncoder(meta["text_dim"], meta["image_tokens"]) if meta.get("has_vision", True) else None
        model = cls.from_parts(transformer, vision, meta)
        load_int8(model, path / DIT_WEIGHTS, dtype)
        return model.to(device).eval()

    @classmethod
    def from_parts(cls, transformer: nn.Module, vision: nn.Module | None, meta: dict) -> "VideoDiT":
        """The wrapper around loaded parts, configured by a folder's dit.json (missing keys: the
        defaults of folders written before they existed)."""
        model = cls(transformer, vision, image_tokens=meta.get("image_tokens", 0), prediction=meta.get("prediction", "v"),
                    image_padding=meta.get("image_padding", "zero"), skip=meta.get("skip", "none"))
        model.meta = meta
        return model
