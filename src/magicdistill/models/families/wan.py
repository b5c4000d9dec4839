"""Wan 2.1 / 2.2 (``WanPipeline``, ``WanImageToVideoPipeline``; ``WanTransformer3DModel``).

- text: UMT5 ``last_hidden_state`` cut to the prompt's tokens and zero-padded (the pipeline's
  ``encode_prompt``); the transformer takes no mask;
- guidance: a CFG pair with the empty negative prompt (diffusers' default);
- I2V (Wan 2.1): the transformer's input is [noise (C), 4-channel first-frame mask, VAE(image + zero
  frames) normalised (C)], plus CLIP's penultimate image tokens in ``encoder_hidden_states_image``;
  both come from the pipeline's ``prepare_latents`` / ``encode_image``, computed once per video;
- VAE: AutoencoderKLWan with its ``latents_mean`` / ``latents_std`` (models/vae.py);
- Wan 2.2 A14B: two experts, ``transformer`` at sigma >= boundary_ratio, ``transformer_2`` below.
"""

from __future__ import annotations

import numpy as np
import torch

from ..dit import Condition
from ..text import TextEmbedding
from .base import Encoded, Family, RealDiT


class WanFamily(Family):
    name = "wan"
    i2v_extra = True

    def is_i2v(self, transformer) -> bool:
        return transformer.config.in_channels > transformer.config.out_channels

    def default_max_sequence_length(self) -> int:
        return 512  # WanPipeline.__call__'s

    def transformer_inputs(self, dit: RealDiT, x: torch.Tensor, sigma: torch.Tensor, cond: Condition) -> dict:
        extra = cond.extra or {}
        if "condition" in extra:
            x = torch.cat([x, extra["condition"].to(x.dtype)], dim=1)
        inputs = {"hidden_states": x, "encoder_hidden_states": cond.context}
        if "image_embeds" in extra:
            inputs["encoder_hidden_states_image"] = extra["image_embeds"].to(x.dtype)
        return inputs

    def scheduler_sigmas(self, scheduler, steps: int, shift: float) -> torch.Tensor:
        """The sigmas WanPipeline steps through: the folder's scheduler, its shift set to ``shift``."""
        key = "flow_shift" if "flow_shift" in scheduler.config else "shift"
        sched = type(scheduler).from_config(scheduler.config, **{key: shift})
        sched.set_timesteps(steps)
        return torch.as_tensor(np.asarray(sched.sigmas), dtype=torch.float32)

    def encode_text(self, pipe, dit, prompts, *, max_sequence_length, device, images=None) -> TextEmbedding:
        pe, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                   max_sequence_length=max_sequence_length, device=device)
        return self._text(pe)

    def encode(self, pipe, dit: RealDiT, prompts, image, *, height, width, frames, guidance, noise,
               max_sequence_length, device, identity=None) -> Encoded:
        """``identity``: the image whose CLIP tokens condition the video when it is not the first frame
        ``image`` itself (a sliding-window video keeps the user's image there in every window)."""
        cfg = guidance > 1.0
        pe, ne = pipe.encode_prompt(prompts, negative_prompt=[""] * len(prompts), do_classifier_free_guidance=cfg,
                                    max_sequence_length=max_sequence_length, device=device)
        extra = None
        if dit.is_i2v:
            pixels = pipe.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
            _, condition = pipe.prepare_latents(pixels, len(prompts), noise.shape[1], height, width, frames,
                                                torch.float32, device, None, noise)
            extra = {"condition": condition}
            if dit.transformer.config.image_dim is not None:
                extra["image_embeds"] = pipe.encode_image(image if identity is None else identity,
                                                          device).repeat(len(prompts), 1, 1)
        return Encoded(self._cond(dit, pe, extra), self._cond(dit, ne, extra) if cfg else None)

    @staticmethod
    def _text(embeds: torch.Tensor) -> TextEmbedding:
        """Wan's text input: the zero-padded token states; it takes no mask and no pooled vector."""
        b, n, _ = embeds.shape
        return TextEmbedding(embeds, torch.ones(b, n, dtype=torch.bool, device=embeds.device),
                             torch.zeros(b, 1, device=embeds.device))

    def _cond(self, dit: RealDiT, embeds: torch.Tensor, extra: dict | None) -> Condition:
        return dit.condition(self._text(embeds), extra=extra)


class WanImageConditioner:
    """Wan I2V training inputs from first frames (B, 3, H, W) in [-1, 1]: the pipeline's own mask +
    VAE(image + zero frames) and CLIP image tokens, for clips of ``frames`` frames. Shared, not copied,
    by the generator copy of the teacher (it holds the pipeline's VAE and image encoder)."""

    def __init__(self, pipe, *, frames: int):
        self.pipe, self.frames = pipe, frames

    def __deepcopy__(self, memo):
        return self

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict:
        from PIL import Image

        pipe, (h, w) = self.pipe, image.shape[-2:]
        device = next(pipe.vae.parameters()).device
        c = pipe.vae.config.z_dim
        zeros = torch.zeros(1, c, (self.frames - 1) // pipe.vae_scale_factor_temporal + 1,
                            h // pipe.vae_scale_factor_spatial, w // pipe.vae_scale_factor_spatial, device=device)
        conds, tokens = [], []
        for img in image.float():
            _, cond = pipe.prepare_latents(img[None].to(device), 1, c, h, w, self.frames, torch.float32, device,
                                           None, zeros)
            conds.append(cond)
            if pipe.transformer.config.image_dim is not None:
                u8 = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                tokens.append(pipe.encode_image(Image.fromarray(u8), device))
        extra = {"condition": torch.cat(conds)}
        if tokens:
            extra["image_embeds"] = torch.cat(tokens)
        return extra


WAN = WanFamily()
