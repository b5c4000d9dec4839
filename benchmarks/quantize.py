"""int8 weight-only quantization of the shipped 4-step generator: weight bytes, sampling time, peak
memory, and the quality gate.

Each variant runs in its own fresh process (as benchmarks/distill_memory.py does): load the
pipeline (fp32, bf16, or fp32 then int8 on load), count the weight bytes of the DiT (transformer +
vision encoder) and of the text encoder, time the sampling of one video (median of --repeats,
after one warm-up), and report the growth of the peak resident set from before loading to the end
and the resident set held at the end after returning freed memory to the OS (what the models hold
once the fp32 weights are gone; torchao is imported before the baseline in every variant).
Then the quality gate (quant/gate.py) compares the int8 pipeline with the fp32 one.

    python benchmarks/quantize.py [--repeats 3] [--clips 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("fp32", "bf16", "int8")


def _return_freed_memory() -> None:
    """glibc keeps freed blocks (the fp32 weights int8 replaced) in the process: hand them back so
    the resident set shows what the models hold. Linux/glibc only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def child(variant: str, repeats: int) -> None:
    import gc

    import psutil
    import torch

    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline
    from magicdistill.quant import bf16_bytes, weight_bytes
    from magicdistill.quant.folder import quantize_pipeline
    from magicdistill.quant.gate import _sample

    # imported by every variant before the baseline, so that code (not weights) is not counted:
    # torchao, and inductor, which quantize_ configures (Int8WeightOnlyConfig.set_inductor_config)
    import torch._inductor.config  # noqa: F401
    import torchao.quantization  # noqa: F401

    rss0 = psutil.Process().memory_info().rss
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after imports: the models' own memory
    pipe = I2VPipeline.from_dir(default_model(False), dtype=torch.bfloat16 if variant == "bf16" else torch.float32)
    bf16 = {"dit": bf16_bytes(pipe.dit), "text": bf16_bytes(pipe.text_encoder.model)}
    if variant == "int8":
        quantize_pipeline(pipe)
    image = torch.zeros(1, 3, pipe.spec.height, pipe.spec.width)
    prompt = "The person is talking quickly, blinks often and sways the head slowly."
    _sample(pipe, image, prompt, 0)  # warm-up
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        _sample(pipe, image, prompt, i)
        times.append(time.perf_counter() - t)
    gc.collect()
    _return_freed_memory()
    resident = (psutil.Process().memory_info().rss - rss0) / 2**20
    print(json.dumps({"variant": variant, "dit_bytes": weight_bytes(pipe.dit), "resident_mib": resident,
                      "text_bytes": weight_bytes(pipe.text_encoder.model), "bf16": bf16,
                      "sample_s": statistics.median(times),
                      "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))


def gate_child(clips: int) -> None:
    from magicdistill.generate import default_model
    from magicdistill.pipeline import I2VPipeline
    from magicdistill.quant.folder import quantize_pipeline
    from magicdistill.quant.gate import quality_gate

    ref = I2VPipeline.from_dir(default_model(False))
    q = I2VPipeline.from_dir(default_model(False))
    quantize_pipeline(q)
    print(json.dumps(quality_gate(ref, q, clips=clips).as_dict()))


def _run(*args) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--child", choices=VARIANTS)
    ap.add_argument("--gate", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.repeats)
    if args.gate:
        return gate_child(args.clips)

    import torch

    from magicdistill.quant.gate import GateResult

    rows = {v: _run("--child", v, "--repeats", str(args.repeats)) for v in VARIANTS}
    bf = rows["fp32"]["bf16"]
    print(f"shipped 4-step generator + MiniLM text encoder; {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}; sampling = one 17-frame video (4 steps, latents), median of {args.repeats}; "
          "each variant in a fresh process")
    print(f"{'variant':<22}{'DiT MB':>8}{'/bf16':>7}{'text enc MB':>13}{'/bf16':>7}{'sampling s':>12}"
          f"{'peak MiB':>10}{'resident MiB':>14}")
    names = {"fp32": "fp32", "bf16": "bf16", "int8": "int8 (fp32 compute)"}
    for v, r in rows.items():
        print(f"{names[v]:<22}{r['dit_bytes'] / 1e6:>8.2f}{r['dit_bytes'] / bf['dit']:>7.3f}"
              f"{r['text_bytes'] / 1e6:>13.2f}{r['text_bytes'] / bf['text']:>7.3f}{r['sample_s']:>12.3f}"
              f"{r['peak_mib']:>10.0f}{r['resident_mib']:>14.0f}")
    i8, f32 = rows["int8"], rows["fp32"]
    print(f"int8 / fp32: sampling time {i8['sample_s'] / f32['sample_s']:.2f}x, peak memory "
          f"{i8['peak_mib'] / f32['peak_mib']:.2f}x (it includes the fp32 weights it was quantized from), resident "
          f"at the end {i8['resident_mib'] / f32['resident_mib']:.2f}x")
    print("(the text encoder runs in fp32 in every variant: TextEncoder has no dtype option; bf16 here is the DiT)")
    g = _run("--gate", "--clips", str(args.clips))
    gate = GateResult(g["psnr_db"], g["latent_rel_l2"], g["probe_feature_rel_l2"])
    print(gate.report())


if __name__ == "__main__":
    main()
