"""The sliding-window long video (long_video.py) with the shipped 4-step generator: cost, memory, seams.

Part "speed": for 5, 15, 30 and 60 s videos, each length in a fresh process (so peak RSS is that
length's own), lengths interleaved within each repeat, median of --repeats: wall time of the
sampling + per-window decode, of writing the mp4, and the peak RSS above the loaded models; then
the 60 s / 5 s time ratio (target <= 13x) and the peak-RSS growth.

Part "seams": --videos long videos (first frames and captions of held-out synthetic portraits,
seed i) per overlap m, measured on the uint8 frames:
- flicker = mean |frame[t+1] - frame[t]| (0-255) at seam transitions (window k's frame 0 -> 1),
  inside windows at the same latent phase (frame 4j -> 4j+1 of a window: the causal VAE decodes
  each latent frame into 4 pixel frames, so transitions across latent frames are naturally
  larger), and inside windows elsewhere; jerk = mean |f[t+1] - 2 f[t] + f[t-1]| centred on the
  seam frame vs centred on same-phase frames inside windows (a motion that restarts shows here);
- the same with colour anchoring off (long_video.py, step 6), to show what it does;
- drift per window index: distance of the window's mean colour from window 0's, saturation,
  motion (mean frame difference) and sharpness (mean |Laplacian|);
- FVD (probe features, magicdistill.eval) of 9-frame clips straddling a seam vs 9-frame clips
  inside a window, each against held-out synthetic clips, when the probe is available.

Part "drift" (not in "all"): does a long video keep its subject, per identity mode (``drift``'s
docstring): FVD of the video's clips / FVD of single windows, identity similarity to the first
frame per window, seam flicker.

    python benchmarks/long_video.py [--part speed|seams|drift|all] [--repeats 3] [--videos 3] [--overlaps 0,1,2]
                                    [--anchor on,off] [--seconds 60] [--identity frame,image]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (5, 15, 30, 60)
CLIP = 9  # frames per FVD clip: two latent groups + the frame before them


def _setup():
    import warnings

    warnings.filterwarnings("ignore")
    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline, model_sampler, read_record

    folder = default_model(False)
    rec = model_sampler(read_record(folder))
    return I2VPipeline.from_dir(folder), dict(steps=rec["steps"], guidance=rec["guidance"], shift=rec["shift"])


def _rss_mb() -> float:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(seconds: float, overlap: int, seed: int) -> None:
    """One length in this process: print timings and peak RSS as JSON."""
    from magicdistill.long_video import WindowPlan, long_video_frames, sample_long_video
    from magicdistill.video import frames_to_tensor, load_image, write_mp4

    pipe, sampler = _setup()
    image = frames_to_tensor(load_image(ROOT / "examples" / "portrait.png", 64, 64)[None])[:, 0][None]
    prompt = (ROOT / "examples" / "portrait.txt").read_text().strip()
    n = long_video_frames(seconds, pipe.spec.fps)
    loaded = _rss_mb()
    t, c = time.perf_counter(), time.process_time()
    frames = sample_long_video(pipe, image, prompt, num_frames=n, seed=seed, overlap=overlap, progress=False, **sampler)
    sample, cpu = time.perf_counter() - t, time.process_time() - c
    after = _current_rss_mb()  # the uint8 frames are still held here
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_mp4(Path(tmp) / "v.mp4", frames, pipe.spec.fps)
        write = time.perf_counter() - t
    windows = WindowPlan(n, pipe.spec.num_frames, pipe.vae.temporal_ratio, overlap).num_windows
    print(json.dumps({"frames": len(frames), "windows": windows, "nfe": windows * sampler["steps"] * (
        2 if sampler["guidance"] != 1.0 else 1), "sample_s": sample, "cpu_s": cpu, "write_s": write, "loaded_mb": loaded,
                      "peak_mb": _rss_mb(), "after_mb": after}))


def speed(repeats: int, overlap: int) -> None:
    runs = {s: [] for s in LENGTHS}
    for r in range(repeats):
        for s in LENGTHS:  # interleaved: machine noise hits every length alike
            out = subprocess.run([sys.executable, __file__, "--worker", str(s), "--overlaps", str(overlap), "--seed",
                                  str(r)], check=True, capture_output=True, text=True).stdout
            runs[s].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  run {r}: {s} s {json.dumps(runs[s][-1])}", flush=True)  # partial results survive a kill
    med = lambda s, k: statistics.median(x[k] for x in runs[s])
    print(f"overlap m = {overlap}; median of {repeats} runs, each length in a fresh process")
    print(f"{'seconds':>8}{'frames':>8}{'windows':>9}{'DiT NFE':>9}{'sample+decode s':>17}{'x 5 s':>7}{'its CPU s':>11}{'x 5 s':>7}{'mp4 write s':>13}"
          f"{'peak RSS loaded MB':>20}{'peak RSS MB':>13}{'RSS after sampling MB':>23}")
    for s in LENGTHS:
        print(f"{s:>8}{runs[s][0]['frames']:>8}{runs[s][0]['windows']:>9}{runs[s][0]['nfe']:>9}{med(s, 'sample_s'):>17.2f}{med(s, 'sample_s') / med(5, 'sample_s'):>7.1f}"
              f"{med(s, 'cpu_s'):>11.2f}{med(s, 'cpu_s') / med(5, 'cpu_s'):>7.1f}"
              f"{med(s, 'write_s'):>13.3f}{med(s, 'loaded_mb'):>20.0f}{med(s, 'peak_mb'):>13.0f}"
              f"{med(s, 'after_mb'):>23.0f}")
    total = lambda s: med(s, "sample_s") + med(s, "write_s")
    print(f"60 s / 5 s: sample+decode {med(60, 'sample_s') / med(5, 'sample_s'):.1f}x wall, "
          f"{med(60, 'cpu_s') / med(5, 'cpu_s'):.1f}x CPU; with the mp4 write "
          f"{total(60) / total(5):.1f}x (target <= 13x; frames 12x)")


# --- seams ------------------------------------------------------------------------------------------

def flicker(f: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T-1,) mean |f[t+1] - f[t]|."""
    return np.abs(np.diff(f.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))


def jerk(f: np.ndarray) -> np.ndarray:
    """-> (T-2,) mean |f[t+1] - 2 f[t] + f[t-1]|, index t-1 for the frame t it is centred on."""
    x = f.astype(np.float32)
    return np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).mean(axis=(1, 2, 3))


def window_stats(f: np.ndarray) -> dict[str, float]:
    x = f.astype(np.float32)
    mx, mn = x.max(-1), x.min(-1)
    lap = np.abs(4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
    return {"colour": x.mean(axis=(0, 1, 2)), "saturation": float(((mx - mn) / np.maximum(mx, 1)).mean()),
            "motion": float(flicker(f).mean()) if len(f) > 1 else 0.0, "sharpness": float(lap.mean())}


def inputs(n: int):
    """First frames and captions of held-out synthetic portraits (identities the teacher never saw)."""
    from magicdistill.data.synthetic import SyntheticVideos

    data = SyntheticVideos(split="test", seed=7)
    clips = [data.clip(i, portrait_only=True) for i in range(n)]
    return [(c.frames[0], c.caption) for c in clips]


def seams(videos: int, overlaps: list[int], seconds: float, anchors: list[bool]) -> None:
    from magicdistill.long_video import WindowPlan, long_video_frames, sample_long_video
    from magicdistill.video import frames_to_tensor

    pipe, sampler = _setup()
    n = long_video_frames(seconds, pipe.spec.fps)
    probe = _probe()
    ref = _reference_features(probe, 96) if probe else None
    print(f"{videos} videos of {seconds:g} s ({n} frames) per overlap; held-out portraits, seed = video index")
    for m, anchor in [(m, a) for m in overlaps for a in anchors]:
        plan = WindowPlan(n, pipe.spec.num_frames, pipe.vae.temporal_ratio, m)
        seam_set = set(plan.seams())
        acc = {"seam": [], "phase": [], "other": [], "jerk_seam": [], "jerk_phase": []}
        per_window, straddle, inside = [], [], []
        t = time.perf_counter()
        for i, (first, caption) in enumerate(inputs(videos)):
            image = frames_to_tensor(first[None])[:, 0][None]
            f = sample_long_video(pipe, image, caption, num_frames=n, seed=i, overlap=m, colour_anchor=anchor,
                                  progress=False, **sampler)
            d, j = flicker(f), jerk(f)
            starts = [0] + plan.seams()
            for t_ in range(len(d)):
                start = max(s for s in starts if s <= t_)
                if t_ in seam_set:
                    acc["seam"].append(d[t_])
                elif (t_ - start) % pipe.vae.temporal_ratio == 0:
                    acc["phase"].append(d[t_])
                else:
                    acc["other"].append(d[t_])
            for c in range(1, len(f) - 1):
                start = max(s for s in starts if s <= c)
                if c in seam_set:
                    acc["jerk_seam"].append(j[c - 1])
                elif (c - start) % pipe.vae.temporal_ratio == 0 and c != start:
                    acc["jerk_phase"].append(j[c - 1])
            bounds = starts + [len(f)]
            per_window.append([window_stats(f[a:b + 1]) for a, b in zip(bounds, bounds[1:])])
            half = CLIP // 2
            straddle += [f[s - half:s + half + 1] for s in plan.seams() if s + half < len(f)]
            inside += [f[s:s + CLIP] for s in starts if s + CLIP <= len(f) and s + CLIP - 1 <= s + plan.stride]
        took = time.perf_counter() - t
        mean = lambda k: float(np.mean(acc[k]))
        print(f"\noverlap m = {m}, colour anchor {'on' if anchor else 'off'} (stride {plan.stride} frames, {plan.num_windows} windows per video, "
              f"{took / videos:.1f} s per video)")
        print(f"  flicker at seams {mean('seam'):.2f} (n={len(acc['seam'])}) | inside windows, same latent phase "
              f"{mean('phase'):.2f} (n={len(acc['phase'])}) | inside, other {mean('other'):.2f} | "
              f"seam / same-phase {mean('seam') / mean('phase'):.2f}")
        print(f"  jerk centred on seams {mean('jerk_seam'):.2f} | on same-phase frames inside {mean('jerk_phase'):.2f}"
              f" | ratio {mean('jerk_seam') / mean('jerk_phase'):.2f}")
        if probe:
            fs, fi = (_clip_features(probe, c) for c in (straddle, inside))
            k = min(len(fs), len(fi))
            from magicdistill.eval.frechet import frechet_from_features

            print(f"  FVD(probe) vs {len(ref)} held-out synthetic clips, {k} clips each: straddling a seam "
                  f"{frechet_from_features(fs[:k], ref):.2f} | inside a window {frechet_from_features(fi[:k], ref):.2f}")
        print_drift(per_window)
    if not probe:
        print("\nFVD of clips straddling a seam: awaits a shipped probe (magicdistill.eval.probe.load_probe)")


def drift(videos: int, seconds: float, identities: list[str], every: int) -> None:
    """Does a long video keep its subject? Per identity mode (long_video.IDENTITY_MODES), --videos
    held-out portraits (seed = index), 9-frame probe clips at frames 0 and 8 of each window:
    - FVD vs 96 held-out clips of the single-window clips (window 0 = what ``generate`` makes) and of
      as many clips from the rest of the video (video i's windows spread evenly over it): their ratio
      is the "minute / single window" FVD ratio; also FVD of the last windows' clips alone;
    - identity: cosine similarity of probe frame features to the first frame's, and the share of the
      probe's identity attributes (skin, hair, face shape, ...) that match the first frame's, per window;
    - seams: flicker at seams / at same-phase transitions inside windows."""
    import torch

    from magicdistill.eval.frechet import frechet_from_features
    from magicdistill.eval.probe import IDENTITY_FIELDS
    from magicdistill.long_video import WindowPlan, long_video_frames, sample_long_video
    from magicdistill.video import frames_to_tensor

    pipe, sampler = _setup()
    n = long_video_frames(seconds, pipe.spec.fps)
    plan = WindowPlan(n, pipe.spec.num_frames, pipe.vae.temporal_ratio, 0)
    probe = _probe()
    ref = _reference_features(probe, 96)
    starts = [0] + plan.seams()
    full = [k for k, s in enumerate(starts) if s + 2 * CLIP - 2 < n]  # windows with both clips
    print(f"{videos} videos of {seconds:g} s ({n} frames, {plan.num_windows} windows); held-out portraits, seed = video "
          f"index; overlap 0, colour anchor on")
    for mode in identities:
        t = time.perf_counter()
        by_window = {k: [] for k in full}
        cos, agree, seam, phase = {k: [] for k in full}, {k: [] for k in full}, [], []
        for i, (first, caption) in enumerate(inputs(videos)):
            image = frames_to_tensor(first[None])[:, 0][None]
            name, _, weight = mode.partition(":")  # "anchor:0.5" = identity "anchor" with that weight
            extra = {"anchor_weight": float(weight)} if weight else {}
            f = sample_long_video(pipe, image, caption, num_frames=n, seed=i, identity=name, progress=False, **sampler,
                                  **extra)
            for k in full:
                by_window[k].append([f[starts[k]:starts[k] + CLIP], f[starts[k] + CLIP - 1:starts[k] + 2 * CLIP - 1]])
            with torch.no_grad():
                video = frames_to_tensor(f)[None]
                feats = torch.nn.functional.normalize(probe.frame_features(video), dim=-1)
                _, heads = probe(video)
            sim = (feats @ feats[0]).numpy()
            attrs = np.stack([heads[name].argmax(-1).numpy() for name in IDENTITY_FIELDS], axis=1)
            same = (attrs == attrs[0]).mean(1)
            for k in full:
                cos[k].append(sim[starts[k]:starts[k] + plan.stride + 1].mean())
                agree[k].append(same[starts[k]:starts[k] + plan.stride + 1].mean())
            d = flicker(f)
            for t_ in range(len(d)):
                start = max(s for s in starts if s <= t_)
                if t_ in starts[1:]:
                    seam.append(d[t_])
                elif (t_ - start) % pipe.vae.temporal_ratio == 0:
                    phase.append(d[t_])
        took = time.perf_counter() - t
        later = full[1:]
        spread = [c for i in range(videos) for c in by_window[later[(i * len(later)) // videos]][i]]
        single = [c for i in range(videos) for c in by_window[0][i]]
        tail = later[-max(1, len(later) // 4):]
        last = [c for i in range(videos) for c in by_window[tail[i % len(tail)]][i]]
        fd = {name: frechet_from_features(_clip_features(probe, clips), ref)
              for name, clips in (("single", single), ("spread", spread), ("last", last))}
        print(f"\nidentity = {mode} ({took / videos:.1f} s per video)")
        print(f"  FVD(probe) vs {len(ref)} held-out clips, {len(single)} clips each: single windows (window 0) "
              f"{fd['single']:.1f} | windows 1..{full[-1]} spread {fd['spread']:.1f} (x{fd['spread'] / fd['single']:.2f})"
              f" | last quarter (windows {tail[0]}..{tail[-1]}) {fd['last']:.1f} (x{fd['last'] / fd['single']:.2f})")
        print(f"  flicker at seams {np.mean(seam):.2f} (n={len(seam)}) | same-phase inside windows {np.mean(phase):.2f} | "
              f"ratio {np.mean(seam) / np.mean(phase):.2f}")
        shown = sorted({0, 1, 2, *full[::every], full[-1]})
        print("  identity       " + "".join(f"{'w' + str(k):>7}" for k in shown))
        print("    probe cos    " + "".join(f"{np.mean(cos[k]):7.3f}" for k in shown))
        print("    attributes   " + "".join(f"{np.mean(agree[k]):7.3f}" for k in shown))


def print_drift(per_window: list[list[dict]]) -> None:
    """Per window index (mean over videos): |mean colour - window 0's| (0-255, mean over RGB),
    saturation, motion (mean frame difference), sharpness (mean |Laplacian|)."""
    k_max = min(len(w) for w in per_window)
    shown = sorted({0, 1, 2, k_max // 4, k_max // 2, 3 * k_max // 4, k_max - 1})
    print("  drift      " + "".join(f"{'w' + str(k):>8}" for k in shown))
    value = {"colour": lambda w, k: np.abs(w[k]["colour"] - w[0]["colour"]).mean()}
    for key in ("colour", "saturation", "motion", "sharpness"):
        get = value.get(key, lambda w, k, key=key: w[k][key])
        print(f"    {key:<11}" + "".join(f"{np.mean([get(w, k) for w in per_window]):8.3f}" for k in shown))


def _probe():
    try:
        from magicdistill.eval.probe import load_probe

        return load_probe()
    except (ImportError, ValueError, FileNotFoundError) as e:
        print(f"(no probe: {str(e).splitlines()[0]})")
        return None


def _clip_features(probe, clips: list[np.ndarray]):
    import torch

    from magicdistill.video import frames_to_tensor

    with torch.no_grad():
        return torch.cat([probe.clip_features(torch.stack([frames_to_tensor(c) for c in clips[i:i + 32]]))
                          for i in range(0, len(clips), 32)])


def _reference_features(probe, n: int):
    from magicdistill.data.synthetic import SyntheticVideos

    data = SyntheticVideos(split="test", seed=11)
    return _clip_features(probe, [data.clip(i, portrait_only=True).frames[:CLIP] for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("speed", "seams", "drift", "all"), default="all")
    ap.add_argument("--identity", default="frame,image", help="drift part: identity modes to compare (long_video.py; anchor:W = anchor with weight W)")
    ap.add_argument("--every", type=int, default=5, help="drift part: show every k-th window's identity")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--overlaps", default=None, help="comma-separated overlaps m [seams: 0,1,2; speed: the default]")
    ap.add_argument("--anchor", default="on,off", help="colour anchoring variants for the seam part: on,off | on | off")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the seam videos")
    ap.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    from magicdistill.long_video import DEFAULT_OVERLAP

    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}", file=sys.stderr)
    if args.worker is not None:
        return worker(args.worker, int(args.overlaps or DEFAULT_OVERLAP), args.seed)
    if args.part in ("speed", "all"):
        speed(args.repeats, int((args.overlaps or str(DEFAULT_OVERLAP)).split(",")[0]))
    if args.part == "drift":
        return drift(args.videos, args.seconds, args.identity.split(","), args.every)
    if args.part in ("seams", "all"):
        seams(args.videos, [int(m) for m in (args.overlaps or "0,1,2").split(",")], args.seconds,
              [a == "on" for a in args.anchor.split(",")])


if __name__ == "__main__":
    main()
