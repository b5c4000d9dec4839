"""Parameter counts and memory ESTIMATES for the published Wan / HunyuanVideo checkpoints.

No download: each component is built on the ``meta`` device (shapes only, no memory) from a config
dict written below after the published ``config.json`` files of the diffusers-format repositories
(Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, Wan-AI/Wan2.2-TI2V-5B-Diffusers,
hunyuanvideo-community/HunyuanVideo-I2V), and its parameters are counted. Memory is then estimated
from the counts alone (bytes per parameter), so activations, the CUDA context and allocator slack
are NOT included: read the numbers as lower bounds for weights and optimizer state.

    python benchmarks/real_model_memory.py            # prints a Markdown table
"""

from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore")
GB = 1e9

UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu")
MODELS = {
    "Wan2.1-I2V-14B-480P": {
        "transformer": ("WanTransformer3DModel", dict(
            patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024)),
        "text_encoder": ("UMT5EncoderModel", UMT5_XXL),
        "image_encoder": ("CLIPVisionModel", dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                  num_attention_heads=16, patch_size=14, image_size=224,
                                                  projection_dim=1024)),
        "vae": ("AutoencoderKLWan", dict(base_dim=96, z_dim=16)),
    },
    "Wan2.2-TI2V-5B": {
        "transformer": ("WanTransformer3DModel", dict(
            patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
            text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)),
        "text_encoder": ("UMT5EncoderModel", UMT5_XXL),
        "vae": ("AutoencoderKLWan", dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True,
                                         in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                                         latents_mean=[0.0] * 48, latents_std=[1.0] * 48)),
    },
    "HunyuanVideo-I2V": {
        "transformer": ("HunyuanVideoTransformer3DModel", dict(
            in_channels=33, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
            num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
            qk_norm="rms_norm", guidance_embeds=False, text_embed_dim=4096, pooled_projection_dim=768,
            rope_theta=256.0, rope_axes_dim=(16, 56, 56), image_condition_type="latent_concat")),
        "text_encoder": ("LlavaForConditionalGeneration", dict(
            text_config=dict(model_type="llama", vocab_size=128320, hidden_size=4096, intermediate_size=14336,
                             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
            vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                               num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                               projection_dim=768),
            image_token_index=128257)),
        "text_encoder_2": ("CLIPTextModel", dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                 num_hidden_layers=12, num_attention_heads=12,
                                                 max_position_embeddings=77)),
        "vae": ("AutoencoderKLHunyuanVideo", dict()),
    },
}


def _build(cls_name: str, config: dict):
    import diffusers
    import transformers

    with torch.device("meta"):
        if hasattr(diffusers, cls_name) and not hasattr(transformers, cls_name):
            return getattr(diffusers, cls_name)(**config)
        cls = getattr(transformers, cls_name)
        return cls(cls.config_class(**config))


LORA_RANK = 16  # distill's default --lora-rank / generator LoRA rank


def _lora_params(model, cls_name: str, rank: int) -> int:
    """Parameters of a rank-``rank`` LoRA on the projections magicdistill adapts (models/lora.py)."""
    from magicdistill.models.lora import LORA_TARGETS

    targets = LORA_TARGETS[cls_name]
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and any(name.endswith("." + t) for t in targets))


def count(model_name: str, rank: int = LORA_RANK) -> dict[str, int]:
    out = {}
    for part, spec in MODELS[model_name].items():
        model = _build(*spec)
        out[part] = sum(p.numel() for p in model.parameters())
        if part == "transformer":
            out["lora"] = _lora_params(model, spec[0], rank)
    return out


def estimate(params: dict[str, int]) -> dict[str, float]:
    """GB of weights/optimizer state per step (bf16 weights = 2 B/param; AdamW in fp32 with an fp32 master
    copy = 16 B per trained param). Activations not included."""
    t, lora = params["transformer"], params["lora"]
    encoders = sum(v for k, v in params.items() if k not in ("transformer", "lora"))
    return {
        "transformer_bf16": 2 * t / GB,
        "encoders_vae_bf16": 2 * encoders / GB,
        # generate: everything resident in bf16 (encoders can be offloaded after encoding)
        "generate_all_resident": 2 * (t + encoders) / GB,
        # distill --generator lora: one frozen bf16 backbone shared by the real score, the fake score (LoRA)
        # and the generator (LoRA); trained LoRA params with fp32 master + AdamW
        "distill_lora": (2 * t + 2 * 16 * lora) / GB,
        # distill --generator full: frozen bf16 teacher (+ fake-score LoRA) and a fully trained generator
        # (fp32 master 4 + grad 4 + AdamW 8 = 16 B/param) and its bf16 EMA copy
        "distill_full": (2 * t + 16 * lora + 16 * t + 2 * t) / GB,
        # export --lora: base and generator state dicts in CPU RAM (bf16), SVD one layer at a time
        "export_lora_cpu_ram": 2 * 2 * t / GB,
    }


def main() -> None:
    print("| model | component | parameters |")
    print("|---|---|---:|")
    rows = {}
    for name in MODELS:
        params = count(name)
        rows[name] = params
        for part, n in params.items():
            label = f"LoRA rank {LORA_RANK} (q, k, v, out projections)" if part == "lora" else part
            print(f"| {name} | {label} | {n / 1e9:.3f} B |")
    print()
    print("| model | transformer bf16 | encoders+VAE bf16 | generate (all resident) | distill --generator lora | "
          "distill --generator full | export --lora (CPU RAM) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, params in rows.items():
        e = estimate(params)
        print(f"| {name} | {e['transformer_bf16']:.0f} GB | {e['encoders_vae_bf16']:.0f} GB | "
              f"{e['generate_all_resident']:.0f} GB | {e['distill_lora']:.0f} GB | {e['distill_full']:.0f} GB | "
              f"{e['export_lora_cpu_ram']:.0f} GB |")


if __name__ == "__main__":
    main()
