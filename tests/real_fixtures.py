"""Tiny random-weight but architecturally real diffusers pipeline folders, built offline.

Every folder is made with diffusers' and transformers' own classes and `save_pretrained`, so a
test that passes on it exercises the same loading and calling code a downloaded Wan / HunyuanVideo
folder does. Sizes are cut to hidden ~32 and 1-2 layers; tokenizers are trained here with the
`tokenizers` library on a small corpus and wrapped in the tokenizer class each pipeline expects
(Unigram -> T5Tokenizer for UMT5, Metaspace BPE -> LlamaTokenizerFast, byte-level BPE with
`</w>` -> CLIPTokenizer).

    build_folder(kind, path) -> Path     one folder (kinds: KINDS)
    FolderCache(root)(kind) -> Path      each kind built once (the session fixture `real_folder`)
    hunyuan_prompt_template(tokenizer, i2v) -> dict
        diffusers' HunyuanVideo prompt template with crop_start (and, for I2V, the image-token
        span) recomputed for the folder's tokenizer: the shipped numbers (95 / 103, 5..581) are
        token counts of the real Llama-3 tokenizer and a 336-px CLIP tower.
    call_kwargs(kind, folder) -> dict    arguments for a 2-step call of diffusers' own pipeline
"""

from __future__ import annotations

from pathlib import Path

import torch

KINDS = ("wan-t2v", "wan-i2v", "hunyuan-t2v", "hunyuan-i2v", "wan22-ti2v", "wan22-a14b",
         "hunyuan15-t2v", "hunyuan15-i2v")  # HunyuanVideo-1.5: tests/real_fixtures_hunyuan15.py

# Latent/video geometry every kind can be called with: 9 frames -> 3 latent frames (temporal /4),
# 32 px -> 4 latents (spatial /8) or 2 latents (Wan 2.2 VAE, spatial /16).
HEIGHT = WIDTH = 32
FRAMES = 9

_WORDS = (
    "a cat runs on the grass under a blue sky while a red ball rolls slowly toward the camera "
    "the dog jumps over the fence and the woman smiles at the small child near the river "
    "portrait of a man with a hat walking in the city at night light rain falls "
)
_HUNYUAN_SPECIAL = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]


def _corpus() -> list[str]:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE as T2V
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE as I2V

    lines = [_WORDS] * 4 + [T2V["template"].format(""), I2V["template"].format("")]
    for special in _HUNYUAN_SPECIAL:
        lines = [line.replace(special, " ") for line in lines]
    return lines


def _t5_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=180, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(_corpus(), trainer)
    vocab = [(piece, score) for piece, score in tok.get_vocab_with_scores()] if hasattr(tok, "get_vocab_with_scores") \
        else _unigram_vocab(tok)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _unigram_vocab(tok) -> list[tuple[str, float]]:
    import json

    return [tuple(item) for item in json.loads(tok.to_str())["model"]["vocab"]]


def _llama_tokenizer(with_image: bool):
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"] + _HUNYUAN_SPECIAL
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=700, special_tokens=specials))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    extra = _HUNYUAN_SPECIAL if with_image else _HUNYUAN_SPECIAL[:3]
    return LlamaTokenizerFast(vocab=model["vocab"], merges=merges, pad_token="<pad>", add_prefix_space=True, add_bos_token=True,
                              additional_special_tokens=extra, model_max_length=1024)


def _clip_tokenizer():
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([line.lower() for line in _corpus()], trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def _clip_text(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))


def _clip_vision_config(image_size: int = 28):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=image_size, patch_size=14, projection_dim=32)


def _image_processor(size: int = 28):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _llama_config(vocab_size: int, pad_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                       pad_token_id=pad_id, bos_token_id=1, eos_token_id=2)


def _wan_vae(z_dim: int = 16):
    from diffusers import AutoencoderKLWan

    if z_dim == 16:
        return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                temperal_downsample=[False, True, True])
    # Wan 2.2's VAE: 48 latent channels, a 2x2 pixel patchify in front (12 input channels), x16 spatial.
    g = torch.Generator().manual_seed(0)
    return AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                            temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                            out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                            latents_mean=(torch.randn(48, generator=g) * 0.3).tolist(),
                            latents_std=(1 + torch.rand(48, generator=g)).tolist())


def _wan_transformer(in_channels: int = 16, out_channels: int = 16, image_dim: int | None = None, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                 in_channels=in_channels, out_channels=out_channels, text_dim=32, freq_dim=32,
                                 ffn_dim=64, num_layers=2, image_dim=image_dim,
                                 added_kv_proj_dim=32 if image_dim else None, rope_max_seq_len=64)


def _wan_scheduler(shift: float):
    # The published Wan folders ship UniPC on flow sigmas; the shift is its `flow_shift`.
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def _umt5(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                       num_heads=2, relative_attention_num_buckets=8, pad_token_id=0,
                                       decoder_start_token_id=0))


def _wan(kind: str):
    from diffusers import WanImageToVideoPipeline, WanPipeline
    from transformers import CLIPVisionModel

    torch.manual_seed(0)
    tokenizer = _t5_tokenizer()
    parts = dict(tokenizer=tokenizer, text_encoder=_umt5(len(tokenizer)), scheduler=_wan_scheduler(3.0))
    if kind == "wan-t2v":
        return WanPipeline(vae=_wan_vae(), transformer=_wan_transformer(), **parts)
    if kind == "wan-i2v":  # Wan 2.1 I2V: 16 noise + 4 mask + 16 image-latent channels, CLIP image tokens.
        image_encoder = CLIPVisionModel(_clip_vision_config())
        return WanImageToVideoPipeline(vae=_wan_vae(), transformer=_wan_transformer(36, 16, image_dim=32),
                                       image_encoder=image_encoder, image_processor=_image_processor(), **parts)
    if kind == "wan22-ti2v":  # Wan 2.2 TI2V-5B: one model for T2V and I2V, 48-ch VAE, per-token timesteps.
        return WanPipeline(vae=_wan_vae(48), transformer=_wan_transformer(48, 48), expand_timesteps=True, **parts)
    if kind == "wan22-a14b":  # Wan 2.2 A14B T2V: a high-noise and a low-noise expert switched at a boundary.
        return WanPipeline(vae=_wan_vae(), transformer=_wan_transformer(seed=0),
                           transformer_2=_wan_transformer(seed=1), boundary_ratio=0.875, **parts)
    raise AssertionError(kind)


def _hunyuan_transformer(i2v: bool):
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=33 if i2v else 16, out_channels=16, num_attention_heads=2, attention_head_dim=16,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
        text_embed_dim=32, pooled_projection_dim=32, rope_axes_dim=(4, 6, 6), rope_theta=256.0,
        guidance_embeds=not i2v, image_condition_type="latent_concat" if i2v else None)


def _hunyuan_vae():
    from diffusers import AutoencoderKLHunyuanVideo

    return AutoencoderKLHunyuanVideo(latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                     norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4,
                                     mid_block_add_attention=True)


def _hunyuan(kind: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline, HunyuanVideoPipeline
    from transformers import LlamaModel, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    i2v = kind == "hunyuan-i2v"
    tokenizer = _llama_tokenizer(with_image=i2v)
    tokenizer_2 = _clip_tokenizer()
    text_config = _llama_config(len(tokenizer), tokenizer.pad_token_id)
    parts = dict(tokenizer=tokenizer, tokenizer_2=tokenizer_2, text_encoder_2=_clip_text(len(tokenizer_2)),
                 vae=_hunyuan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                 transformer=_hunyuan_transformer(i2v))
    if not i2v:
        return HunyuanVideoPipeline(text_encoder=LlamaModel(text_config), **parts)
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=_clip_vision_config(), text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=4,
        vision_feature_select_strategy="default", vision_feature_layer=-2, projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id))
    return HunyuanVideoImageToVideoPipeline(text_encoder=llava, image_processor=_image_processor(), **parts)


def build_pipeline(kind: str):
    """The diffusers pipeline object of one kind (random weights, fixed seeds)."""
    if kind not in KINDS:
        raise ValueError(f"unknown fixture kind {kind!r}; one of {KINDS}")
    if kind.startswith("hunyuan15"):
        import real_fixtures_hunyuan15

        return real_fixtures_hunyuan15.build(kind, _WORDS)
    return _hunyuan(kind) if kind.startswith("hunyuan") else _wan(kind)


def build_folder(kind: str, path) -> Path:
    """Save one kind's pipeline with `save_pretrained` into `path` and return it."""
    path = Path(path)
    build_pipeline(kind).save_pretrained(path, safe_serialization=True)
    # Without torchvision transformers saves its PIL fallback class; the published folders name
    # CLIPImageProcessor, which loads (through the same fallback) here too.
    for name in ("model_index.json", "image_processor/preprocessor_config.json",
                 "feature_extractor/preprocessor_config.json"):  # (HunyuanVideo-1.5 I2V: SigLIP's)
        file = path / name
        if file.exists():
            file.write_text(file.read_text().replace("ImageProcessorPil", "ImageProcessor"))
    return path


class FolderCache:
    """Each kind built at most once under `root` (used by the session fixture `real_folder`)."""

    def __init__(self, root):
        self.root = Path(root)
        self._built: dict[str, Path] = {}

    def __call__(self, kind: str) -> Path:
        if kind not in self._built:
            self._built[kind] = build_folder(kind, self.root / kind)
        return self._built[kind]


def hunyuan_prompt_template(tokenizer, i2v: bool) -> dict:
    """diffusers' HunyuanVideo prompt template with its token positions recomputed for `tokenizer`.

    crop_start counts the tokens before the user's prompt (the shipped 95 / 103 are the real
    Llama-3 tokenizer's counts); for I2V the single `<image>` token is later expanded to the vision
    tower's `image_emb_len` features, which sit at image_emb_start .. image_emb_end.
    """
    if i2v:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE
    else:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    template = dict(DEFAULT_PROMPT_TEMPLATE)
    prefix = template["template"].split("{}")[0]
    ids = tokenizer(prefix)["input_ids"]
    template["crop_start"] = len(ids)
    if i2v:
        start = ids.index(tokenizer.convert_tokens_to_ids("<image>"))
        template.update(image_emb_start=start, image_emb_end=start + 4, image_emb_len=4)
    return template


def first_frame(seed: int = 0):
    """A small PIL image to condition I2V calls with."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(HEIGHT, WIDTH, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def call_kwargs(kind: str, pipe) -> dict:
    """Arguments for a short call of diffusers' own pipeline on a folder of `kind`."""
    kwargs = dict(prompt="a cat runs on the grass", height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                  num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    if kind.startswith("wan"):
        # Wan's cross-attention splits image tokens from text by a hard-coded text length of 512,
        # so Wan I2V must keep the default max_sequence_length (512).
        kwargs.update(guidance_scale=1.0)
    if kind in ("wan-i2v",):
        kwargs["image"] = first_frame()
    if kind.startswith("hunyuan15"):  # guidance is the folder's guider (CFG 4.5); I2V: the size follows the image
        if kind == "hunyuan15-i2v":  # no height/width arguments: a 32x32 image at target_size 32 gives 32x32
            kwargs = {k: v for k, v in kwargs.items() if k not in ("height", "width")} | {"image": first_frame()}
        return kwargs
    if kind.startswith("hunyuan"):
        kwargs.update(prompt_template=hunyuan_prompt_template(pipe.tokenizer, kind == "hunyuan-i2v"),
                      max_sequence_length=16)
    if kind == "hunyuan-i2v":
        kwargs["image"] = first_frame()
    return kwargs
