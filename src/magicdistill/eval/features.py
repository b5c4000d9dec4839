"""Feature extractors for the metrics: the project's probe network, or real weights from local files.

Every extractor takes videos (B, 3, T, H, W) in [-1, 1] and gives
  frame_features -> (B*T, D)  per-frame features (FID, KID, subject consistency, i2v subject),
  clip_features  -> (B, D)    per-clip features (FVD),
and optionally perceptual_features -> (B*T, D) for the paired perceptual distance (else the frame
features are used). The real backbones are the de-facto standard TorchScript files of the
reference implementations, loaded with ``torch.jit.load`` (no torchvision, no download):

  kind        file (as published)          used by                      call convention
  inception   inception-2015-12-05.pt      StyleGAN2-ADA / clean-fid    x (N, 3, H, W) float in [0, 255];
                                           FID and KID                  ``model(x, return_features=True)`` -> (N, 2048)
  i3d         i3d_torchscript.pt           StyleGAN-V / fvd-comparison  x (B, 3, T, H, W) float in [0, 255];
                                           FVD                          ``model(x, rescale=True, resize=True,
                                                                        return_features=True)`` -> (B, 400)
  vgg16       vgg16.pt                     StyleGAN2-ADA (PPL's LPIPS)  x (N, 3, H, W) float in [0, 255], <= 256 px;
                                           perceptual distance          ``model(x, resize_images=False,
                                                                        return_lpips=True)`` -> (N, D)

Each of these covers one role; the other roles are filled by the probe network (see ``Combined``),
so ``--extractor i3d`` gives a real-I3D FVD next to probe-feature FID and VBench-style scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

KINDS = ("probe", "inception", "i3d", "vgg16")
WEIGHT_FILES = {"inception": "inception-2015-12-05.pt", "i3d": "i3d_torchscript.pt", "vgg16": "vgg16.pt"}


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str

    def frame_features(self, video: torch.Tensor) -> torch.Tensor: ...

    def clip_features(self, video: torch.Tensor) -> torch.Tensor: ...


def perceptual_features(extractor: FeatureExtractor, video: torch.Tensor) -> torch.Tensor:
    """The extractor's perceptual features when it has them, its frame features otherwise."""
    fn = getattr(extractor, "perceptual_features", None)
    return fn(video) if fn is not None else extractor.frame_features(video)


def to_pixel_range(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float [0, 255], the input range all three reference TorchScript models expect."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5)


def flatten_frames(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B*T, 3, H, W), frames of one video consecutive."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, T, H, W), got {tuple(video.shape)}")
    return video.transpose(1, 2).flatten(0, 1)


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(batch)])


class TorchScriptModel:
    """A local TorchScript file, with the file named in every error."""

    def __init__(self, path: str | Path, kind: str, device: str | torch.device = "cpu"):
        self.path, self.kind, self.device = Path(path), kind, torch.device(device)
        if not self.path.is_file():
            raise ValueError(f"{kind} weights not found: {self.path} (expected the TorchScript file "
                             f"{WEIGHT_FILES.get(kind, '')}; see docs/EVALUATION.md)")
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"{self.path} is not a TorchScript file that torch.jit.load can read "
                             f"({type(e).__name__}); expected {WEIGHT_FILES.get(kind, 'a TorchScript model')}") from None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        try:
            out = self.model(x.to(self.device), **kwargs)
        except (RuntimeError, TypeError) as e:  # wrong file for this role: signature or shapes do not fit
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path} does not accept the {self.kind} input convention "
                             f"{tuple(x.shape)} {kwargs} ({first}); see docs/EVALUATION.md") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"{self.path} returned {getattr(out, 'shape', type(out))}, expected ({x.shape[0]}, D) "
                             f"features for the {self.kind} role")
        return out.float().cpu()


class InceptionFeatures:
    """Per-frame Inception-v3 pool features (FID's 2048-d), from ``inception-2015-12-05.pt``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch: int = 64):
        self.model, self.batch, self.name = TorchScriptModel(path, "inception", device), batch, "inception-v3"

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        # the TorchScript graph resizes to 299x299 itself (bilinear), as in the StyleGAN2-ADA FID
        return _batched(lambda x: self.model(to_pixel_range(x), return_features=True), flatten_frames(video), self.batch)


class I3DFeatures:
    """Per-clip I3D (Kinetics-400) logits-layer features for FVD, from StyleGAN-V's ``i3d_torchscript.pt``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch: int = 8):
        self.model, self.batch, self.name = TorchScriptModel(path, "i3d", device), batch, "i3d"

    def clip_features(self, video: torch.Tensor) -> torch.Tensor:
        # rescale=True maps [0, 255] to the network's [-1, 1]; resize=True resizes frames to 224x224
        return _batched(lambda x: self.model(to_pixel_range(x), rescale=True, resize=True, return_features=True),
                        video, self.batch)


class VGG16Features:
    """LPIPS-style VGG16 features (channel-normalised, per layer) from StyleGAN2-ADA's ``vgg16.pt``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch: int = 64):
        self.model, self.batch, self.name = TorchScriptModel(path, "vgg16", device), batch, "vgg16-lpips"

    def perceptual_features(self, video: torch.Tensor) -> torch.Tensor:
        def run(x: torch.Tensor) -> torch.Tensor:
            if max(x.shape[-2:]) > 256:  # StyleGAN2-ADA's PPL downsamples to 256 ('area'); we keep the aspect
                s = 256 / max(x.shape[-2:])
                x = F.interpolate(x, size=(round(x.shape[-2] * s), round(x.shape[-1] * s)), mode="area")
            return self.model(to_pixel_range(x), resize_images=False, return_lpips=True)

        return _batched(run, flatten_frames(video), self.batch)


class Combined:
    """One extractor made of several: each role (frame / clip / perceptual) from the given backbone."""

    def __init__(self, base: FeatureExtractor, *, frame=None, clip=None, perceptual=None):
        self.frame = frame or base
        self.clip = clip or base
        self.perceptual = perceptual or base
        names = dict(frame=self.frame.name, clip=self.clip.name, perceptual=self.perceptual.name)
        self.name = base.name if len(set(names.values())) == 1 else ",".join(f"{k}:{v}" for k, v in names.items())

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.frame.frame_features(video)

    def clip_features(self, video: torch.Tensor) -> torch.Tensor:
        return self.clip.clip_features(video)

    def perceptual_features(self, video: torch.Tensor) -> torch.Tensor:
        return perceptual_features(self.perceptual, video)


def get_extractor(kind: str = "probe", path: str | Path | None = None, *, device: str | torch.device = "cpu",
                  probe_path: str | Path | None = None) -> FeatureExtractor:
    """The extractor for ``kind``: ``probe`` (``path`` = a probe folder, default the shipped one), or
    ``inception`` / ``i3d`` / ``vgg16`` with ``path`` = the local TorchScript file; the roles that
    backbone does not cover come from the probe (``probe_path``, default the shipped one)."""
    if kind not in KINDS:
        raise ValueError(f"unknown extractor {kind!r}; choose one of {', '.join(KINDS)}")
    from .probe import load_probe

    if kind == "probe":
        return load_probe(path, device=device)
    if path is None:
        raise ValueError(f"--extractor {kind} needs --weights PATH to a local {WEIGHT_FILES[kind]} "
                         "(nothing is downloaded; see docs/EVALUATION.md)")
    backbone = {"inception": InceptionFeatures, "i3d": I3DFeatures, "vgg16": VGG16Features}[kind](path, device)
    role = {"inception": "frame", "i3d": "clip", "vgg16": "perceptual"}[kind]
    return Combined(load_probe(probe_path, device=device), **{role: backbone})
