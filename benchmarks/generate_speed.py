"""How long `magicdistill generate` takes on this machine with the shipped tiny models.

For the shipped 4-step W2S generator (the default) and the 50-step CFG teacher (`--teacher`),
measured side by side in one run, median of --repeats: the whole CLI as a user runs it (a fresh
process: imports, model loading, sampling, mp4 writing), and inside one process the sampling of
one video (latents) and the VAE decode; then the teacher / generator ratios.

    python benchmarks/generate_speed.py [--repeats 3]
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
    args = ap.parse_args()

    import torch

    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline, model_sampler, read_record, sample_video
    from magicdistill.video import frames_to_tensor, load_image

    image = ROOT / "examples" / "portrait.png"
    prompt = (ROOT / "examples" / "portrait.txt").read_text().strip()
    med = statistics.median
    rows = {}
    for name, flags, folder in (("4-step W2S generator (default)", [], default_model(False)),
                                ("50-step CFG teacher (--teacher)", ["--teacher"], default_model(True))):
        rec = model_sampler(read_record(folder))
        steps, guidance, shift, kind = rec["steps"], rec["guidance"], rec["shift"], rec["kind"]
        cli, sample, decode = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(image), "--prompt",
                                prompt, "--seed", str(i), "--out", f"{tmp}/v{i}.mp4", *flags], check=True,
                               capture_output=True)
                cli.append(time.perf_counter() - t)
        pipe = I2VPipeline.from_dir(folder)
        img = frames_to_tensor(load_image(image, pipe.spec.height, pipe.spec.width)[None])[:, 0][None]
        text = pipe.text_encoder([prompt])
        for i in range(args.repeats):
            t = time.perf_counter()
            lat = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, img, num_frames=pipe.spec.num_frames,
                               generator=torch.Generator().manual_seed(i), steps=steps, guidance=guidance, shift=shift,
                               decode=False, sampler=kind)
            sample.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                pipe.vae.decode(lat)
            decode.append(time.perf_counter() - t)
        nfe = steps * (2 if guidance != 1.0 else 1)
        rows[name] = (med(cli), med(sample), med(decode), nfe)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{pipe.spec.num_frames} frames {pipe.spec.height}x{pipe.spec.width}; median of {args.repeats}")
    print(f"{'model':<34}{'NFE':>5}{'CLI end to end s':>18}{'sampling s':>12}{'VAE decode s':>14}")
    for name, (c, s, d, n) in rows.items():
        print(f"{name:<34}{n:>5}{c:>18.2f}{s:>12.3f}{d:>14.3f}")
    (gc, gs, _, _), (tc, ts, _, _) = rows.values()
    print(f"teacher / generator: sampling {ts / gs:.1f}x, CLI end to end {tc / gc:.1f}x")


if __name__ == "__main__":
    main()
