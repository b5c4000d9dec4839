"""``magicdistill train``: flow-matching training of the (tiny) TI2V teacher (method.md Stage 1).

1. encode the dataset once (latent cache); 2. build the DiT (T2V -> I2V by channel widening, or
converted from ``init_from``); 3. AdamW + warmup/cosine, EMA; 4. each step: sigma from the shifted
logit-normal, text/image condition dropout for CFG, velocity MSE; 5. checkpoints, sample videos,
and the EMA teacher saved as a model folder.

The batch and noise of step k are drawn from a generator seeded by (seed, k), so a resumed run
continues exactly as an uninterrupted one would. Under ``torchrun`` the model and its EMA copy are sharded
with FSDP2 and each process trains on its rows of every global batch (docs/SCALING.md).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_folder
from ..config import DataConfig, TeacherTrainConfig, torch_dtype
from ..data.latent_cache import LatentSet, build_latent_set, cache_key, load_latent_set, save_latent_set
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..distill.losses import flow_matching_loss
from ..flow import add_noise, sample_training_sigma
from ..models.dit import VideoDiT
from ..models.i2v import convert_t2v_to_i2v
from ..models.parallelize import Sharder, full_state, reshard
from ..models.text import TextEmbedding, TextEncoder
from ..models.vae import VideoVAE, load_vae
from ..models.vision import PatchVisionEncoder
from ..pipeline import TEACHER_SAMPLER, sample_video
from ..video import tensor_to_frames, write_mp4
from .distributed import World
from .ema import EMA
from .run import Run, closes_runs, lr_schedule


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def drop_text(text: TextEmbedding, null: TextEmbedding, drop: torch.Tensor) -> TextEmbedding:
    """Replace the text of samples where ``drop`` is True by the empty prompt (CFG condition dropout)."""
    d = drop[:, None]
    return TextEmbedding(torch.where(d[..., None], null.tokens, text.tokens), torch.where(d, null.mask, text.mask),
                         torch.where(d, null.pooled, text.pooled))


def teacher_loss(dit: VideoDiT, data: LatentSet, idx: torch.Tensor, null_text: TextEmbedding,
                 cfg: TeacherTrainConfig, g: torch.Generator, rows: slice | None = None) -> torch.Tensor:
    """``rows``: this process's rows of a global batch of ``cfg.batch_size`` clips (``idx`` holds only those);
    the noise, sigmas and dropouts are drawn for the whole batch and this process keeps its rows, so N
    processes train on exactly the numbers one process draws."""
    device = next(dit.parameters()).device
    x0 = data.latents[idx].to(device)
    total, keep = (cfg.batch_size, rows) if rows is not None else (x0.shape[0], slice(None))
    eps = torch.randn((total, *x0.shape[1:]), generator=g)[keep].to(device)
    sigma = sample_training_sigma(total, generator=g, mean=cfg.logit_mean, std=cfg.logit_std,
                                  shift=cfg.train_shift)[keep].to(device)
    dropped_text = (torch.rand(total, generator=g) < cfg.text_dropout)[keep]
    dropped_image = (torch.rand(total, generator=g) < cfg.image_dropout)[keep]
    text = drop_text(data.text.index(idx).to(dtype=torch.float32), null_text.to("cpu", torch.float32), dropped_text)
    image = data.first_frame_pixels(idx).to(device) if dit.is_i2v else None
    image_latent = data.image_latents[idx].to(device) if dit.is_i2v else None
    cond = dit.condition(text.to(device), image, image_latent, dropped_image.to(device) if dit.vision is not None else None)
    v = dit(add_noise(x0, eps, sigma), sigma, cond)
    return flow_matching_loss(v, x0, eps)


def build_teacher(cfg: TeacherTrainConfig) -> VideoDiT:
    if not cfg.init_from:
        return VideoDiT.tiny(cfg.dit, cfg.task)
    src = VideoDiT.load(cfg.init_from)
    if src.is_i2v and cfg.task == "t2v":
        raise ValueError(f"--init-from {cfg.init_from} is an I2V model; it cannot initialise a T2V run")
    if cfg.task == "i2v" and not src.is_i2v:
        convert_t2v_to_i2v(src.transformer)  # Magic 1-For-1: widen the patch embedding, new channels zero
        src.vision = PatchVisionEncoder(cfg.dit.text_dim, cfg.dit.image_tokens)
        src.image_tokens = cfg.dit.image_tokens
        src.image_padding = cfg.dit.image_padding
    return src


def shard_teacher(dit: torch.nn.Module, ema: EMA, world: World, device: torch.device) -> None:
    """Several processes: the trained model and its EMA copy sharded alike with FSDP2 (the EMA copy is made
    before: a sharded module is not copied), so each process holds 1/N of every weight, gradient, AdamW state
    and EMA, and the gradients are averaged over the processes."""
    if not world.distributed:
        return
    sharder = Sharder(device, world.size)
    sharder.model(dit)
    sharder.model(ema.shadow)
    check_sharded(dit)


def check_sharded(model: torch.nn.Module) -> None:
    """Every trained weight is a shard: one the sharder does not know of would train on this process's rows
    alone (its gradient not averaged), and the processes would silently drift apart."""
    whole = next((n for n, p in model.named_parameters() if p.requires_grad and not hasattr(p, "to_local")), None)
    if whole is not None:
        raise ValueError(f"{whole} of this model is not sharded over the processes: it does not train under torchrun "
                         "yet; start it without torchrun")


def plain_ema(ema: EMA, world: World, fresh):
    """The EMA weights as an unsharded model: the EMA copy itself in one process; in several, gathered from the
    shards (every process sends its own) into ``fresh()``, a new model built on rank 0 (None on the others)."""
    if not world.distributed:
        return ema.shadow
    state = full_state(ema.shadow)
    if not world.is_main:
        return None
    model = fresh()
    model.load_state_dict(state)
    return model


def lr_lambda(cfg: TeacherTrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def latent_set_for(data_cfg: DataConfig, vae_dir: str, split: str, n: int, vae: VideoVAE, enc: TextEncoder,
                   cache_dir: Path) -> LatentSet:
    """The encoded synthetic clips of ``split``, from the cache when it was built the same way."""
    clips = SyntheticVideoConfig.of(data_cfg)
    # keyed by every field of the clips rendered (not just the run's DataConfig), so a change to how
    # clips are drawn (e.g. SyntheticVideoConfig.pose_start) cannot reuse a stale cache
    key = cache_key(vae_dir, {"clips": dataclasses.asdict(clips), "seed": data_cfg.seed}, split, n, enc.max_tokens)
    path = cache_dir / f"latents_{split}_{key}.safetensors"
    data = load_latent_set(path, key)
    if data is None:
        source = SyntheticVideos(clips, split, data_cfg.seed)
        data = build_latent_set(source, n, vae, enc, desc=f"encoding {split} clips")
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_latent_set(data, path, key)
    return data


def open_user_cache(cfg: TeacherTrainConfig, vae_dir: str):
    """``--data CACHE`` for teacher training: a clips cache encoded by this VAE and the default text encoder."""
    from ..data.cache_reader import CachedClips
    from ..data.encoders import text_fingerprint, vae_fingerprint
    from ..models.text import default_text_encoder_path

    data = CachedClips(cfg.data_cache)
    if not data.has_clips:
        raise ValueError(f"--data {cfg.data_cache} is a prompts-only cache; training a teacher needs clips")
    data.check_encoders({"vae": vae_fingerprint(vae_dir),
                         "text": text_fingerprint(default_text_encoder_path(), cfg.dit.max_text_tokens)}, "--vae")
    return data


def with_cache_format(cfg: TeacherTrainConfig) -> TeacherTrainConfig:
    """The clip format of ``--data CACHE`` (its clip rule) becomes the run's, recorded in the teacher's dit.json."""
    if not cfg.data_cache:
        return cfg
    from ..data.cache_reader import CachedClips

    rule = CachedClips(cfg.data_cache).rule
    fmt = {k: rule[k] for k in ("height", "width", "num_frames", "fps")}
    return TeacherTrainConfig.strict_update(cfg, data={**cfg.data.model_dump(), **fmt})


def write_samples(run: Run, step: int, dit: VideoDiT, vae: VideoVAE, test: LatentSet, null_text: TextEmbedding,
                  cfg: TeacherTrainConfig, n: int = 2, steps: int = 25) -> Path | None:
    """Side by side: held-out ground truth | 25-step sample at the run's guidance from the same first frame.
    Several processes: every one samples (the model is sharded over them), rank 0 writes (None elsewhere)."""
    idx = torch.arange(n)
    text = test.text.index(idx).to(dtype=torch.float32)
    image = test.first_frame_pixels(idx) if dit.is_i2v else None
    gen = torch.Generator().manual_seed(cfg.seed)
    video = sample_video(dit, vae, text, null_text, image, num_frames=cfg.data.num_frames, generator=gen, steps=steps,
                         guidance=cfg.guidance, shift=TEACHER_SAMPLER["shift"], size=(cfg.data.height, cfg.data.width))
    if run.world.distributed:
        reshard(dit)  # the sampled blocks go back to shards, which the EMA update next step expects
    if not run.world.is_main:
        return None
    truth = vae.decode(test.latents[idx].to(next(vae.parameters()).device))
    grid = torch.cat([torch.cat([t, v], dim=-1) for t, v in zip(truth, video)], dim=-2)  # rows: samples
    return write_mp4(run.dir / "samples" / f"step_{step:06d}.mp4", tensor_to_frames(grid), cfg.data.fps)


def fit(dit, ema: EMA, data, null_text: TextEmbedding, cfg: TeacherTrainConfig, run: Run, *, resume: bool,
        banner: str, after_step: Callable[[int], None] | None = None) -> None:
    """The training loop of the tiny teacher and of a real folder's transformer: AdamW (warm-up, cosine decay)
    over what requires grad, resumed from the run's checkpoint with ``resume``; then each step to ``cfg.steps``
    a ``train_step``, a checkpoint every ``checkpoint_every`` steps and at the last, and ``after_step(step)``
    (1-based; the tiny teacher's preview samples)."""
    opt = torch.optim.AdamW([p for p in dit.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start = run.resume({"dit": dit, "ema": ema.shadow}, {"dit": opt}) if resume else 0
    sched = lr_schedule(opt, lr_lambda(cfg), start)
    world = run.world
    if world.is_main:
        print(banner + (f", {world.size} processes" if world.distributed else ""))
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="it",
               disable=not world.is_main)
    for step in bar:
        loss = train_step(dit, ema, opt, sched, data, null_text, cfg, step, run)
        bar.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            run.save(step + 1, {"dit": dit, "ema": ema.shadow}, {"dit": opt})
        if after_step is not None:
            after_step(step + 1)


def train_step(dit, ema: EMA, opt: torch.optim.Optimizer, sched, data, null_text: TextEmbedding,
               cfg: TeacherTrainConfig, step: int, run: Run) -> float:
    """One flow-matching step on a batch drawn by the step's seed (the same for the tiny teacher and a real
    folder's transformer: train/real_teacher_train.py), the EMA updated and the metrics logged; -> the loss.
    Several processes (``run.world``): each takes its rows of the global batch; the loss logged is the global
    batch's mean."""
    g = step_generator(cfg.seed, step)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    rows = run.world.rows(cfg.batch_size) if run.world.distributed else None
    if rows is not None:
        idx = idx[rows]
    loss = teacher_loss(dit, data.take(idx), torch.arange(len(idx)), null_text, cfg, g, rows)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_([p for p in dit.parameters() if p.requires_grad], cfg.grad_clip)
    opt.step()
    sched.step()
    # EMA warm-up: average over the steps seen so far until the decay's horizon is reached
    ema.update(dit, min(cfg.ema_decay, (1 + step) / (10 + step)))
    loss = run.world.mean({"loss": loss.item()})["loss"]  # the grad norm is the global one already
    run.log(step + 1, loss=loss, grad_norm=gnorm.item(), lr=sched.get_last_lr()[0])
    return loss


def train_teacher(cfg: TeacherTrainConfig, out: str, **kwargs) -> VideoDiT | None:
    """One process, or each of N started by ``torchrun`` (FSDP2 over them: docs/SCALING.md). -> the trained
    teacher (None on the processes other than rank 0 of several)."""
    with World.joined(cfg.device) as world:
        return _train_teacher(cfg, out, world=world, **kwargs)


@closes_runs
def _train_teacher(cfg: TeacherTrainConfig, out: str, *, resume: bool = False, cache_dir: str | None = None,
                   overwrite: bool = False, log: str = "none", world: World = World()) -> VideoDiT | None:
    if not cfg.vae_dir:
        raise ValueError("no VAE given: pass --vae DIR (a diffusers VAE folder, e.g. the shipped one)")
    world.rows(cfg.batch_size)  # several processes: a batch they cannot split equally stops every one of them here
    torch.manual_seed(cfg.seed)
    cfg = with_cache_format(cfg)
    run = Run(out, cfg, resume=resume, may_change=("steps", "guidance"),  # guidance: previews and record only
              length_key="steps", overwrite=overwrite, log=log, world=world)
    device, dtype = world.device(cfg.device), torch_dtype(cfg.dtype)
    vae = load_vae(cfg.vae_dir, device=device)
    vae.check_frames(cfg.data.num_frames)
    # 1. data: the synthetic clips, encoded once; or a user's cache folder (docs/DATA.md), read lazily
    if cfg.data_cache:
        data = open_user_cache(cfg, vae_dir=cfg.vae_dir)
        null_text, test = data.null_text().to(device), data.take(range(min(2, len(data))))
    else:
        enc = TextEncoder(max_tokens=cfg.dit.max_text_tokens, device=device)
        if enc.dim != cfg.dit.text_dim:
            raise ValueError(f"text encoder width {enc.dim} != dit.text_dim {cfg.dit.text_dim}")
        null_text = enc([""])
        cdir = Path(cache_dir) if cache_dir else run.dir / "cache"
        with world.main_first():  # rank 0 encodes the clips into the cache, the others read it
            data = latent_set_for(cfg.data, cfg.vae_dir, "train", cfg.num_clips, vae, enc, cdir)
            test = latent_set_for(cfg.data, cfg.vae_dir, "test", 16, vae, enc, cdir)
    if test.latents.shape[1] != cfg.dit.latent_channels:
        raise ValueError(f"VAE latent channels {test.latents.shape[1]} != dit.latent_channels {cfg.dit.latent_channels}")
    # 2. model
    dit = build_teacher(cfg).to(device, dtype).train()
    n_params = sum(p.numel() for p in dit.parameters())
    ema = EMA(dit, cfg.ema_decay)
    shard_teacher(dit, ema, world, device)

    def samples(step: int) -> None:
        if step % cfg.sample_every == 0 or step == cfg.steps:
            path = write_samples(run, step, ema.shadow, vae, test, null_text, cfg)
            if path is not None:
                tqdm.write(f"samples: {path}")

    # 3-4. loop
    fit(dit, ema, data, null_text, cfg, run, resume=resume, after_step=samples,
        banner=f"teacher: {n_params / 1e6:.2f} M parameters, {len(data)} training clips, task {cfg.task}")
    # 5. the EMA weights are the teacher
    teacher = plain_ema(ema, world, lambda: build_teacher(cfg).to("cpu", dtype))
    if teacher is None:
        return None
    vae_rel = Path(cfg.vae_dir).resolve()
    with atomic_folder(run.dir / "teacher") as tmp:  # written beside, then renamed in
        teacher.save(tmp, task=cfg.task, vae=str(vae_rel), height=cfg.data.height, width=cfg.data.width,
                     num_frames=cfg.data.num_frames, fps=cfg.data.fps, max_text_tokens=cfg.dit.max_text_tokens,
                     sampler={**TEACHER_SAMPLER, "guidance": cfg.guidance})
    print(run.dir / "teacher")
    return teacher
