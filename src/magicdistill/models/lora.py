"""One frozen backbone, one LoRA, several scores (MagicDistillation / W2SVD).

The real score is the backbone with the LoRA at alpha_weak (default 0.25), the fake score the same
weights with the LoRA at alpha_strong (1.0). Switching is in place (the LoRA layers' ``scaling``),
so no weight is ever copied. The LoRA's B matrices start at zero: all scores equal the base model
at step 0. Scale 0 reproduces the base model exactly (the LoRA term is multiplied by 0.0).

Only the scale attribute is touched; we never pass ``attention_kwargs={"scale": ...}`` (diffusers
would rescale and, for 0.0, reset the layers afterwards).

Several adapters can share one backbone (a LoRA generator next to the scores' LoRA): ``AdapterRoles``
gives each role a scale per adapter and switches adapters at scale 0 off (skipped, not multiplied by
0: no compute, no autograd edge, the base stays exact). ``AdapterWeights`` presents one adapter's
tensors as a module (optimizer, EMA, checkpoint); ``merged`` folds the active adapters into a plain
copy of the model for saving.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from .experts import EXPERTS
from .experts import prefix as expert_prefix

# projections to adapt, per backbone family (attention in and out; Hunyuan's text stream too)
LORA_TARGETS = {
    "HunyuanVideoTransformer3DModel": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                       "to_add_out"],
    "WanTransformer3DModel": ["to_q", "to_k", "to_v", "to_out.0"],
    "HunyuanVideo15Transformer3DModel": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                         "to_add_out"],
}

# the feed-forward projections, added by targets "attention_ffn" (Hunyuan's single blocks: proj_mlp in,
# and proj_out, which projects attention and MLP together, named per block so the model's final proj_out is not)
FFN_TARGETS = {
    "HunyuanVideoTransformer3DModel": ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
                                       "proj_mlp", "single_transformer_blocks.*.proj_out"],
    "WanTransformer3DModel": ["ffn.net.0.proj", "ffn.net.2"],
    "HunyuanVideo15Transformer3DModel": ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
}
TARGET_GROUPS = ("attention", "attention_ffn")


def lora_targets(transformer: nn.Module, which: str = "attention") -> list[str]:
    """Module names for peft's ``target_modules``: the attention projections, plus the FFN's for
    "attention_ffn" (``blocks.*.name`` patterns expanded to each block's full name)."""
    name = type(transformer).__name__
    if which not in TARGET_GROUPS:
        raise ValueError(f"LoRA targets must be one of {TARGET_GROUPS}, got {which!r}")
    if name not in LORA_TARGETS:
        raise ValueError(f"no default LoRA targets for {name}; pass targets=[...]")
    out = list(LORA_TARGETS[name]) + (FFN_TARGETS[name] if which == "attention_ffn" else [])
    expanded = []
    for t in out:
        if "*" in t:
            prefix, suffix = t.split(".*.")
            expanded += [f"{prefix}.{i}.{suffix}" for i in range(len(getattr(transformer, prefix)))]
        else:
            expanded.append(t)
    return expanded


class SharedLoRA:
    """Adds one LoRA adapter to a frozen transformer and switches its scale per call.

    ``transformer``: one transformer, or a model's experts (models/experts.py: Wan 2.2 A14B's two), each
    given the adapter; a second expert's tensors are keyed under its prefix ("transformer_2.")."""

    def __init__(self, transformer: nn.Module | dict[str, nn.Module], rank: int = 16, alpha: float | None = None,
                 targets: list[str] | None = None, adapter: str = "w2s"):
        parts = transformer if isinstance(transformer, dict) else {EXPERTS[0]: transformer}
        self.parts = {expert_prefix(name): t for name, t in parts.items()}
        self.transformer, self.adapter = next(iter(parts.values())), adapter
        self.layers = [layer for t in parts.values() for layer in self._add(t, rank, alpha, targets)]
        for p in self.parameters():
            p.requires_grad_(True)
        self._scale = 1.0

    def _add(self, transformer: nn.Module, rank: int, alpha: float | None, targets: list[str] | None) -> list:
        from peft import LoraConfig
        from peft.tuners.lora import LoraLayer

        adapter, name = self.adapter, type(transformer).__name__
        targets = targets or LORA_TARGETS.get(name)
        if not targets:
            raise ValueError(f"no default LoRA targets for {name}; pass targets=[...]")
        earlier = {m: list(m.active_adapters) for m in transformer.modules() if isinstance(m, LoraLayer)}
        if any(adapter in m.scaling for m in earlier):
            raise ValueError(f"the transformer already has an adapter named {adapter!r}")
        for n, p in transformer.named_parameters():
            if not _is_adapter_tensor(n):  # the backbone freezes; adapters added before keep their flags
                p.requires_grad_(False)
        flags = {p: p.requires_grad for p in transformer.parameters()}
        with warnings.catch_warnings():  # peft warns that a second adapter makes several: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets,
                                               init_lora_weights=True), adapter_name=adapter)
        layers = [m for m in transformer.modules() if isinstance(m, LoraLayer) and adapter in m.scaling]
        if not layers:
            raise ValueError(f"LoRA targets {targets} matched no layer of {name}")
        # diffusers' add_adapter makes the new adapter the only active one: keep the earlier ones on too
        for layer, names in earlier.items():
            activate([layer], names + [adapter] if layer in layers else names)
        for p, f in flags.items():
            p.requires_grad_(f)
        return layers

    def named_parameters(self) -> dict[str, nn.Parameter]:
        """Every expert's parameters (the backbone's too), keyed as in ``state_dict``."""
        return {pre + n: p for pre, t in self.parts.items() for n, p in t.named_parameters()}

    def parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters().items() if f".{self.adapter}." in n or n.endswith(self.adapter)]

    def set_scale(self, scale: float) -> None:
        for layer in self.layers:
            layer.set_scale(self.adapter, scale)
        self._scale = scale

    @property
    def scale(self) -> float:
        return self._scale

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        previous = self._scale
        self.set_scale(scale)
        try:
            yield
        finally:
            self.set_scale(previous)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters().items() if f".{self.adapter}." in n}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = self.named_parameters()
        _copy_named({n: params[n] for n in self.state_dict()}, sd)

    @contextmanager
    def loaded(self, sd: dict[str, torch.Tensor]) -> Iterator[None]:
        """Other weights for this adapter for the duration (e.g. its EMA, to sample from it in place)."""
        current = {n: t.clone() for n, t in self.state_dict().items()}
        self.load_state_dict(sd)
        try:
            yield
        finally:
            self.load_state_dict(current)


def _is_adapter_tensor(name: str) -> bool:
    return ".lora_" in name


def _copy_named(params: dict[str, torch.Tensor], sd: dict[str, torch.Tensor]) -> None:
    missing = set(params) - set(sd)
    if missing:
        raise ValueError(f"LoRA state is missing {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(sd[n])


def activate(layers, adapters: Sequence[str]) -> None:
    """Exactly ``adapters`` run in these LoRA layers' forward; every requires_grad flag stays as it
    was (peft's set_adapter would also make the active adapters trainable and freeze the others)."""
    for layer in layers:
        flags = [(p, p.requires_grad) for p in layer.parameters()]
        layer.set_adapter([a for a in adapters if a in layer.scaling])
        for p, f in flags:
            p.requires_grad_(f)


class AdapterRoles:
    """Roles over several adapters of one transformer: a role is one scale per adapter.

    An adapter at scale 0 is switched off for the role (exact base, no compute, and no gradient can
    reach it through this role's forward passes).
    """

    def __init__(self, adapters: list[SharedLoRA], roles: dict[str, tuple[float, ...]]):
        if any(len(scales) != len(adapters) for scales in roles.values()):
            raise ValueError(f"each role needs one scale per adapter ({len(adapters)})")
        self.adapters, self.roles = adapters, roles
        self._layers = list(dict.fromkeys(layer for a in adapters for layer in a.layers))
        self._apply(tuple(a.scale for a in adapters))  # outside any role: the adapters' own scales

    def _apply(self, scales: tuple[float, ...]) -> None:
        for lora, scale in zip(self.adapters, scales):
            lora.set_scale(scale)
        activate(self._layers, [a.adapter for a, scale in zip(self.adapters, scales) if scale != 0])
        self._current = scales

    @property
    def current(self) -> tuple[float, ...]:
        """The adapters' scales now (a role's, or the state outside any role)."""
        return self._current

    def apply(self, scales: tuple[float, ...]) -> None:
        self._apply(scales)

    @contextmanager
    def use(self, role: str) -> Iterator[None]:
        previous = self._current
        self._apply(self.roles[role])
        try:
            yield
        finally:
            self._apply(previous)


class AdapterWeights(nn.Module):
    """One adapter's tensors as a module whose state dict is keyed by their names in the transformer.

    It holds the very parameters of the transformer (an optimizer or ``EMA`` over it trains/averages
    only the adapter); a deep copy (the EMA's shadow) holds detached copies with the same keys.
    """

    def __init__(self, lora: SharedLoRA):
        super().__init__()
        named = lora.named_parameters()
        self.names = list(lora.state_dict())
        self.tensors = nn.ParameterList([named[n] for n in self.names])

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in zip(self.names, self.tensors)}

    def load_state_dict(self, sd, strict: bool = True):
        _copy_named(dict(zip(self.names, self.tensors)), sd)


def merged(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with its active adapters folded into the weights at their current
    scales (W + scale * B A) and every adapter removed; ``model`` itself if it has no adapter."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft.tuners.lora import LoraLayer

    if not any(isinstance(m, LoraLayer) for m in model.modules()):
        return model
    # hooks stay with the original (a feature tap's hook holds the tap, and through it live activations)
    memo = {id(d): type(d)() for m in model.modules() for k, d in vars(m).items()
            if "hooks" in k and isinstance(d, dict)}
    out = copy.deepcopy(model, memo)
    for layer in [m for m in out.modules() if isinstance(m, LoraLayer)]:
        layer.merge(adapter_names=list(layer.active_adapters))
    for m in [m for m in out.modules() if getattr(m, "_hf_peft_config_loaded", False)]:
        recurse_remove_peft_layers(m)
        m.__dict__.pop("peft_config", None)  # a plain model again, saved and loaded as one
        m._hf_peft_config_loaded = False
    assert not any(isinstance(m, LoraLayer) for m in out.modules())
    return out
