"""Procedural "portrait video" data: the embedded default's whole world.

Every clip is a pure function of (seed, index, split): a cartoon face whose identity (skin, hair,
background, face shape, eye spacing, hair style, accessory) and motion (blinking, talking, head
sway, nod and their speeds) are drawn from small vocabularies, plus a smaller share of "general"
clips (moving shapes, camera pans) so the model is not faces only. Each clip carries a caption
built from its attributes and integer labels for every attribute (the evaluation probe learns to
predict them).

Identities are split, not clips: a fixed, seeded 10% of all identity combinations is held out for
the test split, so evaluation always sees faces the teacher never trained on.

Rendering is vectorised numpy over a (T, H, W) grid with 2x supersampling for anti-aliasing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

SKIN = {
    "pale": (246, 222, 200),
    "pink": (238, 186, 170),
    "olive": (198, 164, 112),
    "tan": (214, 160, 112),
    "brown": (150, 98, 62),
    "dark": (92, 58, 38),
}
HAIR = {
    "black": (25, 22, 22),
    "brown": (100, 60, 30),
    "blond": (232, 200, 95),
    "red": (190, 60, 25),
    "grey": (165, 165, 170),
    "blue": (50, 90, 210),
}
BACKGROUND = {
    "blue": (80, 140, 225),
    "green": (90, 180, 100),
    "yellow": (240, 215, 90),
    "purple": (150, 100, 190),
    "grey": (128, 128, 128),
    "orange": (240, 150, 60),
}
# (half-width, half-height) of the face ellipse in unit coordinates ([-1, 1] across the frame).
FACE_SHAPE = {"round": (0.46, 0.48), "oval": (0.39, 0.53), "long": (0.35, 0.57), "wide": (0.52, 0.46)}
# horizontal distance of each eye from the face centre, as a fraction of the face half-width.
EYE_SPACING = {"close-set": 0.30, "average": 0.42, "wide-set": 0.54}
HAIR_STYLE = ("short", "long")
ACCESSORY = ("none", "glasses", "hat", "earrings")

BLINK = {"rarely": 0.0, "sometimes": 0.45, "often": 1.1}  # blinks per second
TALK = {"silent": 0.0, "talking": 1.0, "talking quickly": 2.0}  # syllables per second
SWAY = {"still": 0.0, "slowly": 0.35, "quickly": 0.8}  # head sway frequency, Hz
NOD = ("no", "yes")

SHAPES = ("circle", "square", "triangle")
PATTERNS = ("striped", "checkered", "dotted")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
COLOURS = {
    "red": (220, 50, 50),
    "blue": (50, 90, 220),
    "green": (60, 180, 80),
    "yellow": (240, 210, 60),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "purple": (140, 80, 190),
    "orange": (245, 140, 40),
}

IDENTITY_FIELDS = {
    "skin": tuple(SKIN),
    "hair": tuple(HAIR),
    "background": tuple(BACKGROUND),
    "face_shape": tuple(FACE_SHAPE),
    "eye_spacing": tuple(EYE_SPACING),
    "hair_style": HAIR_STYLE,
    "accessory": ACCESSORY,
}
MOTION_FIELDS = {"blink": tuple(BLINK), "talk": tuple(TALK), "sway": tuple(SWAY), "nod": NOD}
SPLITS = ("train", "test")
HELD_OUT_FRACTION = 0.10
POSE_STARTS = ("random", "rising")
_SPLIT_SEED = 1234  # fixed forever: changing it would silently move identities between splits


@dataclass(frozen=True)
class Clip:
    """One synthetic clip: frames (T, H, W, 3) uint8, its caption and integer attribute labels."""

    frames: np.ndarray
    caption: str
    kind: str  # "portrait" | "shapes" | "pan"
    labels: dict[str, int] = field(default_factory=dict)
    identity: int = -1  # index into all_identities(); -1 for general clips


def all_identities() -> list[tuple[str, ...]]:
    """Every identity combination, in a fixed order (the cartesian product of IDENTITY_FIELDS)."""
    return list(itertools.product(*IDENTITY_FIELDS.values()))


def identity_split() -> dict[str, np.ndarray]:
    """Indices of train and held-out test identities (a fixed seeded permutation)."""
    n = len(all_identities())
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    n_test = int(round(n * HELD_OUT_FRACTION))
    return {"test": np.sort(perm[:n_test]), "train": np.sort(perm[n_test:])}


@dataclass(frozen=True)
class SyntheticVideoConfig:
    height: int = 64
    width: int = 64
    num_frames: int = 17
    fps: float = 8.0
    general_fraction: float = 0.2  # share of non-face clips
    supersample: int = 2
    # > 0: the head's position snapped to a grid of this many pixels in every frame, so it moves in
    # whole steps (a diagnostic of sub-patch motion; benchmarks/experiments/teacher_variant.py). 0: continuous.
    pose_grid_px: int = 0
    # "random": the sway and nod start at a random phase, so from the first frame the head may go
    # either way. "rising": the phase is drawn from (-pi/2, 0): every head starts on the rising
    # quarter of its sine, left of (sway) or above (nod) its centre and moving right / down for at
    # least a quarter period, so the first frame and the caption decide the motion's direction.
    pose_start: str = "random"

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"synthetic clips need height and width >= 16, got {self.height}x{self.width}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not 0.0 <= self.general_fraction <= 1.0:
            raise ValueError(f"general_fraction must be in [0, 1], got {self.general_fraction}")
        if self.pose_grid_px < 0:
            raise ValueError(f"pose_grid_px must be >= 0, got {self.pose_grid_px}")
        if self.pose_start not in POSE_STARTS:
            raise ValueError(f"pose_start must be one of {POSE_STARTS}, got {self.pose_start!r}")

    @classmethod
    def of(cls, data) -> "SyntheticVideoConfig":
        """The clips a run's ``DataConfig`` asks for (its seed picks clips, it is not a format field)."""
        return cls(height=data.height, width=data.width, num_frames=data.num_frames, fps=data.fps,
                   general_fraction=data.general_fraction)


class SyntheticVideos:
    """Deterministic, indexable source of synthetic clips: ``clip(i)`` is the same for a seed."""

    def __init__(self, config: SyntheticVideoConfig = SyntheticVideoConfig(), split: str = "train", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.config, self.split, self.seed = config, split, seed
        self._identities = all_identities()
        self._pool = identity_split()[split]

    def clip(self, index: int, *, portrait_only: bool = False) -> Clip:
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        if not portrait_only and rng.random() < self.config.general_fraction:
            return self._general(rng)
        identity = int(self._pool[rng.integers(len(self._pool))])
        motion = {name: str(values[rng.integers(len(values))]) for name, values in MOTION_FIELDS.items()}
        return render_portrait(self._identities[identity], motion, rng, self.config, identity)

    def _general(self, rng: np.random.Generator) -> Clip:
        if rng.random() < 0.5:
            return render_shapes(rng, self.config)
        return render_pan(rng, self.config)


# --------------------------------------------------------------------------------------------
# rendering helpers


def _grid(cfg: SyntheticVideoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x right, y down) at the supersampled resolution."""
    s = cfg.supersample
    h, w = cfg.height * s, cfg.width * s
    aspect = w / h
    ys = (np.arange(h) + 0.5) / h * 2 - 1
    xs = ((np.arange(w) + 0.5) / w * 2 - 1) * aspect
    return np.meshgrid(ys, xs, indexing="ij")  # (H, W) each


def _times(cfg: SyntheticVideoConfig) -> np.ndarray:
    return np.arange(cfg.num_frames) / cfg.fps


def _paint(canvas: np.ndarray, mask: np.ndarray, colour) -> None:
    """canvas (T, H, W, 3) float; mask (T, H, W) or (H, W) bool."""
    canvas[np.broadcast_to(mask, canvas.shape[:3])] = np.asarray(colour, dtype=np.float32)


def _finish(canvas: np.ndarray, cfg: SyntheticVideoConfig) -> np.ndarray:
    s = cfg.supersample
    t, h, w, c = canvas.shape
    pooled = canvas.reshape(t, h // s, s, w // s, s, c).mean(axis=(2, 4))
    return np.clip(np.round(pooled), 0, 255).astype(np.uint8)


def _ellipse(y, x, cy, cx, ry, rx) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _blink_openness(t: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """1 = open, ~0.08 = shut. Blinks at Poisson times, each a 0.3 s triangular closure."""
    duration = t[-1] + 1.0 if len(t) else 1.0
    n = rng.poisson(rate * duration) if rate > 0 else 0
    centres = rng.uniform(0.1, duration - 0.1, size=n) if n else np.zeros(0)
    closure = np.zeros_like(t)
    for c in centres:
        closure = np.maximum(closure, np.clip(1 - np.abs(t - c) / 0.15, 0, 1))
    return 1.0 - 0.92 * closure


def _mouth_openness(t: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """0 = closed. Speech as raised-cosine syllables with random loudness."""
    if rate == 0:
        return np.zeros_like(t)
    phase = rng.uniform(0, 2 * np.pi)
    syllable = np.floor((rate * t + phase / (2 * np.pi))).astype(int)
    loud = rng.uniform(0.45, 1.0, size=syllable.max() + 2)
    return loud[syllable] * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t + phase))


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def describe_portrait(identity: dict[str, str], motion: dict[str, str]) -> str:
    parts = [
        f"a cartoon portrait of a person with {identity['skin']} skin, {identity['hair_style']} "
        f"{identity['hair']} hair, {_a(identity['face_shape'])} face and {identity['eye_spacing']} eyes"
    ]
    if identity["accessory"] == "glasses":
        parts.append(" wearing glasses")
    elif identity["accessory"] == "hat":
        parts.append(" wearing a hat")
    elif identity["accessory"] == "earrings":
        parts.append(" wearing earrings")
    parts.append(f", against {_a(identity['background'])} background. ")
    talk = {"silent": "The person is silent", "talking": "The person is talking",
            "talking quickly": "The person is talking quickly"}[motion["talk"]]
    blink = {"rarely": "rarely blinks", "sometimes": "blinks sometimes", "often": "blinks often"}[motion["blink"]]
    sway = {"still": "keeps the head still", "slowly": "sways the head slowly",
            "quickly": "sways the head quickly"}[motion["sway"]]
    nod = " and nods" if motion["nod"] == "yes" else ""
    parts.append(f"{talk}, {blink}, {sway}{nod}.")
    return "".join(parts)


def render_portrait(identity_values: tuple[str, ...], motion: dict[str, str], rng: np.random.Generator,
                    cfg: SyntheticVideoConfig, identity_index: int = -1) -> Clip:
    ident = dict(zip(IDENTITY_FIELDS, identity_values))
    y, x = _grid(cfg)
    t = _times(cfg)
    T = len(t)
    canvas = np.empty((T, *y.shape, 3), np.float32)
    canvas[:] = np.asarray(BACKGROUND[ident["background"]], np.float32)

    # Head pose over time: sway (x), nod (y), each a sine from its phase; small per-clip base offset.
    # One draw per phase in either mode, so the rest of the clip is the same.
    # (6.3 for the nod is the bound "random" clips have always had: kept so they do not change.)
    lo, hi, nod_hi = (0.0, 2 * np.pi, 6.3) if cfg.pose_start == "random" else (-np.pi / 2, 0.0, 0.0)
    sway_f, phase = SWAY[motion["sway"]], rng.uniform(lo, hi)
    cx = rng.uniform(-0.05, 0.05) + 0.12 * np.sin(2 * np.pi * sway_f * t + phase) * (sway_f > 0)
    cy = 0.08 + rng.uniform(-0.04, 0.04) + (0.06 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(lo, nod_hi))
                                            if motion["nod"] == "yes" else 0.0 * t)
    if cfg.pose_grid_px:
        step = 2 * cfg.pose_grid_px / cfg.height  # pixels -> coordinate units (x is scaled by the aspect too)
        cx, cy = np.round(cx / step) * step, np.round(cy / step) * step
    cx, cy = cx[:, None, None], np.broadcast_to(cy, t.shape)[:, None, None]
    rx, ry = FACE_SHAPE[ident["face_shape"]]
    Y, X = y[None], x[None]
    hair = HAIR[ident["hair"]]

    # 1. hair behind the head (long style reaches the shoulders)
    if ident["hair_style"] == "long":
        _paint(canvas, (np.abs(X - cx) <= rx * 1.25) & (Y >= cy - ry * 0.6) & (Y <= cy + ry * 1.45), hair)
    _paint(canvas, _ellipse(Y, X, cy - ry * 0.12, cx, ry * 1.06, rx * 1.14), hair)
    # 2. earrings sit under the face edge, drawn before the face
    if ident["accessory"] == "earrings":
        for side in (-1, 1):
            _paint(canvas, _ellipse(Y, X, cy + ry * 0.25, cx + side * rx * 1.02, 0.05, 0.05), (235, 195, 40))
    # 3. face, with a fringe of hair over the forehead
    _paint(canvas, _ellipse(Y, X, cy, cx, ry, rx), SKIN[ident["skin"]])
    _paint(canvas, _ellipse(Y, X, cy - ry * 0.95, cx, ry * 0.32, rx * 0.95), hair)
    # 4. eyes: white, iris; blinking squashes them vertically
    open_ = _blink_openness(t, BLINK[motion["blink"]], rng)[:, None, None]
    ex = EYE_SPACING[ident["eye_spacing"]] * rx
    gaze = rng.uniform(-0.015, 0.015)
    for side in (-1, 1):
        ecx, ecy = cx + side * ex, cy - ry * 0.18
        _paint(canvas, _ellipse(Y, X, ecy, ecx, 0.09 * open_, 0.10), (250, 250, 250))
        _paint(canvas, _ellipse(Y, X, ecy, ecx + gaze, 0.055 * open_, 0.05), (30, 30, 60))
    # 5. glasses over the eyes: two rings and a bridge
    if ident["accessory"] == "glasses":
        for side in (-1, 1):
            ring = _ellipse(Y, X, cy - ry * 0.18, cx + side * ex, 0.14, 0.15) & ~_ellipse(
                Y, X, cy - ry * 0.18, cx + side * ex, 0.11, 0.12)
            _paint(canvas, ring, (20, 20, 20))
        bridge = (np.abs(Y - (cy - ry * 0.18)) < 0.018) & (np.abs(X - cx) < ex - 0.1)
        _paint(canvas, bridge, (20, 20, 20))
    # 6. nose and mouth; speech opens the mouth (dark) and shows it taller
    skin = np.asarray(SKIN[ident["skin"]], np.float32)
    _paint(canvas, _ellipse(Y, X, cy + ry * 0.12, cx, 0.05, 0.03), skin * 0.8)
    mouth = _mouth_openness(t, TALK[motion["talk"]], rng)[:, None, None]
    my = cy + ry * 0.50
    _paint(canvas, _ellipse(Y, X, my, cx, 0.025 + 0.11 * mouth, 0.14), (150, 40, 50))
    _paint(canvas, _ellipse(Y, X, my, cx, 0.005 + 0.085 * mouth, 0.11) & (mouth > 0.08), (60, 10, 20))
    # 7. hat on top
    if ident["accessory"] == "hat":
        top = cy - ry * 0.9
        _paint(canvas, (np.abs(X - cx) <= rx * 1.35) & (np.abs(Y - top) <= 0.04), (40, 40, 45))
        _paint(canvas, (np.abs(X - cx) <= rx * 0.8) & (Y >= top - 0.35) & (Y <= top), (40, 40, 45))
        _paint(canvas, (np.abs(X - cx) <= rx * 0.8) & (np.abs(Y - top + 0.08) <= 0.03), (200, 40, 40))

    labels = {k: IDENTITY_FIELDS[k].index(ident[k]) for k in IDENTITY_FIELDS}
    labels.update({k: MOTION_FIELDS[k].index(motion[k]) for k in MOTION_FIELDS})
    return Clip(_finish(canvas, cfg), describe_portrait(ident, motion), "portrait", labels, identity_index)


def _pick(rng: np.random.Generator, options, k: int = 1):
    idx = rng.choice(len(options), size=k, replace=False)
    return [list(options)[i] for i in idx]


def render_shapes(rng: np.random.Generator, cfg: SyntheticVideoConfig) -> Clip:
    y, x = _grid(cfg)
    t = _times(cfg)[:, None, None]
    n = int(rng.integers(1, 3))
    bg, *colours = _pick(rng, COLOURS, n + 1)
    canvas = np.empty((len(t), *y.shape, 3), np.float32)
    canvas[:] = np.asarray(COLOURS[bg], np.float32)
    phrases = []
    for colour in colours:
        shape = SHAPES[rng.integers(len(SHAPES))]
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        dx, dy = DIRECTIONS[direction]
        speed = rng.uniform(0.3, 0.6)  # unit coordinates per second
        x0, y0 = rng.uniform(-0.4, 0.4, size=2)
        cx, cy = x0 + dx * speed * (t - t.mean()), y0 + dy * speed * (t - t.mean())
        r = rng.uniform(0.16, 0.28)
        if shape == "circle":
            mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
        elif shape == "square":
            mask = (np.abs(y - cy) <= r * 0.85) & (np.abs(x - cx) <= r * 0.85)
        else:  # upward triangle
            mask = (y - cy <= r) & (y - cy >= -r) & (np.abs(x - cx) <= (y - cy + r) * 0.6)
        _paint(canvas, mask, COLOURS[colour])
        phrases.append(f"{_a(colour)} {shape} moves {direction}")
    caption = " and ".join(phrases) + f" across {_a(bg)} background."
    return Clip(_finish(canvas, cfg), caption[0].upper() + caption[1:], "shapes")


def render_pan(rng: np.random.Generator, cfg: SyntheticVideoConfig) -> Clip:
    y, x = _grid(cfg)
    t = _times(cfg)[:, None, None]
    c1, c2 = _pick(rng, COLOURS, 2)
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    speed = rng.uniform(0.25, 0.5)
    # The camera moving right makes the world move left in frame.
    u, v = x[None] + dx * speed * t, y[None] + dy * speed * t
    period = rng.uniform(0.3, 0.5)
    if pattern == "striped":
        mask = np.floor((u + v * 0.5) / period) % 2 == 0
    elif pattern == "checkered":
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:
        mask = ((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2 < 0.09
    canvas = np.empty((len(t), *y.shape, 3), np.float32)
    canvas[:] = np.asarray(COLOURS[c1], np.float32)
    _paint(canvas, mask, COLOURS[c2])
    caption = f"The camera pans {direction} over {_a(c1)} and {c2} {pattern} pattern."
    return Clip(_finish(canvas, cfg), caption, "pan")
