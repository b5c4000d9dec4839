"""HunyuanVideo (``HunyuanVideoPipeline``) and HunyuanVideo-I2V (``HunyuanVideoImageToVideoPipeline``).

- text: Llama (I2V: Llava, with the first frame inside the prompt) hidden states two layers from the
  top, the prompt template's tokens cropped off, + CLIP's pooled vector; the pipeline's own
  ``encode_prompt`` with the template's token positions computed for the folder's tokenizer;
- guidance: HunyuanVideo T2V is guidance-distilled, the scale is an input (``guidance`` x 1000); a
  model without the embedding gets a CFG pair (I2V: the negative prompt with a black image, as
  diffusers' true CFG does);
- I2V ``latent_concat``: input [x (C), image latent zero-padded over time (C), mask (1)] = 2C + 1
  (models/i2v.py's layout); the initial latents are 0.999 noise + 0.001 image latent, and the first
  latent frame is dropped from the result (diffusers' pipeline does the same);
- VAE: AutoencoderKLHunyuanVideo with its ``scaling_factor`` (models/vae.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..dit import Condition
from ..i2v import i2v_input
from ..text import TextEmbedding
from .base import Encoded, Family, RealDiT


def prompt_template(tokenizer, text_encoder, i2v: bool, override: dict | None = None) -> dict:
    """diffusers' default template with ``crop_start`` (and the I2V image-token span) counted with this
    tokenizer (the shipped 95 / 103 are the real Llama-3 tokenizer's counts)."""
    if i2v:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
    else:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    template = dict(DEFAULT_PROMPT_TEMPLATE)
    if override:
        return {**template, **override}
    ids = tokenizer(template["template"].split("{}")[0])["input_ids"]
    template["crop_start"] = len(ids)
    if i2v:
        n = int(getattr(text_encoder.config, "image_seq_length", 576))
        start = ids.index(tokenizer.convert_tokens_to_ids("<image>"))
        template.update(image_emb_start=start, image_emb_end=start + n, image_emb_len=n)
    return template


class HunyuanFamily(Family):
    name = "hunyuan"

    def is_i2v(self, transformer) -> bool:
        return transformer.config.image_condition_type == "latent_concat"

    def default_max_sequence_length(self) -> int:
        return 256

    def transformer_inputs(self, dit: RealDiT, x: torch.Tensor, sigma: torch.Tensor, cond: Condition) -> dict:
        if dit.is_i2v:
            x = i2v_input(x, cond.image_latent, "zero")
        return {"hidden_states": x, "encoder_hidden_states": cond.context, "encoder_attention_mask": cond.mask,
                "pooled_projections": cond.pooled}

    def scheduler_sigmas(self, scheduler, steps: int, shift: float) -> torch.Tensor:
        sched = type(scheduler).from_config(scheduler.config, shift=shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
        return torch.as_tensor(np.asarray(sched.sigmas), dtype=torch.float32)

    def text_needs_image(self, dit) -> bool:
        return dit.is_i2v

    def _text(self, pipe, template: dict, prompts: list[str], image, *, max_sequence_length, device) -> TextEmbedding:
        kw = {"image": image} if image is not None else {}
        pe, pooled, mask = pipe.encode_prompt(prompt=list(prompts), prompt_template=template, device=device,
                                              max_sequence_length=max_sequence_length, **kw)
        return TextEmbedding(pe, mask.bool(), pooled)

    def encode_text(self, pipe, dit, prompts, *, max_sequence_length, device, images=None) -> TextEmbedding:
        """T2V: the prompts alone. I2V: each prompt with its own first frame (PIL) through Llava's vision
        branch, one clip at a time (the image tokens sit inside the prompt's embedding)."""
        i2v = dit.is_i2v
        if i2v and (images is None or len(images) != len(prompts)):
            raise ValueError("HunyuanVideo-I2V encodes the prompt together with the first frame: "
                             "give one image per prompt")
        template = prompt_template(pipe.tokenizer, pipe.text_encoder, i2v)
        if not i2v:
            return self._text(pipe, template, prompts, None, max_sequence_length=max_sequence_length, device=device)
        return TextEmbedding.cat([self._text(pipe, template, [p], img, max_sequence_length=max_sequence_length,
                                             device=device) for p, img in zip(prompts, images)])

    def encode(self, pipe, dit: RealDiT, prompts, image, *, height, width, frames, guidance, noise,
               max_sequence_length, device, identity=None) -> Encoded:
        """``identity``: the image read with the prompt (Llava's image tokens) when it is not the first frame
        ``image`` itself (a sliding-window video keeps the user's image there in every window)."""
        i2v = dit.is_i2v
        template = prompt_template(pipe.tokenizer, pipe.text_encoder, i2v)
        cfg = guidance > 1.0 and not dit.guidance_embeds

        def text(prompt_list, img):
            return self._text(pipe, template, prompt_list, img if i2v else None,
                              max_sequence_length=max_sequence_length, device=device)

        image_latent, init, keep = None, None, None
        if i2v:
            from PIL import Image

            pixels = pipe.video_processor.preprocess(image, height, width).to(device, pipe.vae.dtype)
            _, image_latents = pipe.prepare_latents(pixels, len(prompts), noise.shape[1], height, width, frames,
                                                    torch.float32, device, None, noise, "latent_concat")
            image_latent = image_latents[:, :, :1]
            init = lambda n: n * 0.999 + image_latents * 0.001  # noqa: E731 -- diffusers' prepare_latents
            keep = slice(1, None)
            black = Image.new("RGB", (width, height), 0)
        cond = dit.condition(text(prompts, image if identity is None else identity), image_latent=image_latent)
        uncond = dit.condition(text([""] * len(prompts), black if i2v else None), image_latent=image_latent) if cfg else None
        return Encoded(cond, uncond, init, keep)

HUNYUAN = HunyuanFamily()
