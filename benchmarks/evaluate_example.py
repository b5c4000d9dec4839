"""Folders for the example in docs/EVALUATION.md, then `magicdistill evaluate` on each sampler.

Writes, from held-out test-split clips (identities never trained on):
  OUT/reference/  --clips ground-truth clips (mp4)
  OUT/images/     their first frames (png): the conditioning images
  OUT/vae/        the reference through the shipped VAE (encode, decode): the floor for any sampler
                  that decodes with this VAE (what the metrics read when only the VAE is lossy)
  OUT/generator/  the shipped 4-step W2S generator from those first frames (one seed each)
  OUT/teacher4/   the shipped teacher with 4 Euler CFG steps (no distillation)
and prints the evaluate table of each against OUT/reference.

    python benchmarks/evaluate_example.py --out /tmp/eval_example [--clips 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image


def write_set(folder: Path, videos: torch.Tensor, fps: float) -> None:
    from magicdistill.video import tensor_to_frames, write_mp4

    for i, v in enumerate(videos):
        write_mp4(folder / f"clip_{i:02d}.mp4", tensor_to_frames(v), fps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from magicdistill.demo import held_out_clips
    from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline, model_sampler, read_record, sample_clips
    from magicdistill.video import tensor_to_frames

    meta = read_record(SHIPPED_DIR / "generator")
    truth, captions = held_out_clips(meta, args.clips, args.seed)
    write_set(args.out / "reference", truth, meta["fps"])
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(truth):
        Image.fromarray(tensor_to_frames(v)[0]).save(args.out / "images" / f"clip_{i:02d}.png")

    for name, folder, steps in (("generator", SHIPPED_DIR / "generator", None), ("teacher4", SHIPPED_DIR / "teacher", 4)):
        pipe = I2VPipeline.from_dir(folder)
        if name == "generator":
            with torch.no_grad():
                write_set(args.out / "vae", pipe.vae.decode(pipe.vae.encode(truth)), meta["fps"])
        rec = model_sampler(pipe.dit.meta)
        text = pipe.text_encoder(captions)
        outs = sample_clips(pipe.dit, pipe.vae, text, pipe.null_text, truth[:, :, 0], num_frames=meta["num_frames"],
                            seed=args.seed, desc=name, steps=steps or rec["steps"], guidance=rec["guidance"],
                            shift=rec["shift"], sampler=rec["kind"] if steps is None else "euler")
        write_set(args.out / name, outs, meta["fps"])

    for name in ("vae", "generator", "teacher4"):
        cmd = [sys.executable, "-m", "magicdistill", "evaluate", "--videos", str(args.out / name), "--reference",
               str(args.out / "reference"), "--images", str(args.out / "images"), "--json",
               str(args.out / f"{name}.json")]
        print("$", " ".join(["magicdistill", *cmd[3:]]), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "COLUMNS": "100"})


if __name__ == "__main__":
    main()
