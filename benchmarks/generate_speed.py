"""How long `magicdistill generate` takes on this machine with the shipped tiny models.

For the shipped 4-step W2S generator (the default) and the 50-step CFG teacher (`--teacher`),
measured side by side in one run, median of --repeats: the whole CLI as a user runs it (a fresh
process: imports, model loading, sampling, mp4 writing), and inside one process the sampling of
one video (latents) and the VAE decode; then the teacher / generator ratios, the compute seconds
per second of generated video (sampling + VAE decode, and the whole CLI) and the 4-step vs 50-step
sampling ratio against its ideal (the NFE ratio, 100 / 4 = 25x).

Options add in-process sampling rows for the generator: ``--int8`` (weights quantized on load,
quant/) and ``--compile`` (torch.compile'd transformer; its first call, which compiles, is
reported separately and excluded from the median).

    python benchmarks/generate_speed.py [--repeats 3] [--int8] [--compile]
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
    ap.add_argument("--int8", action="store_true", help="add the int8 generator's sampling time")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile'd generator's sampling time")
    args = ap.parse_args()

    import torch

    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline, model_sampler, read_record, sample_video
    from magicdistill.video import frames_to_tensor, load_image

    image = ROOT / "examples" / "portrait.png"
    prompt = (ROOT / "examples" / "portrait.txt").read_text().strip()
    med = statistics.median
    models = {"4-step W2S generator (default)": ([], default_model(False)),
              "50-step CFG teacher (--teacher)": (["--teacher"], default_model(True))}
    # The machine is shared: each repeat times both models back to back (generator, teacher), so
    # a change of load hits both and the medians' ratio stays meaningful.
    cli = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, (flags, _) in models.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "magicdistill", "generate", "--image", str(image), "--prompt",
                                prompt, "--seed", str(i), "--out", f"{tmp}/v{i}.mp4", *flags], check=True,
                               capture_output=True)
                cli[name].append(time.perf_counter() - t)
    pipes = {}
    for name, (_, folder) in models.items():
        rec = model_sampler(read_record(folder))
        pipe = I2VPipeline.from_dir(folder)
        img = frames_to_tensor(load_image(image, pipe.spec.height, pipe.spec.width)[None])[:, 0][None]
        pipes[name] = (pipe, img, pipe.text_encoder([prompt]), rec["steps"], rec["guidance"], rec["shift"], rec["kind"])
    sample, decode = {name: [] for name in models}, {name: [] for name in models}
    for i in range(args.repeats):
        for name, (pipe, img, text, steps, guidance, shift, kind) in pipes.items():
            t = time.perf_counter()
            lat = sample_video(pipe.dit, pipe.vae, text, pipe.null_text, img, num_frames=pipe.spec.num_frames,
                               generator=torch.Generator().manual_seed(i), steps=steps, guidance=guidance, shift=shift,
                               decode=False, sampler=kind)
            sample[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                pipe.vae.decode(lat)
            decode[name].append(time.perf_counter() - t)
    rows = {}
    for name, (pipe, _, _, steps, guidance, *_) in pipes.items():
        nfe = steps * (2 if guidance != 1.0 else 1)
        rows[name] = (med(cli[name]), med(sample[name]), med(decode[name]), nfe)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{pipe.spec.num_frames} frames {pipe.spec.height}x{pipe.spec.width}; median of {args.repeats}")
    print(f"{'model':<34}{'NFE':>5}{'CLI end to end s':>18}{'sampling s':>12}{'VAE decode s':>14}")
    for name, (c, s, d, n) in rows.items():
        print(f"{name:<34}{n:>5}{c:>18.2f}{s:>12.3f}{d:>14.3f}")
    (gc, gs, gd, gn), (tc, ts, td, tn) = rows.values()
    print(f"teacher / generator: sampling {ts / gs:.1f}x, CLI end to end {tc / gc:.1f}x")
    video_s = pipe.spec.num_frames / pipe.spec.fps
    print(f"compute seconds per second of video ({pipe.spec.num_frames} frames at {pipe.spec.fps:g} fps = "
          f"{video_s:.3f} s): "
          f"sampling + VAE decode: generator {(gs + gd) / video_s:.3f}, teacher {(ts + td) / video_s:.3f}; "
          f"CLI end to end: generator {gc / video_s:.2f}, teacher {tc / video_s:.2f}")
    print(f"4-step vs 50-step sampling wall time: {ts / gs:.1f}x (ideal = NFE ratio {tn / gn:.0f}x; target >= 20x)")
    extra = [("int8 weights (quant/)", "int8")] * args.int8 + [("torch.compile transformer", "compile")] * args.compile
    for label, what in extra:
        print(f"4-step generator, {label}: " + _variant(pipes[next(iter(pipes))], what, args.repeats))


def _variant(loaded, what: str, repeats: int) -> str:
    """Sampling of the generator after quantizing / compiling a fresh copy of its DiT (in process),
    timed alternately with the eager fp32 DiT so that both medians see the same load."""
    import copy

    import torch

    from magicdistill.pipeline import sample_video

    pipe, img, text, steps, guidance, shift, kind = loaded
    dit = copy.deepcopy(pipe.dit)
    if what == "int8":
        from magicdistill.quant import quantize_int8

        quantize_int8(dit)
    else:
        from magicdistill.torch_compile import check_compile_available, compile_transformer

        check_compile_available()
        compile_transformer(dit)

    def once(model, i):
        t = time.perf_counter()
        sample_video(model, pipe.vae, text, pipe.null_text, img, num_frames=pipe.spec.num_frames,
                     generator=torch.Generator().manual_seed(i), steps=steps, guidance=guidance, shift=shift,
                     decode=False, sampler=kind)
        return time.perf_counter() - t

    first = once(dit, 0)  # compiles (for --compile)
    times = [(once(pipe.dit, i), once(dit, i)) for i in range(repeats)]
    eager, s = (statistics.median(t[k] for t in times) for k in (0, 1))
    return f"sampling {s:.3f} s vs eager fp32 {eager:.3f} s in the same loop: {s / eager:.2f}x; first call {first:.2f} s"


if __name__ == "__main__":
    main()
