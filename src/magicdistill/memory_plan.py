"""``magicdistill plan``: the per-GPU memory of a distillation run, from a model folder's config, before
renting GPUs (docs/SCALING.md).

Parts (bytes per GPU):
- weights: the frozen backbone (bf16 under mixed precision, else the run's dtype) and, for DMD2 as
  published (``scores="separate"``), the trainable fake copy;
- trainable: what learns (the score LoRA or fake copy, the generator copy or adapter, the
  discriminator head) at 4 bytes (float32 masters under mixed precision; else the dtype's size);
  its gradients (same size) and AdamW's two moments (twice);
- EMA: of the generator (a copy, or for a LoRA generator an adapter);
- activations: measured, not guessed: the teacher's own transformer is built on the ``meta`` device
  (no memory) and run forward at the batch's token count while autograd's saved tensors are summed
  (``saved_tensors_hooks``, distinct storages, parameters excluded). One iteration holds the
  graph of one full pass (the generator's, or the fake score's) plus the discriminator's pass up
  to its feature block; checkpointing keeps only each block's inputs plus one block's graph.
With ``gpus`` > 1 (FSDP2 over torchrun) every parameter-sized part is sharded 1/N and one block is
gathered whole at a time (counted twice: the one computing and the one prefetched).
The parameter counts are exact (the weight files' headers, else the model built on ``meta``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2 ** 30


@dataclass(frozen=True)
class PlanOptions:
    method: str = "w2s"  # w2s | dmd
    generator: str = "full"  # full | lora
    scores: str = "shared_lora"  # shared_lora | separate
    gpus: int = 1
    batch_size: int = 1  # per GPU
    latent_shape: tuple[int, int, int, int] = (16, 5, 16, 16)  # (C, T', h, w) of one clip
    lora_rank: int = 16
    generator_lora_rank: int = 16
    lora_targets: str = "attention"
    checkpointing: bool = False
    mixed_precision: str = "no"  # no | bf16
    dtype: str = "float32"
    discriminator: bool = True  # lambda_adv or lambda_disc > 0


@dataclass
class Plan:
    parts: dict[str, float]  # name -> bytes per GPU
    params: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def report(self) -> str:
        lines = [f"{name:<34} {b / GIB:9.3f} GiB" for name, b in self.parts.items()]
        lines.append(f"{'total per GPU':<34} {self.total / GIB:9.3f} GiB")
        return "\n".join([f"model: {self.params / 1e6:.1f} M parameters"] + lines + self.notes)


def _transformer_class(folder: Path):
    import diffusers

    cfg = json.loads((folder / "config.json").read_text())
    return getattr(diffusers, cfg["_class_name"]), cfg


def meta_transformer(folder: Path) -> torch.nn.Module:
    """The folder's transformer built on the meta device (shapes only, no memory)."""
    cls, _ = _transformer_class(folder)
    with torch.device("meta"):
        return cls.from_config(cls.load_config(str(folder)))


def stored_params(folder: Path) -> int | None:
    """Parameter count from the weight files' headers (exact for widened layers), None without weights."""
    files = sorted(folder.glob("*.safetensors"))
    return sum(stored_params_file(f) for f in files) if files else None


def lora_params(transformer: torch.nn.Module, targets: list[str], rank: int) -> int:
    n = 0
    for name, m in transformer.named_modules():
        if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            n += rank * (m.in_features + m.out_features)
    return n


@dataclass
class ActivationTrace:
    full: float  # saved bytes of one forward pass with grad
    upto_tap: float  # ... up to the end of the discriminator's feature block
    block_inputs: float  # what checkpointing keeps: every block's input tensors
    largest_block: float  # the graph of the largest block (recomputed under checkpointing)


def _dummy_inputs(transformer, cfg: dict, batch: int, latent_shape, dtype, text_tokens: int):
    c, t, h, w = latent_shape
    meta = torch.device("meta")
    in_ch = cfg.get("in_channels", c)
    x = torch.empty(batch, in_ch, t, h, w, device=meta, dtype=dtype)
    sigma = torch.empty(batch, device=meta)
    name = type(transformer).__name__
    if name == "WanTransformer3DModel":
        ctx = torch.empty(batch, text_tokens, cfg["text_dim"], device=meta, dtype=dtype)
        return (x, sigma, ctx), {}
    ctx = torch.empty(batch, text_tokens, cfg["text_embed_dim"], device=meta, dtype=dtype)
    mask = torch.ones(batch, text_tokens, dtype=torch.bool, device=meta)
    pooled = torch.empty(batch, cfg["pooled_projection_dim"], device=meta, dtype=dtype)
    return (x, sigma, ctx, mask, pooled), {}


def _blocks(transformer) -> list[torch.nn.Module]:
    out = []
    for attr in ("transformer_blocks", "single_transformer_blocks", "blocks"):
        out += list(getattr(transformer, attr, []))
    return out


def trace_activations(transformer: torch.nn.Module, cfg: dict, *, batch: int, latent_shape, dtype: torch.dtype,
                      text_tokens: int, tap: torch.nn.Module | None,
                      lora_targets: list[str] | None = None) -> ActivationTrace:
    """Saved-tensor bytes of one forward on the meta device: every parameter trainable, or (``lora_targets``)
    a frozen model whose targeted linears keep their input for their adapter (a LoRA role)."""
    transformer = transformer.to(dtype).requires_grad_(lora_targets is None)
    params = {p.untyped_storage()._cdata for p in transformer.parameters()}
    saved: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # counted tensors stay referenced: a freed storage's address could be reused
    if lora_targets is not None:
        def keep_input(m, args):
            x = args[0]
            alive.append(x)
            saved[x.untyped_storage()._cdata] = x.untyped_storage().nbytes()

        adapted = [m for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)
                   and any(name == t or name.endswith("." + t) for t in lora_targets)]
        lora_hooks = [m.register_forward_pre_hook(keep_input) for m in adapted]
    else:
        lora_hooks = []
    marks: dict[str, float] = {}
    per_block: list[float] = []
    inputs = [0.0]

    def pack(x):
        key = x.untyped_storage()._cdata
        if key not in params:
            alive.append(x)
            saved[key] = x.untyped_storage().nbytes()
        return x

    def total():
        return float(sum(saved.values()))

    def tensor_bytes(values) -> float:
        return float(sum(v.numel() * v.element_size() for v in values if torch.is_tensor(v) and v.is_floating_point()))

    hooks = []
    for b in _blocks(transformer):
        start: dict[str, float] = {}

        def before(m, args, kwargs, start=start):
            start["t"] = total()
            inputs[0] += tensor_bytes(list(args) + list(kwargs.values()))

        def after(m, args, out, start=start):
            per_block.append(total() - start["t"])

        hooks += [b.register_forward_pre_hook(before, with_kwargs=True), b.register_forward_hook(after)]
    if tap is not None:
        def at_tap(m, args, out):
            marks.setdefault("tap", total())

        hooks.append(tap.register_forward_hook(at_tap))
    args, kwargs = _dummy_inputs(transformer, cfg, batch, latent_shape, dtype, text_tokens)
    if lora_targets is not None:
        args[0].requires_grad_(True)  # frozen weights: the graph runs through the activations only
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            transformer(*args, **kwargs, return_dict=False)
    finally:
        for h in hooks + lora_hooks:
            h.remove()
    full = total()
    return ActivationTrace(full, marks.get("tap", full), inputs[0], max(per_block or [0.0]))


def estimate(teacher_dir: str | Path, opts: PlanOptions) -> Plan:
    from .models.discriminator import resolve_blocks
    from .models.lora import lora_targets

    teacher_dir = Path(teacher_dir)
    tdir = teacher_dir / "transformer"
    if not (tdir / "config.json").is_file():
        raise ValueError(f"--teacher {teacher_dir}: no transformer/config.json")
    if opts.gpus < 1:
        raise ValueError(f"--gpus {opts.gpus}: must be at least 1")
    record = json.loads((teacher_dir / "dit.json").read_text()) if (teacher_dir / "dit.json").is_file() else {}
    model = meta_transformer(tdir)
    _, cfg = _transformer_class(tdir)
    p = stored_params(tdir) or sum(x.numel() for x in model.parameters())
    if (teacher_dir / "vision.safetensors").is_file():
        p += stored_params_file(teacher_dir / "vision.safetensors")
    targets = lora_targets(model, opts.lora_targets)
    l_scores = lora_params(model, targets, opts.lora_rank)
    l_gen = lora_params(model, targets, opts.generator_lora_rank)
    dim = cfg.get("num_attention_heads", 1) * cfg.get("attention_head_dim", 1)
    head = dim * dim + dim + 2 * dim + dim + 1  # LayerNorm, Linear(dim, dim), Linear(dim, 1)
    mixed = opts.mixed_precision == "bf16"
    frozen_b = 2 if mixed else DTYPE_BYTES[opts.dtype]
    master_b = 4 if mixed else DTYPE_BYTES[opts.dtype]
    n = opts.gpus
    parts: dict[str, float] = {"frozen backbone weights": p * frozen_b / n}
    if opts.scores == "separate":
        trainable_fake = p
        parts["fake score copy weights"] = p * master_b / n
    else:
        trainable_fake = l_scores
        parts["score LoRA weights"] = l_scores * master_b / n
    trainable_gen = p if opts.generator == "full" else l_gen
    parts["generator weights" if opts.generator == "full" else "generator adapter weights"] = trainable_gen * master_b / n
    trainable = trainable_fake + trainable_gen + head
    parts["gradients"] = trainable * master_b / n
    parts["AdamW states"] = 2 * trainable * master_b / n
    parts["EMA of the generator"] = trainable_gen * master_b / n
    # activations at the batch's token count
    act_dtype = torch.bfloat16 if mixed or opts.dtype == "bfloat16" else torch.float32
    tap = resolve_blocks(model, ["double:-1"] if hasattr(model, "transformer_blocks") else ["block:-1"])[0]
    text_tokens = record.get("max_text_tokens", 512 if type(model).__name__ == "WanTransformer3DModel" else 64)
    text_tokens += record.get("image_tokens", 0)
    traces = {kind: trace_activations(model, cfg, batch=opts.batch_size, latent_shape=opts.latent_shape,
                                      dtype=act_dtype, text_tokens=text_tokens, tap=tap,
                                      lora_targets=None if kind == "full" else targets)
              for kind in {opts.generator, "full" if opts.scores == "separate" else "lora"}}

    def graph(kind: str, upto_tap: bool = False) -> float:
        t = traces[kind]
        if not opts.checkpointing:
            return t.upto_tap if upto_tap else t.full
        part = t.upto_tap / max(t.full, 1) if upto_tap else 1.0
        return t.block_inputs * part + t.largest_block

    # a generator turn holds the generator's graph and the discriminator's (fake role, up to its block);
    # a fake turn the fake score's graph and the discriminator's on real data
    fake = "full" if opts.scores == "separate" else "lora"
    parts["activations"] = max(graph(opts.generator), graph(fake)) + (graph(fake, True) if opts.discriminator else 0.0)
    if mixed:  # autocast keeps a bf16 copy of each float32 weight that trains whole, for the whole step
        parts["autocast bf16 weight copies"] = 2 * ((p if opts.generator == "full" else 0) +
                                                    (p if opts.scores == "separate" else 0)) / n
    notes = []
    if n > 1:
        blocks = _blocks(model)
        largest = max(sum(x.numel() for x in b.parameters()) for b in blocks) if blocks else 0
        parts["FSDP gathered blocks (2)"] = 2 * largest * frozen_b
        notes.append(f"sharded over {n} GPUs with FSDP2 (per-GPU batch {opts.batch_size})")
    return Plan(parts, p, notes)


def latent_shape_of(teacher_dir: Path) -> tuple[int, int, int, int]:
    """(C, T', h, w) of one clip of the teacher's recorded format, through its VAE's compression ratios."""
    from .pipeline import read_record, resolve_vae_dir

    rec = read_record(teacher_dir)
    vcfg = json.loads((resolve_vae_dir(teacher_dir) / "config.json").read_text())
    if "temperal_downsample" in vcfg:  # Wan
        rt, rs, c = 2 ** sum(vcfg["temperal_downsample"]), 2 ** len(vcfg["temperal_downsample"]), vcfg["z_dim"]
    else:
        rt = vcfg.get("temporal_ratio", vcfg.get("temporal_compression_ratio", 4))
        rs = vcfg.get("spatial_ratio", vcfg.get("spatial_compression_ratio", 8))
        c = vcfg["latent_channels"]
    return c, (rec["num_frames"] - 1) // rt + 1, rec["height"] // rs, rec["width"] // rs


def stored_params_file(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as h:
        return sum(int(torch.Size(h.get_slice(k).get_shape()).numel()) for k in h.keys())


def plan_for(teacher_dir: str | Path, *, data: str | Path | None = None, **options) -> Plan:
    """``magicdistill plan``: options as PlanOptions; the token count of ``data`` (a cache folder), else of
    the teacher's recorded clip format."""
    teacher_dir = Path(teacher_dir)
    if not (teacher_dir / "dit.json").is_file():
        raise ValueError(f"--teacher {teacher_dir}: no model folder (expected dit.json)")
    if data:
        from .data.cache_reader import CachedClips

        shape = CachedClips(data).latent_shape
    else:
        shape = latent_shape_of(teacher_dir)
    for key, allowed in (("method", ("w2s", "dmd")), ("generator", ("full", "lora")),
                         ("scores", ("shared_lora", "separate")), ("mixed_precision", ("no", "bf16")),
                         ("lora_targets", ("attention", "attention_ffn")), ("dtype", tuple(DTYPE_BYTES))):
        if key in options and options[key] not in allowed:
            raise ValueError(f"--{key.replace('_', '-')} {options[key]}: must be one of {', '.join(allowed)}")
    if options.get("batch_size", 1) < 1:
        raise ValueError("--batch-size must be at least 1")
    return estimate(teacher_dir, PlanOptions(latent_shape=tuple(shape), **options))
