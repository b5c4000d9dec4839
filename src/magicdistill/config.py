"""Typed, frozen, strict configs. Unknown keys and wrong types are errors that name the field.

Presets are functions (``tiny_*``) so a variant is ``preset().model_copy(update=...)``.
Every run writes its resolved config as JSON into the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .validate import MAX_SEED


class Strict(BaseModel):
    # allow_inf_nan: a NaN/inf field would be written to config.json and model records as invalid JSON
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    @classmethod
    def from_json(cls, path: str | Path):
        from .validate import check_config_file, read_json_file

        check_config_file(Path(path))
        try:
            return cls.model_validate(read_json_file(Path(path)))
        except ValidationError as e:
            raise ValueError(f"invalid {cls.__name__} in {path}: {_first_error(e)}") from None

    @classmethod
    def strict_update(cls, base: "Strict", **updates):
        """``base`` with ``updates`` applied and re-validated (model_copy alone does not validate)."""
        try:
            return cls.model_validate({**base.model_dump(), **updates})
        except ValidationError as e:
            raise ValueError(f"invalid {cls.__name__}: {_first_error(e)}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}' (allowed: see the config class fields)"
    return f"{loc}: {err['msg']}"


DType = Literal["float32", "bfloat16", "float16"]


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class DataConfig(Strict):
    height: int = Field(64, ge=16)
    width: int = Field(64, ge=16)
    num_frames: int = Field(17, ge=1)
    fps: float = Field(8.0, gt=0)
    general_fraction: float = Field(0.2, ge=0, le=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @classmethod
    def of_model(cls, meta: dict) -> "DataConfig":
        """The clip format a model folder records in its dit.json."""
        return cls(height=meta["height"], width=meta["width"], num_frames=meta["num_frames"], fps=meta["fps"])


class VAETrainConfig(Strict):
    data: DataConfig = DataConfig()
    latent_channels: int = Field(16, ge=1)
    spatial_ratio: Literal[4, 8] = 4
    hidden: int = Field(96, ge=8)
    blocks: int = Field(2, ge=0)
    pca_clips: int = Field(64, ge=2)
    pool_clips: int = Field(512, ge=2)  # rendered once; batches are drawn from this pool
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(4, ge=1)
    clip_frames: int = Field(17, ge=1)
    lr: float = Field(2e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0)
    # latent normalisation: per-channel mean and one "global" std or a std "per_channel" (docs/DECISIONS.md)
    normalisation: Literal["global", "per_channel"] = "global"
    # --decoder-only: fine-tune the decoder of the VAE at init_from (its encoder, hence its latent space
    # and normalisation, frozen and copied), with decoder_context previous latent frames (models/patch_vae.py)
    # and temporal_weight x (frame-difference L1 + the same at group boundaries) added to the loss
    decoder_only: bool = False
    init_from: str | None = None
    decoder_context: int = Field(0, ge=0)
    temporal_weight: float = Field(0.0, ge=0)
    # --decoder-only: train on random crop x crop windows (0: whole frames); the decoder is convolutional
    crop: int = Field(0, ge=0)
    # --decoder-only: also decode a generator's latents (generated_latents of them, from the model folder
    # generated_from; training-split first frames), which have no ground truth: smooth_weight x the
    # second frame difference L1 (once more at group boundaries) + consistency_weight x |E(D(z)) - z|^2
    generated_from: str | None = None
    generated_latents: int = Field(64, ge=1)
    smooth_weight: float = Field(1.0, ge=0)
    consistency_weight: float = Field(10.0, ge=0)
    checkpoint_every: int = Field(200, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "cpu"


class DiTConfig(Strict):
    """A small HunyuanVideoTransformer3DModel (the same class the 13B model uses)."""

    latent_channels: int = 16
    hidden_heads: int = 4
    head_dim: int = 32
    num_layers: int = 2  # dual-stream ("double") blocks
    num_single_layers: int = 4
    num_refiner_layers: int = 1
    patch_size: int = 2
    text_dim: int = 384  # MiniLM token embeddings
    rope_axes_dim: tuple[int, int, int] = (8, 12, 12)
    image_tokens: int = 16  # vision-encoder tokens appended to the text tokens (multi-modal guidance)
    max_text_tokens: int = 64
    # What the transformer's output means. "x0": the clean latent, turned into the velocity by the
    # wrapper (JiT, Li & He 2025). A 128-wide model cannot carry 64-dim patches of noise through to
    # a velocity output; measured: v-prediction samples keep the initial noise (docs/DECISIONS.md).
    # "x0_image_residual": x0 = first-frame latent (repeated over time) + output, for I2V (measured:
    # plain x0 still gave blocky frames after 4,000 steps). Real backbones (HunyuanVideo, Wan) predict "v".
    prediction: Literal["v", "x0", "x0_image_residual"] = "x0_image_residual"
    # The first-frame latent in the I2V concat channels: "zero"-padded over time (Magic 1-For-1) or
    # "repeat"ed over every latent frame (a recorded deviation; docs/research/LOG.md).
    image_padding: Literal["zero", "repeat"] = "zero"
    # Tokens per side the patch embedding reads (odd): 1 = diffusers' layout (a token sees its own 2x2
    # latent pixels); k > 1 widens the kernel to k x k tokens, so a face that moved by up to (k - 1) / 2
    # tokens is a linear map of the embedding's input (models/patch_embed.py; docs/DECISIONS.md).
    embed_tokens: int = Field(1, ge=1)
    # "gated": a learned skip around the x0 prediction that can pass the input through where it is
    # clean enough, closed as the noise grows (VideoDiT.x0_hat; measured: docs/DECISIONS.md). "none":
    # x0 is the network's output alone, which must then re-create the input's detail at small sigma.
    skip: Literal["none", "gated"] = "none"

    @field_validator("embed_tokens")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (the kernel is centred on its token), got {v}")
        return v


class TeacherTrainConfig(Strict):
    data: DataConfig = DataConfig()
    dit: DiTConfig = DiTConfig()
    task: Literal["i2v", "t2v"] = "i2v"
    num_clips: int = Field(3000, ge=8)  # size of the encoded training set (latent cache)
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # sigma ~ shift(logit_normal(mean, std)); method.md Stage 1
    logit_mean: float = 0.0
    logit_std: float = 1.0
    train_shift: float = Field(3.0, gt=0)
    text_dropout: float = Field(0.1, ge=0, le=1)  # condition dropout for CFG
    image_dropout: float = Field(0.05, ge=0, le=1)
    checkpoint_every: int = Field(250, ge=1)
    sample_every: int = Field(1000, ge=1)
    # CFG scale of the preview samples and of the sampler recorded in the teacher's dit.json; 2 is what the
    # guidance sweep chose for the tiny teachers (checkpoints/tiny/RECORD.md), higher blows out their colours
    guidance: float = Field(2.0, ge=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "cpu"
    dtype: DType = "float32"
    vae_dir: str = ""
    init_from: str = ""  # a T2V teacher folder to convert to I2V (Magic 1-For-1 section 3)
    data_cache: str = ""  # a cache folder written by `magicdistill cache` (docs/DATA.md); "" = the synthetic portraits


class DistillConfig(Strict):
    """Stage 2/3 of method.md: CFG distillation, LCM, DMD2 and weak-to-strong DMD."""

    method: Literal["w2s", "dmd", "lcm", "cfg", "euler"] = "w2s"
    steps: int = Field(4, ge=1)  # the generator's sampling steps
    shift: float = Field(5.0, gt=0)  # sigma list = shift(linspace(1, 0, steps + 1))
    iters: int = Field(200, ge=0)
    batch_size: int = Field(4, ge=1)
    generator_every: int = Field(5, ge=1)  # r: fake score / discriminator updated every iteration
    alpha_weak: float = Field(0.25, ge=0)
    alpha_strong: float = Field(1.0, gt=0)
    lora_rank: int = Field(16, ge=1)
    # shared_lora: one frozen backbone + one LoRA for both scores (MagicDistillation);
    # separate: a frozen real copy + a trainable full fake copy (DMD2 as published; memory baseline)
    scores: Literal["shared_lora", "separate"] = "shared_lora"
    # full: a separate trainable copy of the teacher (+ its EMA copy); lora: a second adapter on the
    # scores' frozen backbone (its EMA is adapter-sized): the memory option of method.md
    generator: Literal["full", "lora"] = "full"
    generator_lora_rank: int = Field(16, ge=1)
    # which projections the LoRAs (scores' and a LoRA generator's) adapt: attention, or attention and FFN
    lora_targets: Literal["attention", "attention_ffn"] = "attention"
    # memory options (docs/SCALING.md): recompute each transformer block's activations in the backward pass;
    # bf16 autocast with the frozen backbone stored in bf16 and what trains kept in float32 (master weights)
    checkpointing: bool = False
    mixed_precision: Literal["no", "bf16"] = "no"
    # CFG of the real score; None = the teacher's own (its dit.json sampler, else 6)
    real_guidance: Optional[float] = Field(None, ge=0)
    input_mode: Literal["noised_data", "backward_simulation"] = "noised_data"
    lr_generator: float = Field(2e-5, gt=0)
    lr_fake: float = Field(1e-4, gt=0)
    # the discriminator head's own rate: a fresh head at lr_fake (1e-4) stays at chance for 40 steps even on
    # two clearly different distributions, at 1e-3 it separates them (tests/test_discriminator.py)
    lr_disc: float = Field(1e-3, gt=0)
    grad_clip: float = Field(10.0, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    lambda_reg: float = Field(0.0, ge=0)
    lambda_adv: float = Field(5e-3, ge=0)  # generator GAN weight (DMD2)
    lambda_disc: float = Field(1e-2, ge=0)  # discriminator loss weight (DMD2)
    disc_layers: tuple[str, ...] = ("double:-1",)
    disc_features: Literal["fake", "teacher"] = "fake"
    fake_sigma_min: float = Field(0.02, ge=0, le=1)
    fake_sigma_max: float = Field(0.98, ge=0, le=1)
    # The discriminator's noise levels, uniform (unshifted) on [min, max], drawn independently for the real
    # and the generated input and for the generator's GAN term. Shift 5 puts the fake score's median sigma at
    # 0.83, where noise hides the detail a discriminator could judge; docs/METHOD.md, "Discriminator".
    disc_sigma_min: float = Field(0.02, ge=0, le=1)
    disc_sigma_max: float = Field(0.5, ge=0, le=1)
    # CFG distillation (Magic 1-For-1 eq. 6-9)
    cfg_min: float = Field(1.0, ge=0)
    cfg_max: float = Field(8.0, ge=0)
    lambda_cfg: float = Field(1.0, ge=0)
    # LCM
    lcm_teacher_steps: int = Field(50, ge=2)
    lcm_guidance: Optional[float] = Field(None, ge=0)  # None = the teacher's own
    num_clips: int = Field(1000, ge=4)
    # a cache folder written by `magicdistill cache` (docs/DATA.md); "" = the synthetic portraits (num_clips of them)
    data_cache: str = ""
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "cpu"
    dtype: DType = "float32"


# Named DistillConfig presets: ``magicdistill distill --preset NAME`` (flags given on the command line override
# them). "paper": Magic 1-For-1 section 4.2's step distillation: batch 16, "a fixed learning rate of 2e-6" (for
# every optimizer: generator, fake score and, as the paper names no other, the discriminator head), the generator
# updated after every 5 fake updates (TTUR), LoRA scale 0.25 real / 1.0 fake. The paper does not state the real
# score's CFG scale: None keeps the teacher's own (its dit.json sampler). Our defaults differ where measured or
# argued in docs/METHOD.md, "Where the defaults differ from the paper".
DISTILL_PRESETS: dict[str, dict] = {
    "paper": {"batch_size": 16, "lr_generator": 2e-6, "lr_fake": 2e-6, "lr_disc": 2e-6, "generator_every": 5,
              "alpha_weak": 0.25, "alpha_strong": 1.0, "real_guidance": None},
}


def distill_preset(name: str) -> DistillConfig:
    if name not in DISTILL_PRESETS:
        raise ValueError(f"unknown --preset {name!r}; use one of: {', '.join(DISTILL_PRESETS)}")
    return DistillConfig(**DISTILL_PRESETS[name])
