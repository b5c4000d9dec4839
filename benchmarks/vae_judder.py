"""Group-boundary judder of the causal VAE, side by side for several VAE folders, in one run.

For each VAE (``--vae``, comma-separated; ``shipped`` = checkpoints/tiny/vae, ``git:REV`` = the
shipped VAE as committed at git revision REV, e.g. the previous decoder):

1. Round trip of --clips held-out synthetic clips (test split, 17 frames): reconstruction PSNR and
   the judder ratio (eval/judder.py: mean |frame difference| of phase-0 transitions 0->1, 4->5,
   8->9, 12->13 over that of the other transitions), with the data's own ratio beside it.
2. Generated videos: the shipped 4-step generator on the first frames and captions of --videos
   held-out portraits (seed = index). The latents are sampled once and decoded by every VAE (a
   decoder-only change keeps the latent space, so the same latents are valid for each; VAEs with
   a different encoder are flagged, their row then mixes two latent spaces). The held-out clips'
   own ratio is beside it.

--sheet PNG: a contact sheet of the generated video the first VAE judders most on, decoded by each
VAE (one row each, every frame; the group boundaries are between columns 0|1, 4|5, 8|9, 12|13),
then one row per VAE of |frame difference| x 4 (bright columns 1, 5, 9, 13 alone = judder).

    python benchmarks/vae_judder.py [--vae git:REV,shipped] [--clips 32] [--videos 8] [--sheet out.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_VAE = "src/magicdistill/checkpoints/tiny/vae"


def resolve(spec: str, tmp: Path) -> Path:
    """``shipped`` | ``git:REV`` | a folder -> a VAE folder."""
    if spec == "shipped":
        return ROOT / SHIPPED_VAE
    if spec.startswith("git:"):
        rev, out = spec[4:], tmp / spec[4:]
        out.mkdir(parents=True)
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{SHIPPED_VAE}/{name}"], check=True,
                                  capture_output=True).stdout
            (out / name).write_bytes(blob)
        return out
    return Path(spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default="shipped", help="comma-separated: shipped | git:REV | a VAE folder")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips for the round trip")
    ap.add_argument("--videos", type=int, default=8, help="generated videos (held-out first frames)")
    ap.add_argument("--sheet", default=None, help="PNG contact sheet of the first generated video per VAE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    from magicdistill.data.synthetic import SyntheticVideos
    from magicdistill.eval.judder import judder_ratio, transition_differences
    from magicdistill.generate import default_model
    from magicdistill.models.vae import load_vae
    from magicdistill.pipeline import I2VPipeline, model_sampler, read_record, sample_video
    from magicdistill.train.vae_trainer import psnr
    from magicdistill.video import contact_sheet, frames_to_tensor, tensor_to_frames

    print(f"machine: 1 torch thread, torch {torch.__version__}")
    tmp = Path(tempfile.mkdtemp())
    specs = args.vae.split(",")
    vaes = {s: load_vae(resolve(s, tmp)) for s in specs}
    for s, v in vaes.items():
        print(f"  {s}: decoder_context {v.model.config.get('decoder_context', 0)}")

    # 1. round trip of held-out clips
    test = SyntheticVideos(split="test", seed=11)
    x = torch.stack([frames_to_tensor(test.clip(i).frames) for i in range(args.clips)])
    data = judder_ratio(transition_differences(x))
    print(f"\n1. VAE round trip, {args.clips} held-out synthetic clips of {x.shape[2]} frames "
          f"(data's own judder ratio {data:.3f})")
    print(f"{'VAE':<24}{'PSNR dB':>9}{'judder':>9}{'/ data':>8}{'phase-0 diff':>14}{'other diff':>12}{'decode s':>10}")
    for s, vae in vaes.items():
        with torch.no_grad():
            t = time.perf_counter()
            rec = torch.cat([vae.decode(vae.encode(c)) for c in x.split(8)])
            took = time.perf_counter() - t
        d = transition_differences(rec)
        ph = np.arange(d.shape[1]) % vae.temporal_ratio == 0
        r = judder_ratio(d, vae.temporal_ratio)
        print(f"{s:<24}{psnr(rec, x).mean().item():>9.2f}{r:>9.3f}{r / data:>8.2f}{d[:, ph].mean():>14.2f}"
              f"{d[:, ~ph].mean():>12.2f}{took:>10.2f}")

    # 2. generated videos: sample once, decode with each VAE
    folder = default_model(False)
    rec_s = model_sampler(read_record(folder))
    pipe = I2VPipeline.from_dir(folder)
    held = SyntheticVideos(split="test", seed=7)
    clips = [held.clip(i, portrait_only=True) for i in range(args.videos)]
    truth = judder_ratio(transition_differences(np.stack([c.frames for c in clips])))
    latents = []
    with torch.no_grad():
        for i, c in enumerate(clips):
            image = frames_to_tensor(c.frames[0][None])[:, 0][None]
            latents.append(sample_video(pipe.dit, pipe.vae, pipe.text_encoder([c.caption]), pipe.null_text, image,
                                        num_frames=pipe.spec.num_frames, generator=torch.Generator().manual_seed(i),
                                        steps=rec_s["steps"], guidance=rec_s["guidance"], shift=rec_s["shift"],
                                        decode=False, sampler=rec_s["kind"], eta=rec_s["eta"]))
    probe = torch.from_numpy(np.stack([c.frames for c in clips[:2]])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        ref_z = pipe.vae.encode(probe)
    print(f"\n2. shipped generator ({rec_s['steps']} steps), {args.videos} held-out first frames, the same latents "
          f"decoded by each VAE (the held-out clips' own judder ratio {truth:.3f})")
    print(f"{'VAE':<24}{'judder':>9}{'/ data':>8}{'phase-0 diff':>14}{'other diff':>12}  latent space")
    sheet = []
    for s, vae in vaes.items():
        with torch.no_grad():
            same = torch.allclose(vae.encode(probe), ref_z, atol=1e-5)
            videos = torch.cat([vae.decode(z) for z in latents])
        d = transition_differences(videos)
        ph = np.arange(d.shape[1]) % vae.temporal_ratio == 0
        r = judder_ratio(d, vae.temporal_ratio)
        print(f"{s:<24}{r:>9.3f}{r / truth:>8.2f}{d[:, ph].mean():>14.2f}{d[:, ~ph].mean():>12.2f}  "
              f"{'the generator’s' if same else 'DIFFERENT encoder: latents not its own'}")
        sheet.append(np.stack([tensor_to_frames(v) for v in videos]))
        if len(sheet) == 1:  # the video the first VAE judders most on (largest phase-0 / other ratio)
            shown = int(np.argmax(d[:, ph].mean(1) / d[:, ~ph].mean(1)))
    if args.sheet:
        frames = [v[shown] for v in sheet]
        # below the frames: |frame t - frame t-1| x 4 (column t; column 0 black), where a judder is bright
        # at columns 1, 5, 9, 13 (the group boundaries) and dark between them
        motion = [np.concatenate([np.zeros_like(f[:1]), np.clip(np.abs(np.diff(f.astype(np.int16), axis=0)) * 4, 0,
                                                                 255).astype(np.uint8)]) for f in frames]
        contact_sheet(frames + motion, every=1, zoom=2).save(args.sheet)
        print(f"\ncontact sheet of generated video {shown}: rows = frames decoded by {', '.join(specs)}, then "
              f"|frame difference| x 4 for each: {args.sheet}")


if __name__ == "__main__":
    sys.exit(main())
