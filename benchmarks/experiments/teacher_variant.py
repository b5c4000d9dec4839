"""Experiment (docs/DECISIONS.md "Stop 9", "Stop 10"): does a teacher trained on changed clips, or with a
changed patch embedding, render moving heads cleanly?

Trains a teacher with the shipped recipe, then compares it with the shipped teacher on held-out portraits
drawn the same way (benchmarks/compare_teachers.py: blockiness on moving vs still heads, a contact sheet).
Clips (SyntheticVideoConfig fields):
- --grid-px 4 (pose_grid_px): the head's position snapped to a 4-px grid, the VAE's patch size, so a moving
  head shifts its latents by whole latent pixels. Clean moving heads would blame sub-patch motion.
- --pose-start rising: every head starts moving right (sway) and down (nod), so the first frame and the
  caption decide where it goes. Clean moving heads would blame the two-way choice of direction.
Model:
- --embed-kernel 5 --image-padding repeat: each token's patch embedding also reads the 2 tokens around it
  on every side (DiTConfig.embed_tokens: a 10x10 latent-pixel kernel, stride 2), and every latent frame
  carries the first frame. Copying the face from a nearby token is then a linear map of the input.
- --skip gated: a learned skip around the x0 prediction that passes the input through at small sigma.
Training: --train-shift 1 draws sigma from SD3's logit-normal without the shift of 3, which trains sigma < 0.1
(where the sampler's last steps decide the detail) 30x more often.

    OMP_NUM_THREADS=2 python benchmarks/experiments/teacher_variant.py --out DIR [--grid-px 4] [--pose-start rising]
        [--embed-kernel 5] [--image-padding repeat] [--skip gated] [--train-shift 3] [--steps 3000] [--clips 16]
"""
import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compare_teachers  # noqa: E402

import magicdistill.data.synthetic as synthetic  # noqa: E402
import magicdistill.train.teacher as teacher_training  # noqa: E402
from magicdistill.config import TeacherTrainConfig  # noqa: E402
from magicdistill.pipeline import SHIPPED_DIR  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--grid-px", type=int, default=0)
ap.add_argument("--pose-start", choices=synthetic.POSE_STARTS, default="random")
ap.add_argument("--embed-kernel", type=int, default=1, help="tokens per side the patch embedding reads (odd)")
ap.add_argument("--image-padding", choices=("zero", "repeat"), default="zero")
ap.add_argument("--skip", choices=("none", "gated"), default="none", help="DiTConfig.skip")
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--train-shift", type=float, default=3.0, help="TeacherTrainConfig.train_shift (1: SD3's logit-normal)")
ap.add_argument("--clips", type=int, default=16)
a = ap.parse_args()

# every clip this process renders (training set, test set, evaluation) is changed the same way
_of = synthetic.SyntheticVideoConfig.of.__func__
synthetic.SyntheticVideoConfig.of = classmethod(
    lambda cls, data: dataclasses.replace(_of(cls, data), pose_grid_px=a.grid_px, pose_start=a.pose_start))

cfg = TeacherTrainConfig.strict_update(TeacherTrainConfig(), steps=a.steps, num_clips=2000, lr=4e-4, seed=0,
                                       train_shift=a.train_shift,
                                       vae_dir=str(SHIPPED_DIR / "vae"),
                                       dit={"image_padding": a.image_padding, "embed_tokens": a.embed_kernel, "skip": a.skip})
teacher = Path(a.out) / "teacher"
if not teacher.is_dir():  # the shipped teacher's recipe (checkpoints/tiny/RECORD.md), changed as asked
    teacher_training.train_teacher(cfg, a.out)
sys.argv = ["compare_teachers", str(SHIPPED_DIR / "teacher"), str(teacher), "--guidance", "2", "--clips", str(a.clips),
            "--sheet", str(Path(a.out) / "sheet.png")]
compare_teachers.main()
