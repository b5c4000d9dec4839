"""Export a distilled generator for plain diffusers (``magicdistill export``).

Two products, both for the *base* diffusers pipeline the generator was distilled from:

- **a pipeline folder** (``export_pipeline``): a standard diffusers folder, ``model_index.json`` and
  one subfolder per component, that ``DiffusionPipeline.from_pretrained(DIR)`` loads. The
  generator's transformer(s) (LoRA merged) replace the base's; every other component is the base's,
  hard-linked (copied across filesystems). The scheduler is rewritten so that diffusers' own
  denoising loop takes exactly the generator's steps (``export_scheduler``). HunyuanVideo's pipeline
  passes the sigmas linspace(1, 0, N + 1)[:-1] itself, so its FlowMatchEulerDiscreteScheduler only
  needs the generator's ``shift``. The Wan pipelines call ``set_timesteps(N)`` alone, and neither
  the UniPC scheduler the Wan folders ship (integer timesteps, a grid ending at sigma 1/1000) nor
  FlowMatchEulerDiscreteScheduler (a grid ending at shift(shift(1/1000))) takes our grid from N; so
  a Wan export gets diffusers' FlowMapEulerDiscreteScheduler: shift(linspace(1, 0, N + 1)) with
  float timesteps 1000 sigma and the plain Euler update, i.e. ``flow.sigma_schedule`` and
  ``sampling.euler_sample`` step for step. diffusers reads no step count or guidance from a
  folder: those go into the folder's README.md (and the command's output) as the call's
  ``num_inference_steps`` / ``guidance_scale``.
- **a LoRA file** (``export_lora``): a safetensors file in diffusers' own LoRA format
  (``transformer.<module>.lora_A/B.weight``, written by the pipeline class's ``save_lora_weights``)
  that ``pipe.load_lora_weights(FILE)`` accepts on the base pipeline. A LoRA generator is written
  as is (its alpha/rank scale folded into B, since diffusers loads LoRAs at scale alpha = rank);
  a full-weight generator becomes one by a rank-``r`` SVD of each linear layer's weight change.
  What a LoRA cannot carry (changed biases, norms, embeddings, or the part of a change beyond rank
  r) is measured and reported, never dropped silently. A two-expert generator (Wan 2.2 A14B) gets one
  file per expert: ``FILE`` for ``transformer`` and ``<stem>.transformer_2.safetensors`` beside it,
  which diffusers' Wan LoRA loader takes with ``load_into_transformer_2=True``.

The embedded tiny default (10x10 patch embedding, gated 32-channel output) has no diffusers
equivalent; ``export`` says so instead of writing something diffusers would load wrongly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from .convert import INDEX, _link_or_copy, _read_json, read_pipeline_index
from .experts import EXPERTS as TRANSFORMERS
# what diffusers' pipelines cannot express: shown as one line when asked to export the tiny default
TINY_NOT_EXPORTABLE = ("the embedded tiny model has no diffusers equivalent (10x10 patch embedding, gated "
                       "32-channel output): export works on models distilled from a diffusers Wan/HunyuanVideo folder")


# pipelines whose __call__ passes its own sigmas linspace(1, 0, N + 1)[:-1] to set_timesteps; the others
# (Wan) call set_timesteps(N) alone, so the scheduler itself must produce the generator's grid
PASSES_SIGMAS = ("HunyuanVideoPipeline", "HunyuanVideoImageToVideoPipeline", "HunyuanVideo15Pipeline",
                 "HunyuanVideo15ImageToVideoPipeline")
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler", "FlowMapEulerDiscreteScheduler")


def scheduler_spec(pipeline: str, config: dict, *, shift: float) -> tuple[str, dict]:
    """(class name, config) of the scheduler that makes ``pipeline``'s own loop take the generator's Euler
    steps at ``shift`` on ``flow.sigma_schedule``'s grid; ``config``: the base's scheduler_config.json."""
    name = config.get("_class_name")
    if name not in FLOW_SCHEDULERS or (name == "UniPCMultistepScheduler" and not config.get("use_flow_sigmas")):
        raise ValueError(f"scheduler {name!r} is not a flow-matching scheduler export knows "
                         f"({', '.join(FLOW_SCHEDULERS)}; UniPC with use_flow_sigmas)")
    train = int(config.get("num_train_timesteps", 1000))
    if pipeline in PASSES_SIGMAS and name == "FlowMatchEulerDiscreteScheduler":
        keep = {k: v for k, v in config.items() if not k.startswith("_")}
        return name, {**keep, "shift": shift}
    # shift(linspace(1, 0, N + 1)), timesteps 1000 sigma as floats, x + (s' - s) v: our sampler exactly
    return "FlowMapEulerDiscreteScheduler", {"num_train_timesteps": train, "shift": shift}


def export_scheduler(base_scheduler_dir: str | Path, pipeline: str, *, shift: float):
    """The scheduler (a diffusers object) that runs the generator's steps in ``pipeline``'s loop."""
    import diffusers

    config = _read_json(Path(base_scheduler_dir) / "scheduler_config.json")
    try:
        name, kwargs = scheduler_spec(pipeline, config, shift=shift)
    except ValueError as e:
        raise ValueError(f"{base_scheduler_dir}: {e}") from None
    return getattr(diffusers, name).from_config(kwargs)


def scheduler_call(pipeline: str, config: dict, *, shift: float) -> str:
    """The line that sets a loaded base pipeline's scheduler for the generator (shown with --lora)."""
    name, kwargs = scheduler_spec(pipeline, config, shift=shift)
    if name == config.get("_class_name"):
        return f"pipe.scheduler = diffusers.{name}.from_config(pipe.scheduler.config, shift={shift:g})"
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"pipe.scheduler = diffusers.{name}({args})"


def call_args(index: dict, steps: int, guidance: float) -> str:
    """The pipeline call's arguments; a pipeline with a ``guider`` component (HunyuanVideo-1.5) reads its
    guidance scale from the guider's config (export writes it there), not from an argument."""
    return f"num_inference_steps={steps}" + ("" if "guider" in index else f", guidance_scale={guidance:g}")


def export_guider(base_guider_dir: Path, dst: Path, guidance: float) -> None:
    """The base's guider with the generator's guidance scale (1.0: no classifier-free guidance pair)."""
    import diffusers

    config = _read_json(base_guider_dir / "guider_config.json")
    getattr(diffusers, config["_class_name"]).from_config(config, guidance_scale=guidance).save_pretrained(dst)


def _model_card(index: dict, steps: int, guidance: float, shift: float, lora: bool = False) -> str:
    cls = index["_class_name"]
    guidance_note = ("embedded guidance (the scale is a model input)" if cls == "HunyuanVideoPipeline"
                     else "1.0 = no classifier-free guidance pair" if guidance == 1.0 else "classifier-free guidance")
    where = "its guider config holds" if "guider" in index else "pass"
    load = ("pipe = DiffusionPipeline.from_pretrained(BASE)\npipe.load_lora_weights(FILE)" if lora
            else "pipe = DiffusionPipeline.from_pretrained(DIR)")
    return (f"# Few-step generator ({cls})\n\nDistilled with magicdistill. The scheduler config holds the shift "
            f"({shift:g}); diffusers reads no step count from a folder, so pass it:\n\n"
            f"```python\nfrom diffusers import DiffusionPipeline\n{load}\n"
            f"video = pipe(prompt, {call_args(index, steps, guidance)}).frames[0]\n```\n\n"
            f"guidance scale {guidance:g} ({where} it): {guidance_note}.\n")


def _transformer_dir(module_or_dir, name: str, dst: Path) -> None:
    from .lora import merged

    if isinstance(module_or_dir, (str, Path)):
        shutil.copytree(module_or_dir, dst, copy_function=_link_or_copy)
    else:
        merged(module_or_dir).save_pretrained(dst, safe_serialization=True)


def export_pipeline(base_dir: str | Path, out: str | Path, *, transformer, transformer_2=None, steps: int,
                    shift: float, guidance: float, scheduler_dir: str | Path | None = None) -> Path:
    """A diffusers pipeline folder: ``base_dir``'s components with the generator's transformer(s).

    ``transformer`` / ``transformer_2``: a diffusers transformer module (LoRA layers merged on save)
    or a saved transformer folder. ``scheduler_dir``: the generator's own scheduler if it has one
    (default: the base's)."""
    from ..atomic import atomic_folder

    base_dir, out = Path(base_dir), Path(out)
    index = read_pipeline_index(base_dir, out)
    given = {"transformer": transformer, "transformer_2": transformer_2}
    if transformer_2 is not None and not (index.get("transformer_2") or [None])[0]:
        raise ValueError(f"{base_dir} has no transformer_2, but a second expert was given")
    scheduler = export_scheduler(scheduler_dir or base_dir / "scheduler", index["_class_name"], shift=shift)
    with atomic_folder(out) as tmp:
        for name, spec in index.items():
            if not (isinstance(spec, list) and spec[0]) or name == "scheduler":
                continue
            if name in TRANSFORMERS and given.get(name) is not None:
                _transformer_dir(given[name], name, tmp / name)
            elif name == "guider":
                export_guider(base_dir / name, tmp / name, guidance)
            else:
                shutil.copytree(base_dir / name, tmp / name, copy_function=_link_or_copy)
        scheduler.save_pretrained(tmp / "scheduler")
        index["scheduler"] = ["diffusers", type(scheduler).__name__]
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
        (tmp / "README.md").write_text(_model_card(index, steps, guidance, shift))
    return out


# ---- LoRA ----------------------------------------------------------------------------------------

def lora_from_peft(transformer: nn.Module, adapter: str | None = None) -> dict[str, torch.Tensor]:
    """A peft LoRA on a diffusers transformer as diffusers-format tensors (``<module>.lora_A/B.weight``),
    its scale (alpha / rank, times any set layer scale) folded into B."""
    from peft.tuners.lora import LoraLayer

    names = {id(m): n for n, m in transformer.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for layer in [m for m in transformer.modules() if isinstance(m, LoraLayer)]:
        name = names[id(layer)]
        adapters = [adapter] if adapter else list(layer.active_adapters)
        if len(adapters) != 1:
            raise ValueError(f"{name}: {len(adapters)} active LoRA adapters; name the generator's one")
        a = adapters[0]
        if a not in layer.lora_A:
            continue
        out[f"{name}.lora_A.weight"] = layer.lora_A[a].weight.detach().clone()
        out[f"{name}.lora_B.weight"] = (layer.lora_B[a].weight.detach() * layer.scaling[a]).clone()
    if not out:
        raise ValueError("the transformer has no LoRA layers to export")
    return out


def lora_from_difference(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], rank: int,
                         ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Rank-``rank`` LoRA of each 2-D (linear) weight's change ``tuned - base`` by truncated SVD.

    Returns the tensors and a report: ``captured`` (fraction of the total change's squared norm the
    LoRA carries), ``left_out`` (the squared-norm fraction in tensors a LoRA cannot carry: biases,
    norms, convolutions, tables), ``layers`` (how many linear layers changed)."""
    if rank < 1:
        raise ValueError(f"--rank must be >= 1, got {rank}")
    missing = sorted(set(base) ^ set(tuned))
    if missing:
        raise ValueError(f"the generator and its base differ in their weights ({missing[0]}, ...): "
                         "not the same architecture")
    out: dict[str, torch.Tensor] = {}
    total = captured = left_out = 0.0
    layers = 0
    for key in sorted(base):
        delta = tuned[key].double() - base[key].double()
        energy = float(delta.pow(2).sum())
        if energy == 0.0:
            continue
        total += energy
        if not (key.endswith(".weight") and delta.ndim == 2):
            left_out += energy
            continue
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        module = key[: -len(".weight")]
        dtype = tuned[key].dtype
        out[f"{module}.lora_A.weight"] = vh[:r].to(dtype).contiguous()
        out[f"{module}.lora_B.weight"] = (u[:, :r] * s[:r]).to(dtype).contiguous()
        captured += float(s[:r].pow(2).sum())
        layers += 1
    if not out:
        raise ValueError("the generator's linear weights equal its base's: there is no LoRA to write")
    return out, {"captured": captured / total, "left_out": left_out / total, "layers": layers}


def expert_lora_file(file: str | Path, name: str) -> Path:
    """Where expert ``name``'s LoRA goes: ``file`` for ``transformer``, ``<stem>.transformer_2.safetensors`` beside it."""
    file = Path(file)
    return file if name == "transformer" else file.with_name(f"{file.stem}.{name}{file.suffix}")


def write_lora(base_dir: str | Path, file: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Save diffusers-format LoRA tensors with the base pipeline class's own ``save_lora_weights``."""
    import diffusers

    from ..atomic import atomic_file

    base_dir, file = Path(base_dir), Path(file)
    if file.suffix != ".safetensors":
        raise ValueError(f"--lora {file}: the LoRA file must end in .safetensors")
    index = _read_json(base_dir / INDEX)
    pipe_cls = getattr(diffusers, index["_class_name"])
    # one file per transformer; a second expert's file has the same layout, loaded with load_into_transformer_2
    with atomic_file(file, suffix=".safetensors") as tmp:
        if hasattr(pipe_cls, "save_lora_weights"):
            pipe_cls.save_lora_weights(tmp.parent, weight_name=tmp.name, safe_serialization=True,
                                       transformer_lora_layers=tensors)
        else:  # no LoRA loader for this pipeline (HunyuanVideo-1.5): the same file, for the transformer's own
            from safetensors.torch import save_file  # load_lora_adapter(FILE, prefix="transformer")

            save_file({f"transformer.{k}": v for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    return file


def lora_loader(base_dir: str | Path) -> str:
    """How plain diffusers loads the LoRA file on the base pipeline ``pipe``."""
    import diffusers

    pipe_cls = getattr(diffusers, _read_json(Path(base_dir) / INDEX)["_class_name"])
    return ("pipe.load_lora_weights" if hasattr(pipe_cls, "load_lora_weights")
            else 'pipe.transformer.load_lora_adapter(FILE, prefix="transformer")')


# ---- from a generator folder ---------------------------------------------------------------------

def _state_dict(component_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = component_dir / "diffusion_pytorch_model.safetensors.index.json"
    files = sorted(set(_read_json(index)["weight_map"].values())) if index.exists() else \
        ["diffusion_pytorch_model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for name in files:
        if not (component_dir / name).exists():
            raise ValueError(f"{component_dir / name} is missing (export reads safetensors weights)")
        out.update(load_file(component_dir / name))
    return out


def export_model(model_dir: str | Path, out: str | Path | None = None, *, lora: str | Path | None = None,
                 rank: int = 32) -> list[str]:
    """Export the generator folder ``model_dir`` (what ``distill`` writes for a diffusers family):
    a pipeline folder at ``out`` and/or a LoRA file at ``lora``. Returns the lines to show the user."""
    from .folder import read_model_folder

    if out is None and lora is None:
        raise ValueError("nothing to export: give --out (a diffusers pipeline folder) and/or --lora (a LoRA file)")
    # every user mistake is caught before anything is written
    if out is not None and Path(out).exists():
        raise ValueError(f"{out} already exists; choose a new output folder")
    if lora is not None and Path(lora).suffix != ".safetensors":
        raise ValueError(f"--lora {lora}: the LoRA file must end in .safetensors")
    if lora is not None and rank < 1:
        raise ValueError(f"--rank must be >= 1, got {rank}")
    folder = read_model_folder(model_dir)
    if folder.layout == "tiny":
        raise ValueError(TINY_NOT_EXPORTABLE)
    if folder.layout != "derived" or folder.base is None:
        raise ValueError(f"{model_dir} is a diffusers pipeline folder itself; export takes a generator magicdistill "
                         "wrote from one (a folder with magicdistill.json)")
    own = [name for name in TRANSFORMERS if (folder.path / name).is_dir()]
    if not own:
        raise ValueError(f"{model_dir} holds no transformer/ of its own: there is no generator to export")
    s = folder.sampler
    if s.kind == "consistency":  # FlowMatchLCMScheduler has neither our grid nor our noise draws
        raise ValueError(f"{model_dir} is a consistency (LCM) generator: the exported pipelines would take Euler "
                         "steps, which is not how it samples; export a w2s, dmd or cfg generator")
    lines = []
    if out is not None:
        export_pipeline(folder.base, out, transformer=folder.path / "transformer",
                        transformer_2=folder.path / "transformer_2" if "transformer_2" in own else None,
                        steps=s.steps, shift=s.shift, guidance=s.guidance)
        index = _read_json(Path(out) / INDEX)
        lines.append(f"{out}: DiffusionPipeline.from_pretrained(...)(prompt, {call_args(index, s.steps, s.guidance)}) "
                     f"(shift {s.shift:g} is in its scheduler config"
                     + (f", guidance {s.guidance:g} in its guider config)" if "guider" in index else ")"))
    if lora is not None:  # Wan 2.2 A14B: one file per distilled expert
        loader = lora_loader(folder.base)
        loads = []
        for name in own:
            file = expert_lora_file(lora, name)
            tensors, report = lora_from_difference(_state_dict(folder.base / name), _state_dict(folder.path / name),
                                                   rank)
            write_lora(folder.base, file, tensors)
            into = ", load_into_transformer_2=True" if name == "transformer_2" else ""
            how = f"pipe.load_lora_weights(FILE{into})" if loader == "pipe.load_lora_weights" else loader
            loads.append(how.replace("FILE", repr(str(file))))
            lines.append(f"{file}: rank-{rank} LoRA of {report['layers']} linear layers of {name} for "
                         f"{how} on {folder.base}; it carries "
                         f"{100 * report['captured']:.2f} % of the weight change"
                         + (f" ({100 * report['left_out']:.2f} % is in biases/norms/embeddings a LoRA cannot hold: "
                            "use --out for the exact model)" if report["left_out"] > 0 else ""))
        if len(loads) > 1:
            lines.append("  load both: " + "; ".join(loads))
        base_index = _read_json(folder.base / INDEX)
        call = scheduler_call(folder.pipeline, _read_json(folder.base / "scheduler" / "scheduler_config.json"),
                              shift=s.shift)
        guider = (f"pipe.guider = pipe.guider.new(guidance_scale={s.guidance:g}); " if "guider" in base_index else "")
        lines.append(f"  then: {call}; {guider}pipe(prompt, {call_args(base_index, s.steps, s.guidance)})")
    return lines
