"""Does the shipped probe's FVD see frame order? Held-out clips A vs held-out clips B, as they are,
with B's frames shuffled, and with B reversed; per-frame FID alongside (shuffling cannot change it).

    OMP_NUM_THREADS=1 python benchmarks/probe_order.py [--clips 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
from magicdistill.eval.frechet import frechet_from_features
from magicdistill.eval.probe import load_probe
from magicdistill.train.probe_trainer import shuffle_frames
from magicdistill.video import frames_to_tensor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=128, help="clips per set")
    args = ap.parse_args()
    source = SyntheticVideos(SyntheticVideoConfig(), "test", seed=0)
    render = lambda lo, hi: torch.stack([frames_to_tensor(source.clip(i).frames) for i in range(lo, hi)])  # noqa: E731
    a, b = render(0, args.clips), render(args.clips, 2 * args.clips)
    probe = load_probe()
    variants = {"B as is": b, "B shuffled": shuffle_frames(b, np.random.default_rng(0)), "B reversed": b.flip(2)}
    t0 = time.perf_counter()
    fa, ca = probe.frame_features(a), probe.clip_features(a)
    secs = time.perf_counter() - t0
    print(f"probe features of {args.clips} clips (17 frames): {secs:.2f} s")
    base = None
    print("| B | FVD(A, B) | ratio | frame FID(A, B) |")
    print("|---|---|---|---|")
    for name, v in variants.items():
        fvd = frechet_from_features(ca, probe.clip_features(v))
        fid = frechet_from_features(fa, probe.frame_features(v))
        base = base if base is not None else fvd
        print(f"| {name} | {fvd:.2f} | {fvd / base:.1f} | {fid:.2f} |")


if __name__ == "__main__":
    with torch.no_grad():
        main()
