"""``magicdistill train --init-from FOLDER`` on a real family's folder (Wan / HunyuanVideo, T2V or I2V, e.g.
one written by ``convert-i2v``): fine-tune that folder's transformer with flow matching.

The paper's route to an image-to-video model (Magic 1-For-1): convert a T2V model to I2V by the channel
concat with zero-initialised new input weights (``convert-i2v``), then fine-tune it here, so the new
channels learn to read the first frame.

Same loss and sampling as the tiny teacher's ``train`` (train/teacher.py, reused): sigma from the shifted
logit-normal, x_sigma = (1 - sigma) x0 + sigma eps, MSE to the velocity eps - x0; AdamW with warm-up and
cosine decay, EMA, gradient clipping, the batch and noise of step k seeded by (seed, k) so a resumed run
continues exactly. Per family:

- data: the synthetic portrait clips rendered at ``--height/--width/--frames`` and encoded with *this*
  folder's VAE and text encoder(s) (distill/real_teacher.py's path; HunyuanVideo-I2V reads each prompt with
  its clip's first frame); or ``--data CACHE``, the user's clips cached by ``magicdistill cache --teacher``
  with this folder's own VAE and text encoders (checked as ``distill --data`` checks them), read lazily at the
  cache's clip format, the text encoders then never loaded;
- first frame: Wan I2V gets the pipeline's mask + VAE(image + zero frames) (and CLIP tokens when the model
  has them); HunyuanVideo-I2V the image latent in its concat channels;
- text dropout (for CFG) as ``--config``'s ``text_dropout``, except for a guidance-embedded model
  (HunyuanVideo T2V): it has no unconditional branch, its scale is an input fixed at the folder's guidance;
  image dropout does not apply (the first frame is the model's input, not an optional token set).

The result, ``OUT/teacher``, is a derived folder: the trained ``transformer/`` plus ``magicdistill.json``
naming the source folder (relative path) for every other component, which ``generate`` samples and plain
diffusers loads (``DiffusionPipeline.from_pretrained(base, transformer=...)``, or ``export``).

Under ``torchrun`` the transformer and its EMA copy are sharded with FSDP2, each process training on its rows
of every global batch (as the tiny teacher: docs/SCALING.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_folder
from ..config import TeacherTrainConfig, torch_dtype
from ..data.cache_reader import CachedClips
from ..distill.cached_data import open_cache_for_real_teacher
from ..distill.real_teacher import load_real_teacher
from ..generate_real import video_size
from ..models.folder import ModelFolder, read_json, read_model_folder
from .distributed import World
from .ema import EMA
from .run import Run, closes_runs
from .teacher import fit, latent_set_for, plain_ema, shard_teacher


def real_train_config(cfg: TeacherTrainConfig, *, height: int | None, width: int | None, frames: int | None,
                      task_given: bool) -> tuple[ModelFolder, TeacherTrainConfig, CachedClips | None]:
    """The folder, the run's resolved config (its clip format, task and VAE are the folder's, or the cache's
    format with ``--data``) and the opened cache, checked before anything loads."""
    folder = read_model_folder(cfg.init_from)
    if folder.layout == "tiny":
        raise ValueError(f"{cfg.init_from} is not a diffusers folder")
    if folder.record.get("quantization"):
        raise ValueError(f"--init-from {cfg.init_from} is int8-quantized: train its unquantized source")
    if task_given and cfg.task != folder.task:
        hint = " (convert it first: magicdistill convert-i2v)" if folder.task == "t2v" else ""
        raise ValueError(f"--task {cfg.task}: {cfg.init_from} is a {folder.task} model ({folder.pipeline}){hint}")
    cached = open_cache_for_real_teacher(cfg.data_cache, folder) if cfg.data_cache else None
    if cached is None:
        h, w, n = video_size(folder, height, width, frames)
        fps = folder.video.fps
    else:  # the clips are the cache's: its format is the run's
        if not cached.has_clips:
            raise ValueError(f"--data {cached.path} is a prompts-only cache; training a teacher needs clips")
        rule = cached.rule
        h, w, n, fps = rule["height"], rule["width"], rule["num_frames"], rule["fps"]
        if (height or h, width or w, frames or n) != (h, w, n):
            raise ValueError(f"--height/--width/--frames: the clips of --data {cached.path} are {h}x{w}x{n}; leave "
                             "them out or cache again at that size")
    data = {**cfg.data.model_dump(), "height": h, "width": w, "num_frames": n, "fps": fps}
    fields = {"task": folder.task, "data": data, "vae_dir": str(folder.component_path("vae"))}
    if read_json(folder.component_path("transformer") / "config.json").get("guidance_embeds"):
        fields["text_dropout"] = 0.0  # the scale is an input, no CFG pair: nothing to learn from dropped text
    return folder, TeacherTrainConfig.strict_update(cfg, **fields), cached


def train_real_teacher(cfg: TeacherTrainConfig, out: str | Path, **kwargs) -> Path:
    """One process, or each of N started by ``torchrun`` (FSDP2 over them: docs/SCALING.md)."""
    with World.joined(cfg.device) as world:
        return _train_real_teacher(cfg, out, world=world, **kwargs)


@closes_runs
def _train_real_teacher(cfg: TeacherTrainConfig, out: str | Path, *, resume: bool = False,
                        cache_dir: str | Path | None = None, overwrite: bool = False, height: int | None = None,
                        width: int | None = None, frames: int | None = None, task_given: bool = False,
                        world: World = World()) -> Path:
    folder, cfg, cached = real_train_config(cfg, height=height, width=width, frames=frames, task_given=task_given)
    world.rows(cfg.batch_size)  # several processes: a batch they cannot split equally stops every one of them here
    torch.manual_seed(cfg.seed)
    device, dtype = world.device(cfg.device), torch_dtype(cfg.dtype)
    meta = {"height": cfg.data.height, "width": cfg.data.width, "num_frames": cfg.data.num_frames,
            "fps": cfg.data.fps}
    run = Run(out, cfg, resume=resume, may_change=("steps",), length_key="steps", overwrite=overwrite,
              identity={"model": str(folder.path.resolve())}, world=world)
    # 1. the folder's transformer(s), VAE and encoders (with a cache, no text encoder: it holds the embeddings)
    dit, vae, enc, vae_dir = load_real_teacher(folder, meta, device=device, dtype=dtype, text=cached is None)
    if dit.guidance_embeds:  # trained at the scale the folder samples with
        dit.embedded_guidance = folder.sampler.guidance
    # 2. data: the synthetic clips, encoded once with this folder's own VAE and text encoder(s); or the cache
    if cached is None:
        null_text = enc([""])
        cdir = Path(cache_dir) if cache_dir else run.dir / "cache"
        with world.main_first():  # rank 0 encodes the clips into the cache, the others read it
            data = latent_set_for(cfg.data, str(vae_dir), "train", cfg.num_clips, vae, enc, cdir)
        channels = data.latents.shape[1]
    else:
        null_text, data, channels = cached.null_text().to(device), cached, cached.latent_shape[0]
    if channels != dit.latent_channels:
        raise ValueError(f"{folder.path}: its VAE has {channels} latent channels, its transformer "
                         f"{dit.latent_channels}")
    # 3. what trains: every transformer weight (both experts of a two-expert folder)
    dit.requires_grad_(True).train()
    n_params = sum(p.numel() for p in dit.parameters() if p.requires_grad)
    ema = EMA(dit, cfg.ema_decay)
    shard_teacher(dit, ema, world, device)
    fit(dit, ema, data, null_text, cfg, run, resume=resume,
        banner=f"{folder.pipeline}: {n_params / 1e6:.2f} M trained parameters, {len(data)} training clips at "
               f"{cfg.data.height}x{cfg.data.width}x{cfg.data.num_frames}")
    # 4. the EMA weights, as a derived folder over the source (its sampler and encoders stay the source's)
    final = run.dir / "teacher"
    # several processes: gathered into a fresh copy of the folder's transformer(s) on rank 0
    teacher = plain_ema(ema, world, lambda: load_real_teacher(folder, meta, device="cpu", dtype=dtype, text=False)[0])
    if teacher is None:
        return final
    with atomic_folder(final) as tmp:
        teacher.save(tmp, method="train", steps_trained=cfg.steps, **meta)
    print(final)
    return final
