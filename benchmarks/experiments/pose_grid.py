"""Experiment (docs/DECISIONS.md "Stop 9"): is it sub-patch motion that the teacher cannot render?

Trains a teacher with the shipped recipe on clips whose head position is snapped to a --grid-px pixel
grid (SyntheticVideoConfig.pose_grid_px: with 4, the VAE's patch size, a moving head shifts its latents by
whole latent pixels), then compares it with the shipped teacher on held-out portraits snapped the same
way (benchmarks/compare_teachers.py: blockiness on moving vs still heads). If the grid teacher renders
moving heads cleanly, the patchwork comes from motion by parts of a patch, i.e. from the latent space.

    OMP_NUM_THREADS=2 python benchmarks/experiments/pose_grid.py --out runs/pose_grid [--grid-px 4] [--steps 3000]
"""
import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compare_teachers  # noqa: E402

import magicdistill.data.synthetic as synthetic  # noqa: E402
from magicdistill.config import TeacherTrainConfig  # noqa: E402
from magicdistill.pipeline import SHIPPED_DIR  # noqa: E402
from magicdistill.train.teacher import train_teacher  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--grid-px", type=int, default=4)
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--clips", type=int, default=16)
a = ap.parse_args()

# every clip this process renders (training set, test set, evaluation) has its head snapped to the grid
_of = synthetic.SyntheticVideoConfig.of.__func__
synthetic.SyntheticVideoConfig.of = classmethod(
    lambda cls, data: dataclasses.replace(_of(cls, data), pose_grid_px=a.grid_px))

teacher = Path(a.out) / "teacher"
if not teacher.is_dir():  # the shipped teacher's recipe (checkpoints/tiny/RECORD.md), on snapped clips
    cfg = TeacherTrainConfig.strict_update(TeacherTrainConfig(), steps=a.steps, num_clips=2000, lr=4e-4, seed=0,
                                           vae_dir=str(SHIPPED_DIR / "vae"))
    train_teacher(cfg, a.out)
sys.argv = ["compare_teachers", str(SHIPPED_DIR / "teacher"), str(teacher), "--guidance", "2", "--clips", str(a.clips),
            "--sheet", str(Path(a.out) / "sheet.png")]
compare_teachers.main()
