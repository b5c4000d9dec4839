"""HunyuanVideo-1.5 (``HunyuanVideo15Pipeline``, ``HunyuanVideo15ImageToVideoPipeline``;
``HunyuanVideo15Transformer3DModel``).

- text: two streams, both from the pipeline's own helpers. Qwen2.5-VL hidden states two layers from
  the top, the chat-template prefix cropped (``_get_mllm_prompt_embeds``), and ByT5 states of the
  quoted ("glyph") text of the prompt, zeros with an empty mask when it has none
  (``_get_byt5_prompt_embeds``, 256 tokens). The project's ``TextEmbedding`` holds one token stream,
  so both are packed into it: [Qwen tokens, ByT5 tokens] along the sequence, each zero-padded to the
  wider of the two widths, one mask; ``transformer_inputs`` splits them again (the ByT5 part is the
  last 256 tokens, each part's width is in the transformer's config). No pooled vector.
- guidance: a CFG pair with the empty negative prompt; the folder's scale is its ``guider``
  component (``ClassifierFreeGuidance``), read into the folder record as the sampler's guidance.
- the transformer's input is always [x (C), condition latent (C), mask (1)] = 2C + 1 channels: zeros
  for text-to-video; for image-to-video the first frame's VAE latent on latent frame 0 and a mask of
  ones there (models/i2v.py's layout), plus SigLIP's image tokens in ``image_embeds`` (text-to-video
  passes 729 zero tokens, which the transformer masks out). Noise is not mixed with the image latent
  and no frame is dropped (unlike HunyuanVideo-I2V).
- VAE: AutoencoderKLHunyuanVideo15 (x16 spatial, x4 temporal) with its ``scaling_factor`` (models/vae.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..dit import Condition
from ..i2v import i2v_input
from ..text import TextEmbedding
from .base import Encoded, Family, RealDiT

BYT5_TOKENS = 256  # HunyuanVideo15Pipeline.tokenizer_2_max_length
T2V_IMAGE_TOKENS = 729  # HunyuanVideo15Pipeline.vision_num_semantic_tokens: the zero image tokens of T2V


class HunyuanVideo15Family(Family):
    name = "hunyuan15"
    i2v_extra = True  # I2V needs SigLIP tokens of the first frame, beside its latent

    def is_i2v(self, transformer) -> bool:
        return transformer.config.task_type == "i2v"

    def default_max_sequence_length(self) -> int:
        return 1000  # HunyuanVideo15Pipeline.tokenizer_max_length

    def transformer_inputs(self, dit: RealDiT, x: torch.Tensor, sigma: torch.Tensor, cond: Condition) -> dict:
        cfg = dit.transformer.config
        if cond.image_latent is not None:
            x = i2v_input(x, cond.image_latent, "zero")
        else:  # text-to-video: the condition latent and mask are zeros
            b, c, t, h, w = x.shape
            x = torch.cat([x, x.new_zeros(b, c + 1, t, h, w)], dim=1)
        ctx, mask = cond.context, cond.mask.to(x.dtype)
        extra = cond.extra or {}
        image_embeds = extra.get("image_embeds")
        if image_embeds is None:
            image_embeds = x.new_zeros(x.shape[0], T2V_IMAGE_TOKENS, cfg.image_embed_dim)
        return {"hidden_states": x,
                "encoder_hidden_states": ctx[:, :-BYT5_TOKENS, :cfg.text_embed_dim],
                "encoder_attention_mask": mask[:, :-BYT5_TOKENS],
                "encoder_hidden_states_2": ctx[:, -BYT5_TOKENS:, :cfg.text_embed_2_dim],
                "encoder_attention_mask_2": mask[:, -BYT5_TOKENS:],
                "image_embeds": image_embeds.to(x.dtype)}

    def scheduler_sigmas(self, scheduler, steps: int, shift: float) -> torch.Tensor:
        """HunyuanVideo15Pipeline's: linspace(1, 0) through the FlowMatchEuler scheduler at ``shift``."""
        sched = type(scheduler).from_config(scheduler.config, shift=shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
        return torch.as_tensor(np.asarray(sched.sigmas), dtype=torch.float32)

    def encode_text(self, pipe, dit, prompts, *, max_sequence_length, device) -> TextEmbedding:
        prompts = list(prompts)
        qwen, qmask = pipe._get_mllm_prompt_embeds(
            text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, prompt=prompts, device=device,
            tokenizer_max_length=max_sequence_length, system_message=pipe.system_message,
            crop_start=pipe.prompt_template_encode_start_idx)
        byt5, bmask = pipe._get_byt5_prompt_embeds(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
                                                   prompt=prompts, device=device, tokenizer_max_length=BYT5_TOKENS)
        width = max(qwen.shape[-1], byt5.shape[-1])
        tokens = torch.cat([F.pad(qwen.float(), (0, width - qwen.shape[-1])),
                            F.pad(byt5.float(), (0, width - byt5.shape[-1]))], dim=1)
        mask = torch.cat([qmask, bmask.to(qmask.device)], dim=1).bool()
        return TextEmbedding(tokens, mask, tokens.new_zeros(len(prompts), 1))

    def encode(self, pipe, dit: RealDiT, prompts, image, *, height, width, frames, guidance, noise,
               max_sequence_length, device) -> Encoded:
        check_supported(pipe)
        image_latent, extra = None, None
        if dit.is_i2v:
            image_latent, extra = first_frame_inputs(pipe, image, height, width, len(prompts), device, dit.dtype)
        text = lambda p: self.encode_text(pipe, dit, p, max_sequence_length=max_sequence_length,  # noqa: E731
                                          device=device)
        cond = dit.condition(text(prompts), image_latent=image_latent, extra=extra)
        cfg = guidance > 1.0
        uncond = dit.condition(text([""] * len(prompts)), image_latent=image_latent, extra=extra) if cfg else None
        return Encoded(cond, uncond)


def check_supported(pipe) -> None:
    """What this family does not reproduce is a one-line error, not a silently different video."""
    if getattr(pipe.transformer.config, "use_meanflow", False):
        raise ValueError("this HunyuanVideo-1.5 transformer uses MeanFlow (a second timestep per step): "
                         "not supported yet")
    guider = getattr(pipe, "guider", None)
    if guider is not None and (guider.guidance_rescale or guider.use_original_formulation
                               or guider._start != 0.0 or guider._stop != 1.0):
        raise ValueError("the folder's guider rescales or limits classifier-free guidance "
                         "(guidance_rescale / use_original_formulation / start / stop): not supported yet")


def first_frame_inputs(pipe, image, height: int, width: int, batch: int, device, dtype):
    """The first frame's VAE latent (B, C, 1, h, w) and SigLIP tokens, as HunyuanVideo15ImageToVideoPipeline
    computes them: the image cropped to (height, width) by the pipeline's own resize."""
    image = pipe.video_processor.resize(image, height=height, width=width, resize_mode="crop")
    latent = pipe._get_image_latents(vae=pipe.vae, image_processor=pipe.video_processor, image=image, height=height,
                                     width=width, device=device)
    embeds = pipe.encode_image(image=image, batch_size=batch, device=device, dtype=dtype)
    return latent.float().repeat(batch, 1, 1, 1, 1), {"image_embeds": embeds}


class HunyuanVideo15ImageConditioner:
    """I2V training inputs from first frames (B, 3, H, W) in [-1, 1]: SigLIP's image tokens (the first
    frame's latent comes from the latent cache as ``image_latent``). Shared, not copied, by the
    generator copy of the teacher (it holds the pipeline's image encoder)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __deepcopy__(self, memo):
        return self

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict:
        from PIL import Image

        device = next(self.pipe.image_encoder.parameters()).device
        tokens = []
        for img in image.float():
            u8 = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            tokens.append(self.pipe.encode_image(image=Image.fromarray(u8), batch_size=1, device=device,
                                                 dtype=self.pipe.transformer.dtype))
        return {"image_embeds": torch.cat(tokens)}


HUNYUAN15 = HunyuanVideo15Family()
