"""``magicdistill train-vae``: fit the embedded default's causal video VAE on synthetic clips.

Loss: L1 reconstruction + small KL (a standard latent-diffusion VAE objective without the GAN
and LPIPS terms, whose backbones cannot be downloaded here). Trained on short windows of
``clip_frames`` frames at full frame size: the causal convolutions are local in time, so a VAE
trained on 5-frame windows encodes 17-frame clips the same way (checked by the test split
reconstruction reported at the end). Full frames (not crops) keep GroupNorm statistics equal
between training and use.

After training, the latent scale is set so normalised latents have unit std over a held-out
batch: the diffusion model then sees data at the scale its noise schedule assumes.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..config import VAETrainConfig
from ..data.synthetic import SyntheticVideoConfig, SyntheticVideos
from ..models.vae import VideoVAE, tiny_hunyuan_vae
from ..video import frames_to_tensor
from .run import Run


def synthetic_config(data) -> SyntheticVideoConfig:
    return SyntheticVideoConfig(height=data.height, width=data.width, num_frames=data.num_frames, fps=data.fps,
                                general_fraction=data.general_fraction)


def vae_batch(source: SyntheticVideos, step: int, cfg: VAETrainConfig) -> torch.Tensor:
    """The batch for ``step`` is fixed by (seed, step): resuming replays the same data order."""
    rng = np.random.default_rng([cfg.seed, step])
    clips = []
    for i in range(cfg.batch_size):
        frames = source.clip(step * cfg.batch_size + i).frames
        start = int(rng.integers(0, frames.shape[0] - cfg.clip_frames + 1))
        clips.append(frames_to_tensor(frames[start:start + cfg.clip_frames]))
    return torch.stack(clips)


@torch.no_grad()
def calibrate_scale(vae: VideoVAE, source: SyntheticVideos, n: int = 32) -> tuple[float, float]:
    """Set scaling_factor = 1/std of raw latents; return (scale, test PSNR of full-length clips)."""
    vae.model.register_to_config(scaling_factor=1.0)
    vae.scale.fill_(1.0)
    video = torch.stack([frames_to_tensor(source.clip(i).frames) for i in range(n)])
    zs, psnrs = [], []
    for chunk in video.split(8):
        z = vae.encode(chunk)
        zs.append(z)
        rec = vae.decode(z)
        mse = ((rec - chunk) / 2).pow(2).flatten(1).mean(1)
        psnrs.append(-10 * torch.log10(mse))
    scale = 1.0 / torch.cat(zs).std().item()
    vae.model.register_to_config(scaling_factor=scale)
    vae.scale.fill_(scale)
    return scale, torch.cat(psnrs).mean().item()


def train_vae(cfg: VAETrainConfig, out: str, *, resume: bool = False) -> VideoVAE:
    torch.manual_seed(cfg.seed)
    run = Run(out, cfg, resume=resume)
    vae = VideoVAE(tiny_hunyuan_vae(cfg.latent_channels, cfg.block_out_channels, cfg.spatial_ratio)).to(cfg.device)
    vae.check_frames(cfg.clip_frames)
    vae.check_frames(cfg.data.num_frames)
    opt = torch.optim.AdamW(vae.model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * (1 - s / cfg.steps)))
    start = run.resume({"vae": vae.model}, {"vae": opt}) if resume else 0
    for _ in range(start):
        sched.step()
    source = SyntheticVideos(synthetic_config(cfg.data), "train", cfg.data.seed)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-vae", unit="it")
    for step in bar:
        x = vae_batch(source, step, cfg).to(cfg.device)
        post = vae.model.encode(x).latent_dist
        rec = vae.model.decode(post.sample()).sample
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + cfg.kl_weight * kl * x[0].numel()
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
    scale, psnr = calibrate_scale(vae, SyntheticVideos(synthetic_config(cfg.data), "test", cfg.data.seed))
    vae.save(run.dir / "vae")
    run.log(cfg.steps, latent_scale=scale, test_psnr_full_clips=psnr)
    print(f"latent scale {scale:.4f}; held-out full-clip PSNR {psnr:.2f} dB")
    print(run.dir / "vae")
    return vae
