"""Experiment (negative, docs/DECISIONS.md "Stop 9"): does the shipped teacher discard the detail it is shown at
small sigma because it was hardly trained there? (Training sigma, shifted logit-normal with shift 3, puts 2.6 %
of its mass below sigma 0.3.) Fine-tunes the teacher's weights for --steps on sigma from a logit-normal of mean
--mean (shift 1; -2 puts the median at 0.12), same loss and data otherwise, and saves a model folder to
compare with benchmarks/denoise_error.py --channels 3 and benchmarks/compare_teachers.py.

    OMP_NUM_THREADS=2 python benchmarks/experiments/low_sigma_finetune.py --out DIR [--steps 300] [--mean -2]
"""
import argparse
import shutil
from pathlib import Path

import torch

from magicdistill.config import DataConfig, TeacherTrainConfig
from magicdistill.models.dit import VideoDiT
from magicdistill.models.text import TextEncoder
from magicdistill.models.vae import load_vae
from magicdistill.pipeline import SHIPPED_DIR
from magicdistill.train.teacher import latent_set_for, step_generator, teacher_loss

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--mean", type=float, default=-2.0)
ap.add_argument("--clips", type=int, default=2000, help="training clips (the shipped teacher's 2,000)")
ap.add_argument("--cache-dir", default="runs/cache2000")
a = ap.parse_args()
src = SHIPPED_DIR / "teacher"
dit = VideoDiT.load(src).train()
vae_dir = str(SHIPPED_DIR / "vae")
enc = TextEncoder(max_tokens=dit.meta.get("max_text_tokens", 64))
data = latent_set_for(DataConfig.of_model(dit.meta), vae_dir, "train", a.clips, load_vae(vae_dir), enc, Path(a.cache_dir))
null = enc([""])
cfg = TeacherTrainConfig(logit_mean=a.mean, logit_std=1.0, train_shift=1.0)
opt = torch.optim.AdamW(dit.parameters(), lr=1e-4, weight_decay=0.01, betas=(0.9, 0.99))
for s in range(a.steps):
    g = step_generator(1, s)
    loss = teacher_loss(dit, data, torch.randint(len(data), (8,), generator=g), null, cfg, g)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
    opt.step()
shutil.copytree(src, a.out, dirs_exist_ok=True)
dit.eval().save(a.out, **{**dit.meta, "vae": str(Path(vae_dir).resolve())})
print(a.out)
