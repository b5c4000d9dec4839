"""``magicdistill train-vae``: fit the embedded default's causal video VAE on synthetic clips.

1. PCA-initialise the linear path from a batch of training clips; 2. train with L1 + MSE
reconstruction + a small KL (a latent-diffusion VAE objective without the GAN and LPIPS terms,
whose backbones cannot be downloaded here); 3. set the latent normalisation (per-channel mean; one
global std or one per channel, ``normalisation``); 4. report held-out PSNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_folder
from ..config import DataConfig, VAETrainConfig
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..models.patch_vae import CausalPatchVAE
from ..models.vae import VideoVAE, load_vae
from ..video import frames_to_tensor
from .run import Run, closes_runs, lr_schedule


def vae_batch(pool: torch.Tensor, step: int, cfg: VAETrainConfig) -> torch.Tensor:
    """The batch for ``step`` is fixed by (seed, step): resuming replays the same data order.
    ``pool`` is (N, T, H, W, 3) uint8 clips rendered once."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.integers(0, len(pool), cfg.batch_size)
    start = int(rng.integers(0, pool.shape[1] - cfg.clip_frames + 1))
    return torch.stack([frames_to_tensor(pool[i, start:start + cfg.clip_frames].numpy()) for i in idx])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR (dB) of videos in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


@torch.no_grad()
def calibrate(vae: VideoVAE, train: SyntheticVideos, test: SyntheticVideos, n: int = 64,
              normalisation: str = "global") -> float:
    """Latent normalisation from training clips: per-channel mean and either one global std or a std
    per channel, from the first ``n`` training clips (a multiple of 8: they are encoded 8 at a time);
    returns held-out full-clip PSNR. Why both exist: docs/DECISIONS.md ("One global latent std, not
    per-channel standardisation"). "global" keeps the PCA channels' natural spectrum (stds spanning
    14x), so the low-variance channels, which carry the motion inside each 4-frame group, lose their
    signal to the noise at small sigma and weigh little in the loss; "per_channel" (as Wan's VAE)
    gives every channel unit variance."""
    if normalisation not in ("global", "per_channel"):
        raise ValueError(f"normalisation must be 'global' or 'per_channel', got {normalisation!r}")
    if n < 8 or n % 8:
        raise ValueError(f"calibration clips must be a positive multiple of 8, got {n}")
    vae.set_normalisation(torch.zeros(vae.latent_channels), torch.ones(vae.latent_channels))
    z = torch.cat([vae.encode(torch.stack([frames_to_tensor(train.clip(i).frames) for i in range(j, j + 8)]))
                   for j in range(0, n, 8)])
    mean = z.mean(dim=(0, 2, 3, 4))
    centred = z - mean.view(1, -1, 1, 1, 1)
    std = centred.std(dim=(0, 2, 3, 4)) if normalisation == "per_channel" else centred.std().expand(vae.latent_channels)
    vae.set_normalisation(mean, std.clone())
    video = torch.stack([frames_to_tensor(test.clip(i).frames) for i in range(32)])
    return torch.cat([psnr(vae.decode(vae.encode(c)), c) for c in video.split(8)]).mean().item()


@closes_runs
def train_vae(cfg: VAETrainConfig, out: str, *, resume: bool = False) -> VideoVAE:
    torch.manual_seed(cfg.seed)
    run = Run(out, cfg, resume=resume)
    source = SyntheticVideos(SyntheticVideoConfig.of(cfg.data), "train", cfg.data.seed)
    model = CausalPatchVAE(cfg.latent_channels, cfg.spatial_ratio, 4, cfg.hidden, cfg.blocks)
    pool = torch.from_numpy(np.stack([source.clip(i).frames for i in tqdm(range(cfg.pool_clips), desc="rendering clips")]))
    # 1. PCA initialisation from clips of the training pool
    model.init_pca(torch.stack([frames_to_tensor(pool[i].numpy()) for i in range(min(cfg.pca_clips, cfg.pool_clips))]))
    vae = VideoVAE(model).to(cfg.device)
    vae.check_frames(cfg.clip_frames)
    vae.check_frames(cfg.data.num_frames)
    opt = torch.optim.AdamW(vae.model.parameters(), lr=cfg.lr, weight_decay=0.0)
    start = run.resume({"vae": vae.model}, {"vae": opt}) if resume else 0
    sched = lr_schedule(opt, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * (1 - s / cfg.steps)), start)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-vae", unit="it")
    for step in bar:
        x = vae_batch(pool, step, cfg).to(cfg.device)
        post = vae.model.encode(x).latent_dist
        rec = vae.model.decode(post.sample()).sample
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + cfg.kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.3f}")
        run.log(step + 1, l1=l1.item(), kl=kl.item(), lr=sched.get_last_lr()[0])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            run.save(step + 1, {"vae": vae.model}, {"vae": opt})
    vae.eval()
    test_psnr = calibrate(vae, source, SyntheticVideos(SyntheticVideoConfig.of(cfg.data), "test", cfg.data.seed),
                          normalisation=cfg.normalisation)
    vae.save(run.dir / "vae")
    run.log(cfg.steps, test_psnr_full_clips=test_psnr)
    print(f"held-out full-clip PSNR {test_psnr:.2f} dB")
    print(run.dir / "vae")
    return vae


def recalibrate_vae(vae_dir: str | Path, out: str | Path, normalisation: str, data: DataConfig = DataConfig(),
                    clips: int = 64) -> Path:
    """A copy of the VAE at ``vae_dir`` in ``out`` with its latent normalisation recomputed (same
    weights): what `magicdistill calibrate-vae` runs. A teacher is tied to the normalisation it was
    trained with, so this makes a new VAE folder rather than changing one in place."""
    vae = load_vae(vae_dir).eval()
    if not isinstance(vae.model, CausalPatchVAE):
        raise ValueError(f"{vae_dir} is not the embedded default's CausalPatchVAE; real VAEs ship their own "
                         "normalisation")
    src = SyntheticVideoConfig.of(data)
    psnr_db = calibrate(vae, SyntheticVideos(src, "train", data.seed), SyntheticVideos(src, "test", data.seed), clips,
                        normalisation)
    with atomic_folder(out) as tmp:
        vae.save(tmp)
    print(f"held-out full-clip PSNR {psnr_db:.2f} dB (the weights are unchanged; only the normalisation is new)")
    return Path(out)
