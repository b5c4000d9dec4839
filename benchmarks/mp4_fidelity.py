"""How much of what the model made survives in the mp4 we write, and is the file a function of the frames.

For videos the shipped 4-step generator makes from held-out first frames (the default ``generate``)
and for the held-out synthetic clips themselves (saturated cartoon edges: the hardest case), each set
of frames is written with the old settings (native size, yuv420p, CRF 12, threaded x264), with the
current default (``video.write_mp4``: integer nearest-neighbour upscale, yuv420p, CRF 12, one encoder
thread; decoded back to the model size) and with ``lossless`` (RGB H.264, CRF 0). Printed side by side:
PSNR of the decoded frames against the frames produced (mean over videos, and the worst), the largest
error in levels, the file size, and whether two encodes of the same frames gave identical bytes.

    python benchmarks/mp4_fidelity.py [--videos 4]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def write_old(path: Path, frames: np.ndarray, fps: float) -> None:
    """The writer as it was: native size, yuv420p, CRF 12, x264's default (threaded) encoding."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "12", "preset": "medium"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure(videos: list[np.ndarray], writer, tmp: Path) -> dict[str, float]:
    from magicdistill.video import read_video

    scores, worst, size, same = [], 0, 0, True
    for i, frames in enumerate(videos):
        digests = []
        for rep in range(2):
            path = tmp / f"v{i}_{rep}.mp4"
            writer(path, frames)
            digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        same &= digests[0] == digests[1]
        back = read_video(path)[0]
        assert back.shape == frames.shape, (back.shape, frames.shape)
        scores.append(psnr(back, frames))
        worst = max(worst, int(np.abs(back.astype(int) - frames.astype(int)).max()))
        size += path.stat().st_size
    return {"psnr": float(np.mean(scores)), "min_psnr": float(min(scores)), "max_err": worst,
            "kib": size / len(videos) / 1024, "same": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=4)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from magicdistill.data.synthetic import SyntheticVideoConfig, SyntheticVideos
    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline, model_sampler
    from magicdistill.video import frames_to_tensor, tensor_to_frames, write_mp4

    pipe = I2VPipeline.from_dir(default_model(False))
    rec = model_sampler(pipe.dit.meta)
    source = SyntheticVideos(SyntheticVideoConfig(), "test", 0)
    clips = [source.clip(i, portrait_only=True) for i in range(args.videos)]
    generated = []
    for i, clip in enumerate(clips):
        video = pipe(frames_to_tensor(clip.frames[:1])[:, 0][None], clip.caption, seed=i, steps=rec["steps"],
                     guidance=rec["guidance"], shift=rec["shift"])
        generated.append(tensor_to_frames(video))
    sets = {"generated (4-step default)": generated, "synthetic clips (ground truth)": [c.frames for c in clips]}
    writers = {"old: native yuv420p, threaded": lambda p, f: write_old(p, f, 8.0),
               "default: upscale + yuv420p, deterministic": lambda p, f: write_mp4(p, f, 8.0),
               "lossless (RGB, CRF 0)": lambda p, f: write_mp4(p, f, 8.0, lossless=True)}
    h, w = generated[0].shape[1:3]
    from magicdistill.video import default_upscale

    print(f"{args.videos} videos of {generated[0].shape[0]} frames at {h}x{w}; default upscale x{default_upscale(h, w)}")
    print(f"| frames | writer | PSNR dB (mean) | PSNR dB (worst video) | max error | KiB/video | same bytes twice |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, videos in sets.items():
            for name, writer in writers.items():
                m = measure(videos, writer, Path(tmp))
                print(f"| {set_name} | {name} | {m['psnr']:.1f} | {m['min_psnr']:.1f} | {m['max_err']} | "
                      f"{m['kib']:.0f} | {'yes' if m['same'] else 'no'} |")


if __name__ == "__main__":
    main()
