"""Teachers (or any model folders) side by side on the same held-out portraits and noise.

For each model: samples the first --clips held-out portrait clips (test-split identities) with the
model's own recorded sampler (50 steps, its CFG guidance and shift; --guidance overrides), then prints
- the bench's metrics against the ground truth through the VAE (eval.suite.evaluate_videos with the
  shipped probe: FVD, FID, the VBench-style average, motion_ratio);
- PSNR to the ground truth;
- blockiness: mean |horizontal + vertical pixel step| across the DiT's token borders (every 8 px:
  patch 2 on the VAE's 4x-downsampled latent) divided by the same across the VAE's patch borders
  that lie inside a token (the 4 px in between), on frames 1..T. Both kinds of border are VAE
  patch borders, so the VAE's own 4-px structure cancels and the ratio isolates the DiT's tokens.
  The ground truth's value is printed alongside: above it = the token patchwork of the known
  defect (docs/DECISIONS.md). Also printed apart for clips whose head moves (sways or nods) and
  clips whose head keeps still: the patchwork follows head motion.
--guidance and --shift override every model's recorded sampler.
--sheet writes a contact sheet: per clip, truth then each model, every 2nd frame.
--split train samples training identities instead (same clips for every model): is a failure
about unseen faces or about the motion?

    OMP_NUM_THREADS=1 python benchmarks/compare_teachers.py MODEL_DIR [MODEL_DIR ...] [--clips 16] [--split test]
        [--sheet S.png]
"""

from __future__ import annotations

import argparse

import torch

from magicdistill.demo import head_moves, portrait_clips, psnr
from magicdistill.eval.probe import load_probe
from magicdistill.eval.suite import evaluate_videos
from magicdistill.pipeline import I2VPipeline, model_sampler, sample_clips
from magicdistill.video import contact_sheet, frames_to_tensor, tensor_to_frames

TOKEN_PX = 8


def blockiness(videos: torch.Tensor, token: int = TOKEN_PX) -> float:
    """(B, 3, T, H, W): mean |step| across token borders / across VAE patch borders inside tokens, frames 1..T."""
    x = videos[:, :, 1:].float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((0, 1, 2, 3))  # (W-1,) step between column j and j+1
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((0, 1, 2, 4))  # (H-1,)
    at = lambda d, k: d[(torch.arange(d.numel()) % token) == k].mean()  # noqa: E731
    return ((at(dx, token - 1) + at(dy, token - 1)) / (at(dx, token // 2 - 1) + at(dy, token // 2 - 1))).item()


def blockiness_line(videos: torch.Tensor, moving: torch.Tensor) -> str:
    parts = [f"blockiness {blockiness(videos):.3f}"]
    for name, sel in (("moving heads", moving), ("still heads", ~moving)):
        if sel.any():
            parts.append(f"{name} {blockiness(videos[sel]):.3f}")
    return " | ".join(parts)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", default=None)
    ap.add_argument("--sheet-clips", type=int, default=6)
    ap.add_argument("--guidance", type=float, default=None, help="for every model [default: each model's own]")
    ap.add_argument("--shift", type=float, default=None, help="sampling shift for every model [default: each model's own]")
    ap.add_argument("--eta", type=float, default=None, help="stochastic Euler for every model [default: each model's own]")
    ap.add_argument("--split", choices=("test", "train"), default="test")
    args = ap.parse_args()
    probe = load_probe()
    pipes = [I2VPipeline.from_dir(m) for m in args.models]
    clips = portrait_clips(pipes[0].dit.meta, args.clips, 0, args.split)
    video, captions = torch.stack([frames_to_tensor(c.frames) for c in clips]), [c.caption for c in clips]
    moving = torch.tensor([head_moves(c) for c in clips])
    truth = pipes[0].vae.decode(pipes[0].vae.encode(video))
    print(f"{args.clips} {'held-out' if args.split == 'test' else 'training-identity'} portraits "
          f"({int(moving.sum())} with head motion), sampling seed {args.seed}; ground truth through the VAE: "
          f"{blockiness_line(truth, moving)}")
    rows = [truth]
    for name, pipe in zip(args.models, pipes):
        given = {"guidance": args.guidance, "shift": args.shift, "eta": args.eta}
        rec = {**model_sampler(pipe.dit.meta), **{k: v for k, v in given.items() if v is not None}}
        text = pipe.text_encoder(captions)
        out = sample_clips(pipe.dit, pipe.vae, text, pipe.null_text, video[:, :, 0], num_frames=video.shape[2],
                           seed=args.seed, steps=rec["steps"], guidance=rec["guidance"], shift=rec["shift"], eta=rec["eta"])
        m = evaluate_videos(out, truth, extractor=probe, cond_images=video[:, :, 0])
        print(f"{name}: {rec['steps']} steps, guidance {rec['guidance']:g}, shift {rec['shift']:g}, eta {rec['eta']:g} | "
              f"FVD {m['fvd']:.1f}  FID {m['fid']:.2f}  average {m['average']:.4f}  motion_ratio {m['motion_ratio']:.3f}  "
              f"PSNR {psnr(out, truth):.2f} dB  {blockiness_line(out, moving)}", flush=True)
        rows.append(out)
    if args.sheet:
        n = min(args.sheet_clips, args.clips)
        contact_sheet([tensor_to_frames(r[i]) for i in range(n) for r in rows], every=2, zoom=2).save(args.sheet)
        print(args.sheet)


if __name__ == "__main__":
    main()
