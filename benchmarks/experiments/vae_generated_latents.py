"""Experiment: fine-tune the shipped context decoder on the shipped generator's latents as well.

Hypothesis: the decoder context path was fitted on VAE encodings of real clips only; the 4-step
generator's latents lie off that set (they move more between latent frames), so decoded generated
videos still judder (ratio 1.30x the data's, against 1.20x on round trips). Generated latents have
no ground-truth frames, so their loss asks for two things a decoding of z must have anyway:

- consistency: the frozen encoder maps the decoded video back to z (|E(D(z)) - z|^2, normalised
  latents). A latent frame fixes only its group's 12x-compressed projection; any decoding whose
  re-encoding is z is an equally valid reading of it.
- smoothness: among those, the one that moves evenly: L1 of the second frame difference
  (x[t+1] - 2 x[t] + x[t-1]), over all frames plus once more where it touches a group boundary.
  Real motion at 8 fps is nearly constant over 3 frames; a decoder that stands still inside a
  group and jumps at its boundary has large second differences exactly there.

Each step also takes the decoder's own real-clip loss (L1 + MSE of the round trip of training
clips, as ``train-vae --decoder-only``), so the round-trip PSNR is held. Generated latents come from
training-split first frames (the benchmark's are held out); crops are taken in latent space (the
decoder is convolutional). Writes OUT/vae; measure it with benchmarks/vae_judder.py.

    OMP_NUM_THREADS=1 python benchmarks/experiments/vae_generated_latents.py --out runs/gen21 --steps 60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from magicdistill.train.vae_decoder import second_difference_loss  # the product's loss, as shipped

ROOT = Path(__file__).resolve().parents[2]


def generated_latents(n: int, seed: int) -> torch.Tensor:
    """The shipped generator's latents for n training-split portraits (seed = seed + index)."""
    from magicdistill.data.synthetic import SyntheticVideos
    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline, model_sampler, read_record, sample_video
    from magicdistill.video import frames_to_tensor

    folder = default_model(False)
    rec = model_sampler(read_record(folder))
    pipe = I2VPipeline.from_dir(folder)
    train = SyntheticVideos(split="train", seed=3)
    out = []
    with torch.no_grad():
        for i in range(n):
            c = train.clip(i, portrait_only=True)
            image = frames_to_tensor(c.frames[0][None])[:, 0][None]
            out.append(sample_video(pipe.dit, pipe.vae, pipe.text_encoder([c.caption]), pipe.null_text, image,
                                    num_frames=pipe.spec.num_frames, generator=torch.Generator().manual_seed(seed + i),
                                    steps=rec["steps"], guidance=rec["guidance"], shift=rec["shift"], decode=False,
                                    sampler=rec["kind"], eta=rec["eta"]))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", default=str(ROOT / "src/magicdistill/checkpoints/tiny/vae"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--latents", type=int, default=64, help="generated latents (training-split first frames)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=8, help="latent crop (x4 pixels)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--smooth", type=float, default=1.0, help="weight of the second-difference loss")
    ap.add_argument("--consistency", type=float, default=0.1, help="weight of |E(D(z)) - z|^2")
    ap.add_argument("--real", type=float, default=1.0, help="weight of the real-clip round-trip loss")
    ap.add_argument("--ctx-only", action="store_true", help="train only dec_ctx and trefine")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    import warnings

    warnings.filterwarnings("ignore")
    from magicdistill.data.synthetic import SyntheticVideos
    from magicdistill.models.vae import load_vae
    from magicdistill.video import frames_to_tensor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "latents.pt"
    t0 = time.perf_counter()
    if cache.exists():
        lat = torch.load(cache)
    else:
        lat = generated_latents(args.latents, 1000)
        torch.save(lat, cache)
    print(f"{len(lat)} generated latents {tuple(lat.shape[1:])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    vae = load_vae(args.init)
    model = vae.model
    r = model.config.temporal_ratio
    for p in model.encoder_parameters():
        p.requires_grad_(False)
    params = ([p for n, p in model.named_parameters() if n.startswith(("dec_ctx", "trefine"))] if args.ctx_only
              else model.decoder_parameters())
    train = SyntheticVideos(split="train", seed=0)
    pool = np.stack([train.clip(i).frames for i in range(128)])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()
    log = open(out / "log.jsonl", "w")
    for step in range(args.steps):
        rng = np.random.default_rng([args.seed, step])
        c = args.crop
        # real clips: the decoder's own round-trip loss on a crop
        x = torch.stack([frames_to_tensor(pool[i]) for i in rng.integers(0, len(pool), args.batch)])
        top, left = (int(rng.integers(0, x.shape[-1] // 4 - c + 1)) * 4 for _ in range(2))
        x = x[..., top:top + 4 * c, left:left + 4 * c]
        with torch.no_grad():
            zr = model.encode(x).latent_dist.sample()
        rec = model.decode(zr).sample
        real = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        # generated latents: consistency + smoothness on a latent crop
        z = lat[rng.integers(0, len(lat), args.batch)]
        top, left = (int(rng.integers(0, z.shape[-1] - c + 1)) for _ in range(2))
        z = z[..., top:top + c, left:left + c]
        v = vae.decode(z)
        smooth = second_difference_loss(v, r)
        cons = (vae.encode(v) - z)[..., 1:-1, 1:-1].pow(2).mean()  # interior: crop edges see padding
        loss = args.real * real + args.smooth * smooth + args.consistency * cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        row = {"step": step + 1, "real": real.item(), "smooth": smooth.item(), "consistency": cons.item(),
               "s": round(time.perf_counter() - t0, 1)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        if step % 10 == 0 or step + 1 == args.steps:
            print(row, flush=True)
    model.eval()
    vae.save(out / "vae")
    (out / "args.json").write_text(json.dumps(vars(args), indent=1))
    print(out / "vae")


if __name__ == "__main__":
    main()
