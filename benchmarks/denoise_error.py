"""How well a model denoises held-out clips in one step, per noise level.

Prints, for each sigma, E||x0_hat - x0||^2 over the predicted latent frames divided by the
latents' variance (0 = perfect, 1 = no better than predicting the mean), averaged over
--clips held-out synthetic clips with fixed noise. A diagnostic of teacher quality that does
not depend on the sampler.

--channels K adds, per channel group (< K and >= K, each channel relative to its own variance), the
model's error next to the trivial denoiser's x_t / (1 - sigma), which keeps the input's detail and
its noise: a model worse than it at small sigma discards detail it was shown (docs/DECISIONS.md).

    python benchmarks/denoise_error.py [--model DIR] [--clips 16] [--channels 3] [--sigmas 0.05 0.1 ...]
"""

from __future__ import annotations

import argparse

import torch

from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
from magicdistill.flow import add_noise, x0_from_v
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline
from magicdistill.config import DataConfig
from magicdistill.video import frames_to_tensor


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHIPPED_DIR / "teacher"))
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--channels", type=int, default=None, help="split channels at K: per-group errors + trivial")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    args = ap.parse_args()
    pipe = I2VPipeline.from_dir(args.model)
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
    chan_var = x0[:, :, 1:].transpose(0, 1).flatten(1).var(1)
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


if __name__ == "__main__":
    main()
