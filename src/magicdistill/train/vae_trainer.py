"""``magicdistill train-vae``: fit the embedded default's causal video VAE on synthetic clips.

1. PCA-initialise the linear path from a batch of training clips; 2. train with L1 + MSE
reconstruction + a small KL (a latent-diffusion VAE objective without the GAN and LPIPS terms,
whose backbones cannot be downloaded here); 3. set per-channel latent normalisation so the
diffusion model sees unit-variance channels; 4. report held-out PSNR.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..config import VAETrainConfig
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..models.patch_vae import CausalPatchVAE
from ..models.vae import VideoVAE
from ..video import frames_to_tensor
from .run import Run


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
def calibrate(vae: VideoVAE, train: SyntheticVideos, test: SyntheticVideos, n: int = 64) -> float:
    """Latent normalisation from training clips: per-channel mean, one global std; returns held-out
    full-clip PSNR. A single std keeps the channels' natural spectrum (the PCA channels' stds span
    14x): per-channel standardisation would make the DiT predict fine edge channels as loudly as the
    coarse layout, and the teacher measurably failed to form faces that way (docs/DECISIONS.md)."""
    vae.set_normalisation(torch.zeros(vae.latent_channels), torch.ones(vae.latent_channels))
    z = torch.cat([vae.encode(torch.stack([frames_to_tensor(train.clip(i).frames) for i in range(j, j + 8)]))
                   for j in range(0, n, 8)])
    mean = z.mean(dim=(0, 2, 3, 4))
    std = (z - mean.view(1, -1, 1, 1, 1)).std()
    vae.set_normalisation(mean, std.expand(vae.latent_channels).clone())
    video = torch.stack([frames_to_tensor(test.clip(i).frames) for i in range(32)])
    return torch.cat([psnr(vae.decode(vae.encode(c)), c) for c in video.split(8)]).mean().item()


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * (1 - s / cfg.steps)))
    start = run.resume({"vae": vae.model}, {"vae": opt}) if resume else 0
    for _ in range(start):
        sched.step()
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
    test_psnr = calibrate(vae, source, SyntheticVideos(SyntheticVideoConfig.of(cfg.data), "test", cfg.data.seed))
    vae.save(run.dir / "vae")
    run.log(cfg.steps, test_psnr_full_clips=test_psnr)
    print(f"held-out full-clip PSNR {test_psnr:.2f} dB")
    print(run.dir / "vae")
    return vae
