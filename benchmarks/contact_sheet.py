"""Render videos as a PNG contact sheet (rows = videos, columns = every k-th frame), to look at
them: `python benchmarks/contact_sheet.py OUT.png a.mp4 b.mp4 ... [--every 2] [--zoom 3]`."""

from __future__ import annotations

import argparse

from magicdistill.video import contact_sheet, read_video


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--zoom", type=int, default=3)
    args = ap.parse_args()
    contact_sheet([read_video(v)[0] for v in args.videos], args.every, args.zoom).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
