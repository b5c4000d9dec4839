"""The probe network: the feature extractor of the synthetic domain (FID, FVD, KID, VBench-style dimensions).

Inception / I3D / VGG weights cannot be downloaded here, and they were never trained on cartoon
portraits anyway. The probe is trained by ``magicdistill train-probe`` to predict the attributes
that generated each synthetic clip (identity: skin, hair, background ...; motion: blink, talk, sway,
nod), so its features measure exactly what the generator is supposed to get right.

Architecture (docs/PROBE.md):
1. frame encoder: a 4x4 patch embedding and two stride-2 conv blocks (64 -> 4 px), a 1x1 squeeze and a linear layer keep
   *where* things are (a global average pool would forget whether the mouth is open) -> frame
   features (B*T, frame_dim), also trained with per-frame identity and kind heads;
2. temporal model: per frame, its features plus a projection of its spatial map and of the map's
   change since the previous frame, plus a sinusoidal frame-index encoding; then two residual dilated 1-D
   temporal convolutions and one transformer layer; clip features = a projection of the mean over
   time. The convolutions see neighbouring frames' differences and the position encodings tell the
   attention which frame is which, so the clip features depend on frame order: an auxiliary
   "in order" head, trained against clips with shuffled frames, makes that dependence strong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder
from torch import nn

from ..config import Strict
from ..data.synthetic import IDENTITY_FIELDS, MOTION_FIELDS

# checkpoints/tiny/probe next to the other shipped models (pipeline.SHIPPED_DIR is not imported:
# that would pull diffusers into every metric computation just for a path).
SHIPPED_PROBE_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny" / "probe"
KINDS = ("portrait", "shapes", "pan")  # Clip.kind values; attribute labels exist for portraits only
ORDER_HEAD = "in_order"
CONFIG_FILE, WEIGHTS_FILE = "probe.json", "probe.safetensors"


def attribute_classes() -> dict[str, int]:
    """Every labelled attribute of a portrait clip and its number of classes (identity then motion)."""
    return {k: len(v) for k, v in {**IDENTITY_FIELDS, **MOTION_FIELDS}.items()}


class ProbeConfig(Strict):
    resolution: int = Field(64, ge=16)  # inputs of any size are resized to this
    patch: int = Field(4, ge=1)  # the first layer embeds non-overlapping patch x patch cells
    widths: tuple[int, ...] = (48, 64, 96)  # the patch embedding, then one stride-2 conv block each
    squeeze: int = Field(32, ge=1)  # channels kept per cell of the final grid
    frame_dim: int = Field(96, ge=8)
    clip_dim: int = Field(96, ge=8)
    heads: int = Field(4, ge=1)
    name: str = "magicdistill-probe"


def _conv_block(cin: int, cout: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding),
                         nn.GroupNorm(8, cout), nn.GELU())


class _TemporalConv(nn.Module):
    """Residual 1-D conv over time (B, T, D); zero padding keeps any T >= 1."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.norm(h).transpose(1, 2)).transpose(1, 2)
        return h + self.mix(F.gelu(y))


def time_encoding(t: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(t, dim) sinusoidal encodings of frame indices 0..t-1 (defined for any t, unlike a learnt table)."""
    half = dim // 2
    freq = torch.exp(-math.log(100.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angle = torch.arange(t, device=device, dtype=torch.float32)[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1).to(dtype)


class ProbeNetwork(nn.Module):
    """``frame_features(video) -> (B*T, frame_dim)``, ``clip_features(video) -> (B, clip_dim)`` for
    video (B, 3, T, H, W) in [-1, 1]; ``forward`` returns every head's logits (training)."""

    def __init__(self, config: ProbeConfig = ProbeConfig()):
        super().__init__()
        self.config = config
        self.name = config.name
        w = config.widths
        # A patch embedding first: a first stride-2 3x3 conv block at full resolution alone cost as much
        # CPU time as this whole encoder (0.53 s vs 0.55 s for 1088 frames, measured side by side).
        self.encoder = nn.Sequential(_conv_block(3, w[0], config.patch, config.patch, 0),
                                     *[_conv_block(a, b) for a, b in zip(w[:-1], w[1:])],
                                     nn.Conv2d(w[-1], config.squeeze, 1))
        side = config.resolution // (config.patch * 2 ** (len(w) - 1))
        if side < 1 or side * config.patch * 2 ** (len(w) - 1) != config.resolution:
            raise ValueError(f"resolution {config.resolution} must be patch * 2^(len(widths)-1) * an integer")
        cells = side * side
        self.frame_proj = nn.Sequential(nn.Linear(config.squeeze * cells, config.frame_dim),
                                        nn.LayerNorm(config.frame_dim))
        # The temporal model reads each frame's spatial map and its change since the previous frame:
        # motion (a blink, a syllable, a sway) is a few pixels, which frame features tuned to identity
        # barely register, and a shuffled clip shows up as large, irregular changes.
        self.motion_proj = nn.Linear(2 * config.squeeze * cells, config.frame_dim)
        self.temporal = nn.ModuleList([_TemporalConv(config.frame_dim, 1), _TemporalConv(config.frame_dim, 2)])
        self.attention = nn.TransformerEncoderLayer(config.frame_dim, config.heads, 2 * config.frame_dim, dropout=0.0,
                                                    activation="gelu", batch_first=True, norm_first=True)
        self.clip_proj = nn.Sequential(nn.LayerNorm(config.frame_dim), nn.Linear(config.frame_dim, config.clip_dim))
        classes = attribute_classes()
        # Clip heads: every attribute, the clip kind and "are the frames in order" (one logit).
        self.clip_heads = nn.ModuleDict({**{k: nn.Linear(config.clip_dim, n) for k, n in classes.items()},
                                         "kind": nn.Linear(config.clip_dim, len(KINDS)),
                                         ORDER_HEAD: nn.Linear(config.clip_dim, 1)})
        # Frame heads: what one frame shows (identity, kind), so frame features are semantic on their own.
        self.frame_heads = nn.ModuleDict({**{k: nn.Linear(config.frame_dim, len(v))
                                             for k, v in IDENTITY_FIELDS.items()},
                                          "kind": nn.Linear(config.frame_dim, len(KINDS))})

    # 1. frames
    def _frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B*T, 3, R, R) in the probe's dtype, batch-major (b0t0, b0t1, ...)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"the probe takes video (B, 3, T, H, W), got shape {tuple(video.shape)}")
        if video.shape[2] < 2:
            raise ValueError(f"the probe needs at least 2 frames, got {video.shape[2]}")
        p = next(self.parameters())
        frames = video.to(device=p.device, dtype=p.dtype).transpose(1, 2).flatten(0, 1)
        r = self.config.resolution
        if frames.shape[-2:] != (r, r):
            frames = F.interpolate(frames, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return frames

    def _maps(self, video: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._frames(video)).flatten(1)  # (B*T, squeeze * cells)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.frame_proj(self._maps(video))

    # 2. time
    def _clip_from_maps(self, maps: torch.Tensor, feats: torch.Tensor, batch: int) -> torch.Tensor:
        m = maps.view(batch, -1, maps.shape[-1])
        change = torch.cat([torch.zeros_like(m[:, :1]), m[:, 1:] - m[:, :-1]], dim=1)
        h = feats.view(batch, -1, feats.shape[-1]) + self.motion_proj(torch.cat([m, change], dim=2))
        h = h + time_encoding(h.shape[1], h.shape[2], h.device, h.dtype)
        for block in self.temporal:
            h = block(h)
        h = self.attention(h)
        return self.clip_proj(h.mean(dim=1))

    def clip_features(self, video: torch.Tensor) -> torch.Tensor:
        maps = self._maps(video)
        return self._clip_from_maps(maps, self.frame_proj(maps), video.shape[0])

    def forward(self, video: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(clip-head logits {name: (B, n)}, frame-head logits {name: (B*T, n)})."""
        maps = self._maps(video)
        frames = self.frame_proj(maps)
        clip = self._clip_from_maps(maps, frames, video.shape[0])
        return ({k: head(clip) for k, head in self.clip_heads.items()},
                {k: head(frames) for k, head in self.frame_heads.items()})

    def save(self, path: str | Path, **record) -> Path:
        """A model folder: probe.json (config + ``record``, e.g. test accuracies) and probe.safetensors,
        written to a temporary folder first so a crash never leaves half a probe."""
        path = Path(path)
        with atomic_folder(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp / WEIGHTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps({"probe": self.config.model_dump(mode="json"), **record},
                                                      indent=1))
        return path


def load_probe(path: str | Path | None = None, device: str | torch.device = "cpu") -> ProbeNetwork:
    """The probe in eval mode, frozen; ``path`` = a folder written by ``ProbeNetwork.save``
    [default: the shipped probe trained on the synthetic domain]."""
    path = Path(path) if path is not None else SHIPPED_PROBE_DIR
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"no probe at {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                         "(train one with `magicdistill train-probe --out DIR`, then pass DIR/probe)")
    meta = json.loads((path / CONFIG_FILE).read_text())
    probe = ProbeNetwork(ProbeConfig.model_validate(meta["probe"]))
    probe.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    probe.record = {k: v for k, v in meta.items() if k != "probe"}  # how it was trained, its test accuracies
    return probe.to(device).eval().requires_grad_(False)
