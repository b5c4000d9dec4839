"""How long `magicdistill generate` takes on this machine with the shipped tiny model.

Prints the median of --repeats runs of: the whole CLI as a user runs it (a fresh process: imports,
model loading, sampling, mp4 writing), and inside one process the model load, the 50-step CFG
teacher sampling, and the VAE decode.

    python benchmarks/generate_speed.py [--repeats 3] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=6.0)
    args = ap.parse_args()

    import torch

    from magicdistill.pipeline import SHIPPED_DIR, I2VPipeline
    from magicdistill.video import frames_to_tensor, load_image

    image = ROOT / "examples" / "portrait.png"
    prompt = (ROOT / "examples" / "portrait.txt").read_text().strip()
    cli, load, sample, decode = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(image), "--prompt", prompt,
                            "--steps", str(args.steps), "--guidance", str(args.guidance), "--seed", str(i),
                            "--out", f"{tmp}/v{i}.mp4"], check=True, capture_output=True)
            cli.append(time.perf_counter() - t)
    for i in range(args.repeats):
        t = time.perf_counter()
        pipe = I2VPipeline.from_dir(SHIPPED_DIR / "teacher")
        load.append(time.perf_counter() - t)
        img = frames_to_tensor(load_image(image, pipe.spec.height, pipe.spec.width)[None])[:, 0][None]
        text = pipe.text_encoder([prompt])
        from magicdistill.pipeline import sample_video

        t = time.perf_counter()
        lat = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, img, num_frames=pipe.spec.num_frames,
                           generator=torch.Generator().manual_seed(i), steps=args.steps, guidance=args.guidance,
                           decode=False)
        sample.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            pipe.vae.decode(lat)
        decode.append(time.perf_counter() - t)
    med = statistics.median
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{'stage':<44}{'median s':>10}")
    print(f"{'CLI end to end (fresh process)':<44}{med(cli):>10.2f}")
    print(f"{'  model + text encoder load':<44}{med(load):>10.2f}")
    print(f"{f'  {args.steps}-step CFG sampling (2 branches batched)':<44}{med(sample):>10.2f}")
    print(f"{'  VAE decode':<44}{med(decode):>10.3f}")
    print(f"{'per DiT forward (batch 2)':<44}{med(sample) / args.steps:>10.4f}")


if __name__ == "__main__":
    main()
