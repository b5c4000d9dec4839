"""Render videos as a PNG contact sheet (rows = videos, columns = every k-th frame), to look at
them: `python benchmarks/contact_sheet.py OUT.png a.mp4 b.mp4 ... [--every 2] [--zoom 3]`."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from magicdistill.video import read_video


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--zoom", type=int, default=3)
    args = ap.parse_args()
    rows = [np.concatenate(list(read_video(v)[0][:: args.every]), axis=1) for v in args.videos]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = Image.fromarray(np.concatenate(rows, axis=0))
    img.resize((img.width * args.zoom, img.height * args.zoom), Image.NEAREST).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
