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

    def encode_text(self, pipe, dit, prompts, *, max_sequence_length, device) -> TextEmbedding:
        pe, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                   max_sequence_length=max_sequence_length, device=device)
        return self._text(pe)

    def encode(self, pipe, dit: RealDiT, prompts, image, *, height, width, frames, guidance, noise,
               max_sequence_length, device) -> Encoded:
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
                extra["image_embeds"] = pipe.encode_image(image, device).repeat(len(prompts), 1, 1)
        return Encoded(self._cond(dit, pe, extra), self._cond(dit, ne, extra) if cfg else None)

    @staticmethod
    def _text(embeds: torch.Tensor) -> TextEmbedding:
        """Wan's text input: the zero-padded token states; it takes no mask and no pooled vector."""
        b, n, _ = embeds.shape
        return TextEmbedding(embeds, torch.ones(b, n, dtype=torch.bool, device=embeds.device),
                             torch.zeros(b, 1, device=embeds.device))

    def _cond(self, dit: RealDiT, embeds: torch.Tensor, extra: dict | None) -> Condition:
        return dit.condition(self._text(embeds), extra=extra)


WAN = WanFamily()
