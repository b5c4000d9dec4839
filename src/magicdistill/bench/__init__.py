"""``magicdistill bench``: the papers' tables in miniature (MagicDistillation Table 1, the alpha_weak
ablation, metric vs distillation iterations), with seeds, 95% intervals, NFE and wall-time ratios.

plan.py (what runs), runner.py (distil, sample, measure; resumable), stats.py (intervals),
report.py (docs/RESULTS.md), plot.py (PNG plots without matplotlib).
"""
