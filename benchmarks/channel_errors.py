"""Which latent channels a teacher gets wrong (docs/research/LOG.md).

Samples the first --clips held-out portraits (50 Euler steps, guidance 2, shift 5, noise seed = clip
index) and prints per latent channel, over latent frames 1..: the data's std, the sample's std, and
the squared error to the truth relative to that channel's variance, for the sample and for the
"still" prediction (the image latent repeated). Errors are relative per channel, so the numbers do
not depend on the VAE's latent normalisation and two teachers with different ones compare directly.

--sheet writes, per clip: truth | sample | the sample with channels >= --split frozen at the image's
| the truth's channels < --split with the sample's channels >= --split | the truth with i.i.d.
Gaussian noise in channels >= --split, per channel as large as the sample's error there. If the
third row is clean and the fourth is not, the patchwork lives in the high channels; if the fifth
shows grain rather than blocks, it is the errors' coherence over a token, not their size.

    OMP_NUM_THREADS=1 python benchmarks/channel_errors.py [--model DIR] [--clips 4] [--split 3] [--sheet S.png]
"""

from __future__ import annotations

import argparse

import torch

from magicdistill.demo import held_out_clips
from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, sample_clips
from magicdistill.video import contact_sheet, tensor_to_frames


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(SHIPPED_DIR / "teacher"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--split", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--sheet", default=None)
    args = ap.parse_args()
    pipe = I2VPipeline.from_dir(args.model)
    video, captions = held_out_clips(pipe.dit.meta, args.clips, 0)
    text = pipe.text_encoder(captions)
    x0 = pipe.vae.encode(video)
    lat = sample_clips(pipe.dit, pipe.vae, text, pipe.null_text, video[:, :, 0], num_frames=video.shape[2], steps=50,
                       guidance=args.guidance, shift=5.0, decode=False)
    later, dims = (slice(None), slice(None), slice(1, None)), (0, 2, 3, 4)
    var = x0[later].var(dims)
    still = x0[:, :, :1].expand_as(x0)
    fmt = lambda t: " ".join(f"{v:5.2f}" for v in t.tolist())  # noqa: E731
    print(f"model {args.model}: {args.clips} held-out portraits, 50 steps, guidance {args.guidance:g}; per channel 0..{x0.shape[1] - 1}")
    print(f"data std           {fmt(var.sqrt())}")
    print(f"sample std         {fmt(lat[later].std(dims))}")
    print(f"still err / var    {fmt((still - x0)[later].pow(2).mean(dims) / var)}")
    print(f"sample err / var   {fmt((lat - x0)[later].pow(2).mean(dims) / var)}")
    k = args.split
    for name, sel in ((f"channels < {k}", slice(None, k)), (f"channels >= {k}", slice(k, None))):
        err = ((lat - x0)[:, sel, 1:].pow(2).mean(dims) / var[sel]).mean().item()
        print(f"mean sample err / var over {name}: {err:.3f}")
    if args.sheet:
        rows = []
        err_std = (lat - x0)[later].pow(2).mean(dims).sqrt().view(1, -1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) * err_std
        for i in range(args.clips):
            grain = x0[i:i + 1].clone()
            grain[:, k:, 1:] += noise[i:i + 1, k:, 1:]
            frozen = lat[i:i + 1].clone()
            frozen[:, k:, 1:] = x0[i:i + 1, k:, :1]
            mixed = x0[i:i + 1].clone()
            mixed[:, k:, 1:] = lat[i:i + 1, k:, 1:]
            rows += [tensor_to_frames(pipe.vae.decode(z)[0]) for z in (x0[i:i + 1], lat[i:i + 1], frozen, mixed, grain)]
        contact_sheet(rows, every=2, zoom=2).save(args.sheet)
        print(args.sheet)


if __name__ == "__main__":
    main()
