"""The quantization quality gate: the quantized pipeline against the unquantized one, same seeds,
same held-out first frames and captions (demo.held_out_clips: identities never trained on).

Per clip, gated on the worst clip:
- PSNR (dB) between the decoded videos (demo.psnr; frames in [-1, 1]);
- relative L2 of the sampled latents, ||z_q - z|| / ||z||, in the VAE's latent space (the space the
  DiT works in): the feature distance that is always available.
Reported, not gated: the relative L2 of the probe's per-frame features (magicdistill.eval.probe)
when a probe is available (``load_probe()``; none is shipped yet, so its scale is uncalibrated).
Both pipelines share the VAE, so every difference comes from the int8 DiT, vision and text encoders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

# Thresholds: 40 dB is an RMS error of 1 % of the frame range (invisible); the 4-step generator is
# 25-26 dB from the 50-step teacher (docs/BENCHMARKS.md "demo"), so a passing quantized model
# moves a video far less than distillation does. 3 % latent error bounds the same from the DiT's
# side. The shipped generator measures >= 52 dB and <= 0.01 (docs/QUANTIZATION.md).
PSNR_MIN_DB = 40.0
LATENT_REL_L2_MAX = 0.03


@dataclass(frozen=True)
class GateResult:
    psnr_db: list[float]  # per clip
    latent_rel_l2: list[float]
    probe_feature_rel_l2: list[float] | None = None  # reported only (see module docstring)
    psnr_min_db: float = PSNR_MIN_DB
    latent_rel_l2_max: float = LATENT_REL_L2_MAX

    @property
    def passed(self) -> bool:
        return min(self.psnr_db) >= self.psnr_min_db and max(self.latent_rel_l2) <= self.latent_rel_l2_max

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def report(self) -> str:
        n = len(self.psnr_db)
        return (f"quality gate ({n} held-out clips, seeds 0..{n - 1}, quantized vs unquantized):\n"
                f"  PSNR of decoded frames: worst {min(self.psnr_db):.2f} dB, mean {sum(self.psnr_db) / n:.2f} dB "
                f"(threshold >= {self.psnr_min_db:.0f} dB)\n"
                f"  latent relative L2: worst {max(self.latent_rel_l2):.4f}, mean {sum(self.latent_rel_l2) / n:.4f} "
                f"(threshold <= {self.latent_rel_l2_max})\n"
                + (f"  probe frame-feature relative L2 (reported, not gated): worst "
                   f"{max(self.probe_feature_rel_l2):.4f}\n"
                   if self.probe_feature_rel_l2 else "  probe frame features: no probe available (not measured)\n")
                + f"  gate: {'PASS' if self.passed else 'FAIL'}")


def _sample(pipe, image: torch.Tensor, prompt: str, seed: int) -> torch.Tensor:
    from ..pipeline import model_sampler, sample_video

    rec = model_sampler(pipe.dit.meta)
    return sample_video(pipe.dit, pipe.vae, pipe.text_encoder([prompt]), pipe.null_text, image,
                        num_frames=pipe.spec.num_frames, generator=torch.Generator().manual_seed(seed),
                        steps=rec["steps"], guidance=rec["guidance"], shift=rec["shift"], sampler=rec["kind"], eta=rec["eta"],
                        decode=False)


def _rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).norm() / ref.float().norm()).item()


def default_probe():
    """The shipped feature probe if there is one, else None."""
    try:
        from ..eval.probe import load_probe

        return load_probe()
    except (ImportError, ValueError):
        return None


@torch.no_grad()
def quality_gate(reference, quantized, *, clips: int = 4, data_seed: int = 0, probe="default") -> GateResult:
    """Compare two I2VPipelines (the reference's sampler settings and video spec are used by both).
    ``probe``: a feature extractor with ``frame_features(video)``, None, or the shipped one."""
    from ..demo import held_out_clips, psnr

    probe = default_probe() if probe == "default" else probe
    videos, captions = held_out_clips(reference.dit.meta, clips, data_seed)
    psnrs, rels, feats = [], [], []
    for i, (video, caption) in enumerate(zip(videos, captions)):
        image = video[:, 0][None]  # the clip's first frame conditions both pipelines
        z_ref, z_q = _sample(reference, image, caption, i), _sample(quantized, image, caption, i)
        rels.append(_rel_l2(z_q, z_ref))
        v_ref, v_q = reference.vae.decode(z_ref), reference.vae.decode(z_q)
        psnrs.append(psnr(v_ref, v_q))
        if probe is not None:
            feats.append(_rel_l2(probe.frame_features(v_q), probe.frame_features(v_ref)))
    return GateResult(psnrs, rels, feats or None)
