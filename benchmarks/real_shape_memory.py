"""Peak memory of one distillation iteration at the REAL Wan2.1-1.3B widths, beside `magicdistill plan`'s estimate.

A teacher with Wan2.1-T2V-1.3B's transformer widths (hidden 1536 = 12 heads x 128, FFN 8960, text 4096;
diffusers' WanTransformer3DModel from a config dict, random weights, no download) but only --blocks of
its 30 blocks, in bf16 on the CPU. Each variant runs, in its own fresh process, one generator turn and
one fake-score turn of distill/w2s.py's W2SMethod (the product code: the same roles, optimizers, EMA
and discriminator) under bf16 autocast with float32 master weights (--mixed-precision bf16):

  dmd2_full  DMD2 as published: frozen real copy + trainable fake copy + full generator (+ EMA copy)
  w2s_full   W2S: one frozen backbone + one LoRA for both scores; full generator (+ EMA copy)
  w2s_lora   W2S with a LoRA generator: one frozen backbone, the score LoRA and the generator adapter

Peak memory: the peak of live tensor bytes over building the method and the two turns, from the torch
profiler's allocation events (on a GPU, torch.cuda.max_memory_allocated); beside it the growth of the
process's peak resident set (ru_maxrss), which adds the allocator's and the runtime's own overhead. Memory is linear in blocks, so the per-block figure (from a second, smaller
block count) extrapolates to the full 30 blocks.

    python benchmarks/real_shape_memory.py [--blocks 4] [--small-blocks 2] [--tokens 3x16x16] [--text 64]
    python benchmarks/real_shape_memory.py --shape tiny   # the shipped tiny teacher (the test's check)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

VARIANTS = {"dmd2_full": ("separate", "full"), "w2s_full": ("shared_lora", "full"), "w2s_lora": ("shared_lora", "lora")}
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6)


def wan_dit(transformer):
    """Wan's transformer behind VideoDiT's call (x_t, sigma, cond): the text context only (T2V)."""
    from magicdistill.models.dit import VideoDiT

    class WanDiT(VideoDiT):
        is_i2v = False

        @property
        def dtype(self):
            return self.transformer.patch_embedding.weight.dtype

        def forward(self, x_t, sigma, cond, guidance=None, attention_kwargs=None):
            sigma = sigma.to(x_t.device, torch.float32).expand(x_t.shape[0])
            out = self.transformer(x_t.to(self.dtype), sigma * 1000.0, cond.context.to(self.dtype), return_dict=False)[0]
            return out.to(x_t.dtype)

    return WanDiT(transformer, prediction="v")


def write_folder(root: Path, args) -> Path:
    """A teacher folder holding only configs (plan reads them; the weights are random here)."""
    (root / "transformer").mkdir(parents=True, exist_ok=True)
    cfg = {"_class_name": "WanTransformer3DModel", **WAN_1_3B, "num_layers": args.blocks}
    (root / "transformer" / "config.json").write_text(json.dumps(cfg))
    (root / "dit.json").write_text(json.dumps({"max_text_tokens": args.text}))
    return root


def _shape(args) -> tuple[int, int, int, int]:
    t, h, w = (int(v) for v in args.tokens.split("x"))
    return (16, t, h, w)


def build(args, scores: str, generator: str):
    from magicdistill.config import DistillConfig
    from magicdistill.distill.w2s import DistillBatch, W2SMethod
    from magicdistill.models.text import TextEmbedding

    torch.manual_seed(0)
    b = args.batch
    if args.shape == "tiny":
        from magicdistill.models.dit import VideoDiT
        from magicdistill.pipeline import SHIPPED_DIR

        c, t, h, w = 16, 5, 16, 16
        teacher = VideoDiT.load(SHIPPED_DIR / "teacher")
        d, n_text, layers = 384, 64, ("double:-1",)
    else:
        from diffusers import WanTransformer3DModel

        c, t, h, w = _shape(args)
        torch.set_default_dtype(torch.bfloat16)  # built in bf16: no float32 copy on the way
        teacher = wan_dit(WanTransformer3DModel(**{**WAN_1_3B, "num_layers": args.blocks})).eval()
        torch.set_default_dtype(torch.float32)
        d, n_text, layers = 4096, args.text, ("block:-1",)
    cfg = DistillConfig(scores=scores, generator=generator, alpha_weak=0.25 if scores == "shared_lora" else 0.0,
                        batch_size=b, lora_rank=16, generator_lora_rank=16, disc_layers=layers,
                        mixed_precision=args.mixed_precision, real_guidance=2.0)
    method = W2SMethod(teacher, cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, t, h, w, generator=g)
    text = TextEmbedding(torch.randn(b, n_text, d, generator=g), torch.ones(b, n_text, dtype=torch.bool),
                         torch.randn(b, d, generator=g))
    null = TextEmbedding(torch.zeros(b, n_text, d), torch.ones(b, n_text, dtype=torch.bool), torch.zeros(b, d))
    i2v = teacher.is_i2v
    # the tiny teacher's first frames are 64 x 64 (its VAE is 4x spatial); Wan here is text-to-video
    image = torch.rand(b, 3, 4 * h, 4 * w, generator=g) * 2 - 1 if i2v else None
    return method, DistillBatch(x, text, null, image, x[:, :, :1].clone() if i2v else None)


def child(args) -> None:
    import magicdistill.distill.w2s  # noqa: F401  (imports before the baseline: they are not the method's memory)
    from magicdistill.distill.memory import autocast
    from magicdistill.models.dit import VideoDiT  # noqa: F401
    import diffusers  # noqa: F401
    import peft  # noqa: F401

    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores, generator = VARIANTS[args.child]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        method, batch = build(args, scores, generator)
        for it in (0, 1):  # a generator turn (it 0) and a fake-score turn (it 1)
            with autocast(method.cfg, "cpu"):
                method.step(batch, it, torch.Generator().manual_seed(it))
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    params = sum(p.numel() for n, p in method.backbone.named_parameters() if ".lora_" not in n)
    print(json.dumps({"variant": args.child, "peak_bytes": tensor_peak(prof), "rss_bytes": rss, "params": params}))


def tensor_peak(prof) -> int:
    """Peak bytes of live tensors from the profiler's allocation events (what torch.cuda.max_memory_allocated
    reports on a GPU): allocations and frees summed in time order."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak


def planned(args, scores: str, generator: str, blocks: int) -> float:
    from magicdistill.memory_plan import PlanOptions, estimate, latent_shape_of
    from magicdistill.pipeline import SHIPPED_DIR

    opts = dict(method="w2s", generator=generator, scores=scores, batch_size=args.batch,
                mixed_precision=args.mixed_precision)
    if args.shape == "tiny":
        folder = SHIPPED_DIR / "teacher"
        return estimate(folder, PlanOptions(latent_shape=latent_shape_of(folder), **opts)).total
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp), argparse.Namespace(**{**vars(args), "blocks": blocks}))
        return estimate(folder, PlanOptions(latent_shape=_shape(args), **opts)).total


def measure(args, blocks: int) -> dict[str, dict]:
    rows = {}
    for variant in VARIANTS:  # each in a fresh process: ru_maxrss is a process-lifetime peak
        cmd = [sys.executable, __file__, "--child", variant, "--shape", args.shape, "--blocks", str(blocks),
               "--tokens", args.tokens, "--text", str(args.text), "--batch", str(args.batch),
               "--mixed-precision", args.mixed_precision]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows[variant] = json.loads(out)
        rows[variant]["plan_bytes"] = planned(args, *VARIANTS[variant], blocks)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["wan1.3b", "tiny"], default="wan1.3b")
    ap.add_argument("--blocks", type=int, default=4, help="Wan blocks built (the real model has 30)")
    ap.add_argument("--small-blocks", type=int, default=2, help="a second block count, for the per-block figure")
    ap.add_argument("--tokens", default="3x16x16", help="latent frames x height x width (patch 1x2x2: /4 tokens)")
    ap.add_argument("--text", type=int, default=64, help="text tokens")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16"])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON only")
    ap.add_argument("--child", choices=list(VARIANTS))
    args = ap.parse_args()
    if args.child:
        return child(args)
    gib = 2 ** 30
    if args.shape == "tiny":
        rows = measure(args, 0)
        if args.json:
            return print(json.dumps(rows))
        for v, r in rows.items():
            print(f"{v:<10} tensors {r['peak_bytes'] / 2**20:7.0f} MiB  plan {r['plan_bytes'] / 2**20:7.0f} MiB  "
                  f"plan/measured {r['plan_bytes'] / r['peak_bytes']:.2f}  (process RSS +{r['rss_bytes'] / 2**20:.0f} MiB)")
        return
    big, small = measure(args, args.blocks), measure(args, args.small_blocks)
    if args.json:
        return print(json.dumps({"blocks": big, "small_blocks": small}))
    print(f"Wan2.1-1.3B widths (hidden 1536, 12 heads, FFN 8960), {args.blocks} of 30 blocks; latent 16x{args.tokens} "
          f"(batch {args.batch}), {args.text} text tokens; bf16 weights, --mixed-precision {args.mixed_precision}; "
          f"CPU, torch {torch.__version__}")
    print(f"{'variant':<10} {'tensors':>9} {'plan':>9} {'plan/meas':>9} {'ratio to dmd2':>13} "
          f"{'per block':>9} {'at 30 blocks':>12} {'plan at 30':>10} {'RSS':>8}")
    for v in VARIANTS:
        r, s = big[v], small[v]
        per_block = (r["peak_bytes"] - s["peak_bytes"]) / (args.blocks - args.small_blocks)
        at30 = r["peak_bytes"] + per_block * (30 - args.blocks)
        plan30 = planned(args, *VARIANTS[v], 30)
        print(f"{v:<10} {r['peak_bytes'] / gib:8.2f}G {r['plan_bytes'] / gib:8.2f}G {r['plan_bytes'] / r['peak_bytes']:9.2f} "
              f"{r['peak_bytes'] / big['dmd2_full']['peak_bytes']:13.3f} {per_block / gib:8.3f}G {at30 / gib:11.2f}G "
              f"{plan30 / gib:9.2f}G {r['rss_bytes'] / gib:7.2f}G")


if __name__ == "__main__":
    main()
