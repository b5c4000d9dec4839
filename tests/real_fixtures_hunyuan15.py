"""Tiny random-weight HunyuanVideo-1.5 pipeline folders (``HunyuanVideo15Pipeline`` and
``HunyuanVideo15ImageToVideoPipeline``), built offline with diffusers' and transformers' own classes.

The published folders hold: a Qwen2.5-VL text model (``Qwen2_5_VLTextModel``) with a ``Qwen2Tokenizer``
and its chat template, a ByT5 glyph encoder (``T5EncoderModel`` + ``ByT5Tokenizer``, which needs no
vocabulary file), ``AutoencoderKLHunyuanVideo15`` (x16 spatial, x4 temporal), the transformer, a
FlowMatchEuler scheduler and a ``ClassifierFreeGuidance`` guider (the guidance scale lives there, not
in the call); the I2V folder adds a SigLIP vision tower and its image processor. Here every width is
32 and every stack 1-3 layers; the Qwen tokenizer is a byte-level BPE trained on a small corpus.

Known difference from the published folders: diffusers crops a hard-coded 108 tokens (the real
tokenizer's length of the chat-template prefix) off the text encoder's output; with this tokenizer
the prefix has another length, which diffusers and magicdistill crop identically.
"""

from __future__ import annotations

import torch

# What the published 480p configs hold, cut down: latent channels, the I2V concat (2C + 1)
LATENT = 16
IMAGE_SIZE = 28  # the tiny SigLIP tower: 28 px / patch 14 -> 4 image tokens
# Qwen2.5's chat template (system + user turn, then the assistant prompt), as its tokenizer ships it
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _system_message() -> str:
    from diffusers import HunyuanVideo15Pipeline

    src = HunyuanVideo15Pipeline._get_mllm_prompt_embeds.__defaults__  # (max_length, skip, system_message, crop)
    return next(d for d in src if isinstance(d, str))


def _qwen_tokenizer(words: str):
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([words] * 4 + [_system_message(), "system user assistant"], trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    qwen = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None, bos_token=None,
                          eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=4096)
    qwen.add_special_tokens({"additional_special_tokens": _SPECIAL[1:]})
    qwen.chat_template = CHAT_TEMPLATE
    return qwen


def _qwen_text(vocab_size: int, pad_id: int, eos_id: int):
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    # 3 layers: diffusers reads the hidden states 2 layers below the top
    return Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=pad_id,
        bos_token_id=pad_id, eos_token_id=eos_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}))


def _byt5():
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = ByT5Tokenizer()
    encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                      num_heads=2, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                      pad_token_id=0, decoder_start_token_id=0))
    return tokenizer, encoder


def _transformer(i2v: bool):
    from diffusers import HunyuanVideo15Transformer3DModel

    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * LATENT + 1, out_channels=LATENT, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=32, text_embed_2_dim=32,
        image_embed_dim=32, rope_axes_dim=(4, 6, 6), target_size=32, task_type="i2v" if i2v else "t2v")


def _vae():
    from diffusers import AutoencoderKLHunyuanVideo15

    return AutoencoderKLHunyuanVideo15(latent_channels=LATENT, block_out_channels=(8, 8, 16, 16, 32),
                                       layers_per_block=1, spatial_compression_ratio=16, temporal_compression_ratio=4)


def build(kind: str, words: str):
    """The diffusers pipeline object of ``hunyuan15-t2v`` / ``hunyuan15-i2v`` (random weights, fixed seeds)."""
    from diffusers import (ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15ImageToVideoPipeline,
                           HunyuanVideo15Pipeline)

    torch.manual_seed(0)
    i2v = kind == "hunyuan15-i2v"
    tokenizer = _qwen_tokenizer(words)
    tokenizer_2, text_encoder_2 = _byt5()
    parts = dict(text_encoder=_qwen_text(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id), tokenizer=tokenizer,
                 transformer=_transformer(i2v), vae=_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                 text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                 guider=ClassifierFreeGuidance(guidance_scale=4.5))
    if not i2v:
        return HunyuanVideo15Pipeline(**parts)
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    image_encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                         num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=14))
    processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return HunyuanVideo15ImageToVideoPipeline(image_encoder=image_encoder, feature_extractor=processor, **parts)
