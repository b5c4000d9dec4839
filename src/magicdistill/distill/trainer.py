"""``magicdistill distill``: the loop around a distillation method.

1. load the teacher (+ its VAE and text encoder) and the encoded synthetic clips;
2. build the method (w2s / dmd: W2SMethod; euler: nothing to train);
3. iterate: a seeded batch, ``method.step``; telemetry, checkpoints (every state needed to resume),
   sample videos;
4. save the EMA generator as a model folder whose ``dit.json`` carries its sampler
   (steps, shift, guidance 1), so ``magicdistill generate --model DIR`` samples it correctly.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from ..config import DataConfig, DistillConfig, torch_dtype
from ..data.latent_cache import LatentSet
from ..models.dit import VideoDiT
from ..models.lora import merged
from ..models.text import TextEmbedding, TextEncoder
from ..models.vae import load_vae
from ..atomic import atomic_folder
from ..models.folder import is_real_folder, read_record, resolve_vae_dir, with_absolute_vae
from ..pipeline import sample_video
from ..models.parallelize import Sharder, full_state
from ..train.distributed import World
from ..train.run import Run, closes_runs
from ..train.teacher import latent_set_for, step_generator
from ..validate import check_model_folder
from ..video import tensor_to_frames, write_mp4
from .cached_data import (check_teacher_fits, config_for_data, open_cache_for_real_teacher, open_cache_for_teacher,
                          with_cache_format)
from .cfg_distill import CFGDistillMethod
from .memory import autocast, store_for_mixed_precision
from .lcm import LCMMethod
from .student_copy import StudentCopyMethod
from .real_teacher import load_real_teacher, real_teacher_record, wan_feature_layers
from .scores import LoRAGenerator, build_scores
from .telemetry import pixel_drift
from .w2s import DistillBatch, W2SMethod, with_teacher_guidance


def make_batch(data: LatentSet, idx: torch.Tensor, null_text: TextEmbedding, device, *, i2v: bool = True,
               has_clips: bool = True) -> DistillBatch:
    """A seeded batch; a text-to-video teacher gets no first frame (nothing is pasted into its outputs)."""
    b = len(idx)
    null = TextEmbedding(null_text.tokens.expand(b, -1, -1), null_text.mask.expand(b, -1), null_text.pooled.expand(b, -1))
    image = data.first_frame_pixels(idx).to(device) if i2v else None
    image_latent = data.image_latents[idx].to(device) if i2v else None
    return DistillBatch(data.latents[idx].to(device), data.text.index(idx).to(device, torch.float32), null.to(device),
                        image, image_latent, has_clips)


def build_method(teacher: VideoDiT, cfg: DistillConfig, *, sharder: Sharder | None = None, rows: slice | None = None):
    """``sharder``/``rows``: a multi-process run's sharding and this process's rows of the global batch."""
    methods = {"w2s": W2SMethod, "dmd": W2SMethod, "lcm": LCMMethod, "cfg": CFGDistillMethod}
    if cfg.method not in methods:
        raise ValueError(f"unknown method {cfg.method!r}")
    return methods[cfg.method](teacher, cfg, sharder=sharder, rows=rows)


def sampler_record(cfg: DistillConfig) -> dict:
    """How the distilled model samples; stored in its dit.json and used by ``generate``."""
    if cfg.method == "lcm":
        return {"kind": "consistency", "steps": cfg.steps, "shift": cfg.shift, "guidance": 1.0}
    if cfg.method in ("cfg", "euler"):  # the guidance scale is an input (cfg) or real CFG (euler)
        return {"kind": "euler", "steps": cfg.steps, "shift": cfg.shift, "guidance": cfg.real_guidance}
    return {"kind": "euler", "steps": cfg.steps, "shift": cfg.shift, "guidance": 1.0}


def distill(cfg: DistillConfig, teacher_dir: str | Path, out: str | Path, **kwargs) -> Path:
    """One process, or each of N started by ``torchrun`` (FSDP2 over them: docs/SCALING.md)."""
    with World.joined(cfg.device) as world:
        return _distill(cfg, teacher_dir, out, world=world, **kwargs)


@closes_runs
def _distill(cfg: DistillConfig, teacher_dir: str | Path, out: str | Path, *, resume: bool = False,
             cache_dir: str | Path | None = None, height: int | None = None, width: int | None = None,
             frames: int | None = None, overwrite: bool = False, log: str = "none", world: World = World()) -> Path:
    teacher_dir = Path(teacher_dir)
    check_model_folder(teacher_dir, "--teacher")
    real = is_real_folder(teacher_dir)  # a Wan / HunyuanVideo diffusers folder (distill/real_teacher.py)
    if real:
        folder, meta = real_teacher_record(teacher_dir, cfg, height=height, width=width, frames=frames)
        cfg = wan_feature_layers(cfg, folder)
    else:
        meta = read_record(teacher_dir)
        if not meta:
            raise ValueError(f"no teacher at {teacher_dir} (expected dit.json)")
        if height or width or frames:  # the tiny teacher's clip format is its record's
            meta = {**meta, "height": height or meta["height"], "width": width or meta["width"],
                    "num_frames": frames or meta["num_frames"]}
    if cfg.method == "dmd":
        cfg = DistillConfig.strict_update(cfg, alpha_weak=0.0)
    if cfg.generator == "lora" and cfg.method not in ("w2s", "dmd"):
        raise ValueError(f"--generator lora applies to --method w2s or dmd, not {cfg.method} (use --generator full)")
    if (cfg.checkpointing or cfg.mixed_precision != "no") and cfg.method not in ("w2s", "dmd"):
        raise ValueError(f"checkpointing and mixed precision apply to --method w2s or dmd, not {cfg.method}")
    cfg = with_teacher_guidance(cfg, meta)  # resolved here so config.json records the value used
    rows = world.rows(cfg.batch_size) if world.distributed and cfg.method != "euler" else None
    cached = None
    if cfg.data_cache and cfg.method != "euler":  # a user's cache folder (docs/DATA.md) instead of the synthetic clips
        cached = open_cache_for_real_teacher(cfg.data_cache, folder) if real else \
            open_cache_for_teacher(cfg.data_cache, meta, resolve_vae_dir(teacher_dir))
        cfg = config_for_data(cfg, cached)
        meta = with_cache_format(meta, cached)  # the clips are the cache's: before the teacher loads (Wan I2V's inputs)
    run = Run(out, cfg, resume=resume, may_change=("iters",), length_key="iters", overwrite=overwrite,
              identity={"teacher": str(teacher_dir.resolve())}, log=log, world=world)
    device, dtype = world.device(cfg.device), torch_dtype(cfg.dtype)
    torch.manual_seed(cfg.seed)
    sampler = sampler_record(cfg)
    # 1. models and data
    def load_teacher(device):
        if not real:
            return VideoDiT.load(teacher_dir, dtype=dtype, device=device), None, None, resolve_vae_dir(teacher_dir)
        # with a cache, the text embeddings are in it: the text encoders are not loaded
        teacher, vae, enc, vae_dir = load_real_teacher(folder, meta, device=device, dtype=dtype, text=cached is None)
        if teacher.guidance_embeds:  # the scale is an input: real score, fake score and generator all see it
            teacher.embedded_guidance = cfg.real_guidance
        return teacher, vae, enc, vae_dir

    teacher, vae, enc, vae_dir = load_teacher(device)
    if real:
        sampler["schedule"] = "shifted_linear"  # the generator trains at flow.sigma_schedule's sigmas
        if teacher.guidance_embeds:
            sampler["guidance"] = cfg.real_guidance
    else:
        meta = with_absolute_vae(meta, vae_dir)  # the generator's folder is not the teacher's
    if cfg.method == "euler":  # the N-step teacher itself: nothing to train, only the sampler changes
        final = run.dir / "generator"
        if world.is_main:  # several processes: rank 0 writes, the others wait for it
            with atomic_folder(final) as tmp:  # a finished run's generator/ is replaced whole or not at all
                teacher.save(tmp, **{**meta, "method": "euler", "sampler": sampler})
            print(final)
        world.barrier()
        return final
    if not real:
        vae = load_vae(vae_dir, dtype=dtype, device=device)
    if cached is None:
        if not real:
            enc = TextEncoder(max_tokens=meta.get("max_text_tokens", 64), device=device)
        null_text = enc([""])
        data_cfg = DataConfig.of_model(meta)
        cdir = Path(cache_dir) if cache_dir else run.dir / "cache"
        with world.main_first():  # rank 0 encodes the clips into the cache first; the others then read it
            data = latent_set_for(data_cfg, str(vae_dir), "train", cfg.num_clips, vae, enc, cdir)
            test = latent_set_for(data_cfg, str(vae_dir), "test", 16, vae, enc, cdir)
    else:  # the cache carries the text embeddings (the empty prompt's too): no text encoder in memory
        check_teacher_fits(cached, latent_channels=teacher.latent_channels, i2v=teacher.is_i2v)
        null_text = cached.null_text().to(device)
        data, test = cached, cached.take(range(min(2, len(cached))))  # samples show the first clips (or prompts)
    has_clips = cached is None or cached.has_clips
    # 2. method
    # several processes: every model sharded over them, each a slice of the global batch
    method = build_method(teacher, cfg, sharder=Sharder(device, world.size) if world.distributed else None, rows=rows)
    if getattr(method, "fixed_guidance", None) is not None:  # CFG distilled at one scale (Wan): no pair at sampling
        sampler["guidance"] = 1.0
    start = run.resume(method.modules(), method.optimizers()) if resume else 0
    # 3. loop
    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc=f"distill {cfg.method}", unit="it",
               disable=not world.is_main)
    for it in bar:
        g = step_generator(cfg.seed, it)
        idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
        if rows is not None:
            idx = idx[rows]  # this process's slice of the global batch
        clips = data.take(idx)  # a cache folder reads only these rows
        with autocast(cfg, device):  # bf16 under --mixed-precision bf16, else nothing
            metrics = method.step(make_batch(clips, torch.arange(len(idx)), null_text, device, i2v=teacher.is_i2v,
                                             has_clips=has_clips), it, g)
        metrics = world.mean(metrics)  # several processes: the global batch's means
        run.check_finite(it + 1, **metrics)  # every iteration, before any save
        if (it + 1) % cfg.log_every == 0 or it == start:
            run.log(it + 1, **metrics)
        bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in ("loss_dmd", "loss_fake", "loss_d")})
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iters:
            run.save(it + 1, method.modules(), method.optimizers())
        if (it + 1) % cfg.sample_every == 0 or it + 1 == cfg.iters:
            with method.ema_generator() as generator:  # every process samples (sharded), rank 0 writes
                _, drift = write_generator_samples(run, it + 1, generator, vae, test, null_text, cfg, meta,
                                                   has_clips=has_clips, sampler=sampler, write=world.is_main)
            run.log(it + 1, **drift)
    # 4. the EMA generator (a LoRA generator's adapter merged into a copy of the backbone: a plain model)
    final = run.dir / "generator"
    record = {**meta, "method": cfg.method, "sampler": sampler,
              **({"generator": "lora"} if cfg.generator == "lora" else {})}
    if world.distributed:
        gathered = full_state(method.ema.shadow)  # every process sends its shards; rank 0 builds the model
        if world.is_main:
            with plain_generator(load_teacher("cpu")[0], cfg, gathered, method) as generator, atomic_folder(final) as tmp:
                merged(generator).save(tmp, **record)
        world.barrier()
    else:
        with method.ema_generator() as generator, atomic_folder(final) as tmp:  # written beside, then renamed in
            merged(generator).save(tmp, **record)
    if world.is_main:
        print(final)
    return final


@contextmanager
def plain_generator(teacher: VideoDiT, cfg: DistillConfig, ema_state: dict[str, torch.Tensor],
                    method=None) -> Iterator[VideoDiT]:
    """The EMA generator as an unsharded VideoDiT on a fresh copy of the teacher, from its gathered state (a full
    copy's weights, or the generator adapter's); LCM's and CFG's students take the student's form first."""
    if isinstance(method, StudentCopyMethod):
        teacher = method.student_of(teacher)
    if cfg.generator != "lora":
        teacher.load_state_dict(ema_state)
        yield teacher
        return
    scores = build_scores(teacher, cfg)
    if cfg.mixed_precision == "bf16":  # the adapter merges into a bf16 backbone, as in one process
        store_for_mixed_precision(scores)
    generator = LoRAGenerator(scores)
    generator.weights.load_state_dict(ema_state)
    with generator.model() as model:
        yield model


@torch.no_grad()
def write_generator_samples(run: Run, it: int, generator: VideoDiT, vae, test: LatentSet, null_text: TextEmbedding,
                            cfg: DistillConfig, meta: dict, n: int = 2, *, has_clips: bool = True,
                            sampler: dict | None = None, write: bool = True) -> tuple[Path | None, dict[str, float]]:
    """Held-out truth | EMA-generator sample, side by side; and the collapse signal between them
    (a prompts-only cache has no truth: the samples alone, no signal). ``write=False``: sample only (a
    process other than rank 0 of a sharded run, whose forward passes the others need)."""
    n = min(n, len(test))
    idx = torch.arange(n)
    rec = sampler or sampler_record(cfg)
    video = sample_video(generator, vae, test.text.index(idx).to(dtype=torch.float32), null_text,
                         test.first_frame_pixels(idx) if has_clips else None, num_frames=meta["num_frames"],
                         generator=torch.Generator().manual_seed(cfg.seed), steps=cfg.steps, shift=cfg.shift,
                         guidance=rec["guidance"], sampler=rec["kind"], size=(meta["height"], meta["width"]))
    if not write:
        return None, {}
    if not has_clips:
        grid = torch.cat(list(video), dim=-2)
        return write_mp4(run.dir / "samples" / f"iter_{it:06d}.mp4", tensor_to_frames(grid), meta["fps"]), {}
    truth = vae.decode(test.latents[idx])
    grid = torch.cat([torch.cat([t, v], dim=-1) for t, v in zip(truth, video)], dim=-2)
    path = write_mp4(run.dir / "samples" / f"iter_{it:06d}.mp4", tensor_to_frames(grid), meta["fps"])
    return path, pixel_drift(video, truth)
