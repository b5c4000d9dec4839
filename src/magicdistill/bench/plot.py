"""Line plots with error bars as PNG, drawn with PIL (matplotlib is not a dependency)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_file

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Series:
    name: str
    xs: list[float]
    ys: list[float]
    errs: list[float | None]  # half-widths of the error bars (None: no bar)
    line: bool = True  # False: points only (e.g. a method at 1 and 4 steps is not a curve)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        return [lo]
    mag = 10 ** math.floor(math.log10((hi - lo) / max(1, n - 1)))
    step = next(m * mag for m in (1, 2, 5, 10) if (hi - lo) / (m * mag) <= n)  # at most about n + 1 ticks
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def line_plot(path: str | Path, series: list[Series], *, title: str, x_label: str, y_label: str,
              log_x: bool = False, size: tuple[int, int] = (760, 460)) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    w, h = size
    left, right, top, bottom = 72, 230, 52, 56
    # the built-in font has no arrows
    title, y_label = (t.replace("↑", "(higher is better)").replace("↓", "(lower is better)") for t in (title, y_label))
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    pts = [(x, y, e) for s in series for x, y, e in zip(s.xs, s.ys, s.errs) if y is not None]
    if not pts:
        d.text((left, top), f"{title}: no data", fill="black", font=font)
        return _save(img, path)
    fx = (lambda x: math.log10(x)) if log_x else float
    xs = [fx(x) for x, _, _ in pts]
    lo_y = min(y - (e or 0) for _, y, e in pts)
    hi_y = max(y + (e or 0) for _, y, e in pts)
    pad = (hi_y - lo_y) * 0.08 or abs(hi_y) * 0.05 or 1.0
    lo_y, hi_y = lo_y - pad, hi_y + pad
    lo_x, hi_x = min(xs), max(xs)
    pad_x = (hi_x - lo_x) * 0.05 or 0.5
    lo_x, hi_x = lo_x - pad_x, hi_x + pad_x

    def px(x: float) -> float:
        return left + (fx(x) - lo_x) / (hi_x - lo_x) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - lo_y) / (hi_y - lo_y) * (h - top - bottom)

    # 1. axes, ticks, labels
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    x_ticks = sorted({x for x, _, _ in pts}) if log_x else nice_ticks(min(x for x, _, _ in pts), max(x for x, _, _ in pts))
    for x in x_ticks:
        d.line([px(x), h - bottom, px(x), h - bottom + 4], fill="black")
        d.text((px(x), h - bottom + 6), f"{x:g}", fill="black", font=font, anchor="ma")
    for y in nice_ticks(lo_y, hi_y):
        d.line([left - 4, py(y), left, py(y)], fill="black")
        d.line([left + 1, py(y), w - right - 1, py(y)], fill="#e6e6e6")
        d.text((left - 6, py(y)), f"{y:.3g}", fill="black", font=font, anchor="rm")
    d.text(((left + w - right) / 2, 8), title, fill="black", font=font, anchor="ma")
    d.text(((left + w - right) / 2, h - 18), x_label + (" (log scale)" if log_x else ""), fill="black", font=font,
           anchor="ma")
    d.text((8, top - 20), y_label, fill="black", font=font)
    # 2. series: error bars, lines, points; legend on the right
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        dodge = (k - (len(series) - 1) / 2) * 5  # series sharing an x stay apart
        p = [(px(x) + dodge, py(y), e, y) for x, y, e in zip(s.xs, s.ys, s.errs) if y is not None]
        for x, y, e, yv in p:
            if e:
                d.line([x, py(yv - e), x, py(yv + e)], fill=color, width=1)
                d.line([x - 4, py(yv - e), x + 4, py(yv - e)], fill=color)
                d.line([x - 4, py(yv + e), x + 4, py(yv + e)], fill=color)
        if s.line and len(p) > 1:
            d.line([(x, y) for x, y, _, _ in p], fill=color, width=2)
        for x, y, _, _ in p:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = top + 8 + 20 * k
        d.line([w - right + 14, ly + 7, w - right + 34, ly + 7], fill=color, width=2)
        d.ellipse([w - right + 20, ly + 3, w - right + 28, ly + 11], fill=color)
        d.text((w - right + 40, ly), s.name, fill="black", font=font)
    return _save(img, path)


def _save(img, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, suffix=".png") as tmp:  # PIL picks the format from the extension
        img.save(tmp)
    return path
