"""Memory and overhead of one distillation iteration: W2S (one backbone + one LoRA) vs DMD2 with
separate full real and fake copies, same model, same batch; each with a full or a LoRA generator.

Variants (what each holds besides activations; "copy" = one model-sized set of weights):
  dmd2_full  DMD2 as published: frozen real copy, trainable fake copy (+ grads + 2 AdamW states),
             full generator copy (+ grads + 2 AdamW states) and its EMA copy;
  w2s_full   one frozen backbone + the score LoRA; full generator copy (+ grads, AdamW) and EMA copy;
  w2s_lora   one frozen backbone + the score LoRA + the generator adapter (+ its EMA): no copy at all;
  dmd2_lora  the apples-to-apples baseline for w2s_lora: DMD2's real and fake copies, with the same
             LoRA generator (an adapter on the frozen real copy).

Peak memory: each variant runs in its own fresh process; on CPU we report the growth of the peak
resident set (ru_maxrss) from just before the teacher is built to the end of the iterations, i.e.
weights + gradients + optimizer states + activations of the method (CPU only: the script builds
everything on the CPU).
Overhead: the mean time of one r-cycle (1 generator turn + (r-1) fake turns, r = 5) against the
sum of the forward/backward passes it contains, each timed alone on the same modules.

    python benchmarks/distill_memory.py [--heads 4] [--head-dim 32] [--repeats 3] [--rank 16] [--memory-only]

--memory-only skips the overhead timing (many passes; minutes on a loaded machine at --heads 16).

--heads widens the random-init model so that weights dominate, as at real scale (the embedded
default's activations are comparable to its 3 M weights); keep --head-dim 32, the sum of the
default RoPE axes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


VARIANTS = {  # name: (scores, generator)
    "w2s_full": ("shared_lora", "full"), "dmd2_full": ("separate", "full"),
    "w2s_lora": ("shared_lora", "lora"), "dmd2_lora": ("separate", "lora"),
}


def _build(args, variant: str):
    from magicdistill.config import DiTConfig, DistillConfig
    from magicdistill.distill.w2s import DistillBatch, W2SMethod
    from magicdistill.models.dit import VideoDiT
    from magicdistill.models.text import TextEmbedding

    torch.manual_seed(0)
    dit_cfg = DiTConfig(hidden_heads=args.heads, head_dim=args.head_dim)
    teacher = VideoDiT.tiny(dit_cfg, "i2v")
    scores, generator = VARIANTS[variant]
    cfg = DistillConfig(scores=scores, alpha_weak=0.25 if scores == "shared_lora" else 0.0, batch_size=args.batch,
                        generator=generator, lora_rank=args.rank, generator_lora_rank=args.rank)
    method = W2SMethod(teacher, cfg)
    g = torch.Generator().manual_seed(0)
    b, c, d = args.batch, dit_cfg.latent_channels, dit_cfg.text_dim
    x = torch.randn(b, c, 5, 16, 16, generator=g)  # the embedded default's latent shape (17 x 64 x 64 frames)
    text = TextEmbedding(torch.randn(b, 12, d, generator=g), torch.ones(b, 12, dtype=torch.bool), torch.randn(b, d, generator=g))
    null = TextEmbedding(torch.zeros(b, 12, d), torch.ones(b, 12, dtype=torch.bool), torch.zeros(b, d))
    batch = DistillBatch(x, text, null, torch.rand(b, 3, 64, 64, generator=g) * 2 - 1, x[:, :, :1].clone())
    return method, batch


def child(args) -> None:
    """One variant in this process: peak memory of r iterations, then timings."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    method, batch = _build(args, args.child)
    for it in range(method.cfg.generator_every):  # one full cycle: a generator turn and the fake turns
        method.step(batch, it, torch.Generator().manual_seed(it))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    trainable = sum(p.numel() for p in method.generator_weights.parameters())
    model = sum(p.numel() for n, p in method.backbone.named_parameters() if ".lora_" not in n)
    out = {"variant": args.child, "peak_mib": peak_kib / 1024, "model_params": model, "generator_trainable": trainable}
    if args.child == "w2s_full" and not args.memory_only:
        out.update(overhead(method, batch, args.repeats))
    print(json.dumps(out))


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def overhead(method, batch, repeats: int) -> dict:
    """Cycle time vs the sum of its passes, each timed alone on the same modules and shapes."""
    from magicdistill.sampling import guided_velocity

    r = method.cfg.generator_every
    cond, uncond = method.conditions(batch)
    sigma = torch.full((batch.x_gt.shape[0],), 0.7)
    x = batch.x_gt

    def gen_fwd_bwd():
        gc = method.generator.condition(batch.text, batch.image, batch.image_latent)
        method.generator(x, sigma, gc).pow(2).mean().backward()
        method.generator_weights.zero_grad(set_to_none=True)

    @torch.no_grad()
    def gen_fwd():
        method.generator(x, sigma, method.generator.condition(batch.text, batch.image, batch.image_latent))

    @torch.no_grad()
    def real_cfg_fwd():
        with method.scores.use("real") as m:
            guided_velocity(m, x, sigma, cond, uncond, 6.0)

    @torch.no_grad()
    def fake_fwd():
        with method.scores.use("fake") as m:
            m(x, sigma, cond)

    def fake_fwd_bwd():
        with method.scores.use("fake") as m:
            m(x, sigma, cond).pow(2).mean().backward()
        for p in method.fake_params:
            p.grad = None

    t = {k: _timed(f, repeats) for k, f in {"gen_fwd_bwd": gen_fwd_bwd, "gen_fwd": gen_fwd, "real_cfg_fwd": real_cfg_fwd,
                                             "fake_fwd": fake_fwd, "fake_fwd_bwd": fake_fwd_bwd}.items()}
    # what one cycle contains (w2s.py): generator turn = G fwd+bwd, real score (CFG, one batched
    # call), fake score, discriminator features with grad (fwd+bwd), then its own fake turn;
    # a fake turn = G fwd (no grad), fake score fwd+bwd, discriminator on real data (fwd+bwd).
    passes = (t["gen_fwd_bwd"] + t["real_cfg_fwd"] + t["fake_fwd"] + t["fake_fwd_bwd"]
              + r * (t["fake_fwd_bwd"] * 2) + (r - 1) * t["gen_fwd"])

    def cycle():
        for it in range(r):
            method.step(batch, it, torch.Generator().manual_seed(it))

    cyc = _timed(cycle, repeats)
    return {"cycle_s": cyc, "passes_s": passes, "overhead": cyc / passes - 1, "pass_times_s": t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16, help="rank of the score LoRA and of the LoRA generator")
    ap.add_argument("--memory-only", action="store_true", help="skip the overhead timing")
    ap.add_argument("--child", choices=list(VARIANTS))
    args = ap.parse_args()
    if args.child:
        return child(args)
    rows = {}
    for variant in VARIANTS:  # each in a fresh process: ru_maxrss is a process-lifetime peak
        cmd = [sys.executable, __file__, "--child", variant, "--heads", str(args.heads), "--head-dim", str(args.head_dim),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--rank", str(args.rank)]
        cmd += ["--memory-only"] if args.memory_only else []
        rows[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    w = rows["w2s_full"]
    print(f"model: hidden {args.heads}x{args.head_dim}, {w['model_params'] / 1e6:.1f} M params; batch {args.batch}; "
          f"LoRA rank {args.rank}; device cpu, torch {torch.__version__}")
    print("peak memory growth, one r-cycle (generator: trainable params):")
    for name, r in rows.items():
        print(f"  {name:<10} {r['peak_mib']:6.0f} MiB  (generator {r['generator_trainable'] / 1e6:.2f} M)")
    mib = {k: r["peak_mib"] for k, r in rows.items()}
    print(f"ratios: w2s_full / dmd2_full {mib['w2s_full'] / mib['dmd2_full']:.2f}; "
          f"w2s_lora / dmd2_full {mib['w2s_lora'] / mib['dmd2_full']:.2f}; "
          f"w2s_lora / dmd2_lora {mib['w2s_lora'] / mib['dmd2_lora']:.2f}")
    if args.memory_only:
        return
    print(f"w2s_full: time per 5-iteration cycle {w['cycle_s']:.2f} s vs sum of its passes alone {w['passes_s']:.2f} s: "
          f"overhead {100 * w['overhead']:+.0f}%")
    print("passes (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in w["pass_times_s"].items()))


if __name__ == "__main__":
    main()
