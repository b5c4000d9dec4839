"""Render videos as a PNG contact sheet (rows = videos, columns = every k-th frame), to look at
them: `python benchmarks/contact_sheet.py OUT.png a.mp4 b.mp4 ... [--every 2] [--zoom 3]`.

`--frames 2-10` shows those frames (every one, so the causal VAE's group boundaries 0|1, 4|5,
8|9, 12|13 are between neighbouring columns) instead of every k-th; `--split N` cuts each video
into N side-by-side panels of equal width, one row each (the demo's clip_XX.mp4 are ground truth
| each sampler side by side); `--motion` adds below each row its |frame difference| x 4 (column
t = frame t - frame t-1), where a judder shows as bright columns at the group boundaries only;
`--judder` prints each panel's judder ratio (eval/judder.py), pooled over the videos given.
"""

from __future__ import annotations

import argparse

import numpy as np

from magicdistill.video import contact_sheet, read_video


def frame_range(ap: argparse.ArgumentParser, spec: str, count: int) -> list[int]:
    """"A-B" (inclusive) -> [A..B], checked against the video's ``count`` frames."""
    try:
        a, b = (int(s) for s in spec.split("-"))
    except ValueError:
        ap.error(f"--frames takes A-B (e.g. 2-10), got {spec!r}")
    if not 0 <= a <= b < count:
        ap.error(f"--frames {spec}: the videos have frames 0-{count - 1}")
    return list(range(a, b + 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--zoom", type=int, default=3)
    ap.add_argument("--frames", default=None, help="A-B: show frames A..B, every one")
    ap.add_argument("--split", type=int, default=1, help="cut each video into N side-by-side panels, one row each")
    ap.add_argument("--motion", action="store_true", help="add |frame difference| x 4 below each row")
    ap.add_argument("--judder", action="store_true", help="print each panel's judder ratio, pooled over the videos")
    ap.add_argument("--colours", type=int, default=0, help="save with a palette of this many colours (a smaller PNG)")
    args = ap.parse_args()
    rows = []
    for path in args.videos:
        video = read_video(path)[0]
        if video.shape[2] % args.split:
            ap.error(f"--split {args.split}: {path} is {video.shape[2]} pixels wide, not a multiple")
        rows += np.split(video, args.split, axis=2)
    if args.judder:  # eval/judder.py: phase-0 / other frame differences, all frames, pooled over the videos
        from magicdistill.eval.judder import judder_ratio, transition_differences

        for k in range(args.split):
            d = transition_differences(np.stack(rows[k::args.split]))
            ph = np.arange(d.shape[1]) % 4 == 0
            print(f"panel {k}: judder ratio {judder_ratio(d):.2f} (phase-0 {d[:, ph].mean():.2f}, "
                  f"other {d[:, ~ph].mean():.2f} levels)")
    every = args.every
    if args.frames:
        idx = frame_range(ap, args.frames, min(len(r) for r in rows))
        # the difference for the first shown frame needs the one before it (black when there is none)
        diffs = [np.concatenate([np.zeros_like(r[:1]), np.abs(np.diff(r.astype(np.int16), axis=0))]) for r in rows]
        rows, diffs, every = [r[idx] for r in rows], [d[idx] for d in diffs], 1
    else:
        diffs = [np.concatenate([np.zeros_like(r[:1]), np.abs(np.diff(r.astype(np.int16), axis=0))]) for r in rows]
    if args.motion:
        rows = [x for r, d in zip(rows, diffs) for x in (r, np.clip(d * 4, 0, 255).astype(np.uint8))]
    sheet = contact_sheet(rows, every, args.zoom)
    if args.colours:  # mp4 frames carry coding noise that bloats a true-colour PNG
        sheet = sheet.quantize(args.colours)
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
