"""How well a model denoises held-out clips in one step, per noise level.

Prints, for each sigma, E||x0_hat - x0||^2 over the predicted latent frames divided by the
latents' variance (0 = perfect, 1 = no better than predicting the mean), averaged over
--clips held-out synthetic clips with fixed noise. A diagnostic of teacher quality that does
not depend on the sampler.

--channels K adds, per channel group (< K and >= K, each channel relative to its own variance), the
model's error next to the trivial denoiser's x_t / (1 - sigma), which keeps the input's detail and
its noise: a model worse than it at small sigma discards detail it was shown (docs/DECISIONS.md).

--by-motion instead splits held-out *portraits* by whether the head sways or nods and prints, per sigma,
the detail-channel (>= --channels, default 3) error of each group, over 2 noise draws: the measure that
tracks the moving-head defect (docs/research/LOG.md, "Stop 11"; still heads score ~0.02).

    python benchmarks/denoise_error.py [--model DIR] [--clips 16] [--channels 3] [--sigmas 0.05 0.1 ...]
    python benchmarks/denoise_error.py --by-motion [--model DIR] [--sigmas 0.2 0.35 0.5 0.7]
"""

from __future__ import annotations

import argparse

import torch

from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
from magicdistill.flow import add_noise, x0_from_v
from magicdistill.demo import head_moves, portrait_clips
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, conditions
from magicdistill.config import DataConfig
from magicdistill.video import frames_to_tensor


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHIPPED_DIR / "teacher"))
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--channels", type=int, default=None, help="split channels at K: per-group errors + trivial")
    ap.add_argument("--sigmas", type=float, nargs="+", default=None, help="[default: 0.1 0.3 0.5 0.7 0.9 1.0; "
                                                                          "--by-motion: 0.2 0.35 0.5 0.7]")
    ap.add_argument("--by-motion", action="store_true", help="detail error on moving vs still heads (portraits)")
    args = ap.parse_args()
    pipe = I2VPipeline.from_dir(args.model)
    if args.by_motion:
        return by_motion(pipe, args)
    args.sigmas = args.sigmas or [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    src = SyntheticVideos(SyntheticVideoConfig.of(DataConfig.of_model(pipe.dit.meta)), "test", seed=1)
    clips = [src.clip(i) for i in range(args.clips)]
    video = torch.stack([frames_to_tensor(c.frames) for c in clips])
    x0 = pipe.vae.encode(video)
    image = video[:, :, 0]
    text = pipe.text_encoder([c.caption for c in clips])
    cond = pipe.dit.condition(text, image, pipe.vae.encode(video[:, :, :1]) if pipe.dit.is_i2v else None)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    var = x0[:, :, 1:].var().item()
    print(f"model {args.model}, {args.clips} held-out clips, latent variance {var:.4f}")
    k = args.channels
    groups = "" if k is None else f" {'model ch<' + str(k):>11} {'ch>=' + str(k):>7} {'trivial ch<' + str(k):>13} {'ch>=' + str(k):>7}"
    print(f"{'sigma':>6} {'x0 error / variance':>20}{groups}")
    chan_var = channel_variance(x0)
    for s in args.sigmas:
        sigma = torch.full((len(clips),), s)
        x_t = add_noise(x0, eps, sigma)
        x0_hat = x0_from_v(x_t, pipe.dit(x_t, sigma, cond), sigma)
        line = f"{s!s:>6} {(x0_hat - x0)[:, :, 1:].pow(2).mean().item() / var:>20.3f}"
        if k is not None:
            rel = lambda est: ((est - x0)[:, :, 1:].pow(2).transpose(0, 1).flatten(1).mean(1) / chan_var)  # noqa: E731
            m = rel(x0_hat)
            t = rel(x_t / (1 - s)) if s < 1 else torch.full_like(m, float("nan"))  # no signal left at 1
            line += f" {m[:k].mean():>11.3f} {m[k:].mean():>7.3f} {t[:k].mean():>13.3f} {t[k:].mean():>7.3f}"
        print(line)


def channel_variance(x0: torch.Tensor) -> torch.Tensor:
    """(C,) variance of each latent channel over the predicted frames (all but the first) of every clip."""
    return x0[:, :, 1:].transpose(0, 1).flatten(1).var(1)


def by_motion(pipe: I2VPipeline, args) -> None:
    clips = portrait_clips(pipe.dit.meta, args.clips, 0)
    moving = torch.tensor([head_moves(c) for c in clips])
    video = torch.stack([frames_to_tensor(c.frames) for c in clips])
    x0 = pipe.vae.encode(video)
    cond, _, _ = conditions(pipe.dit, pipe.vae, pipe.text_encoder([c.caption for c in clips]), pipe.null_text,
                            video[:, :, 0])
    k = 3 if args.channels is None else args.channels
    chan_var = channel_variance(x0).view(1, -1, 1, 1, 1)[:, k:]
    print(f"model {args.model}, {args.clips} held-out portraits ({int(moving.sum())} with head motion): "
          f"one-step x0 error / variance over latent channels >= {k}, 2 noise draws")
    for s in args.sigmas or [0.2, 0.35, 0.5, 0.7]:
        sigma = torch.full((len(clips),), s)
        err = []
        for seed in range(2):
            x_t = add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)), sigma)
            x0_hat = x0_from_v(x_t, pipe.dit(x_t, sigma, cond), sigma)
            err.append(((x0_hat - x0)[:, k:, 1:].pow(2) / chan_var).mean((1, 2, 3, 4)))
        err = torch.stack(err).mean(0)
        print(f"sigma {s:g}: moving heads {err[moving].mean():.3f}  still heads {err[~moving].mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
