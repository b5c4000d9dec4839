"""FSDP2 sharding of the models of a multi-process run (``torchrun``): torch's ``fully_shard``.

Each transformer block is one FSDP unit (its parameters are all-gathered just before it runs and freed
after), then the transformer itself (the rest of its parameters: embedders, norms, output); a model with
two experts (Wan 2.2 A14B) has both sharded so. The blocks are found, not named: every ``nn.ModuleList``
that is a direct child of the transformer (Wan's ``blocks``, HunyuanVideo's ``transformer_blocks`` and
``single_transformer_blocks``, HunyuanVideo-1.5's ``transformer_blocks``); a list nested deeper (the token
refiner's) stays in the transformer's unit, which runs it once per forward anyway. A model's
vision encoder is a unit of its own: the context is built outside the transformer's forward. The frozen
backbone, its LoRAs, a full generator or fake copy, the EMA copy and the discriminator head are all
sharded, so each process holds 1/N of every parameter, gradient and optimizer state. Gradients are
averaged over the processes in the reduce-scatter (a data-parallel mean).
"""

from __future__ import annotations

import torch
from torch import nn

from .experts import experts


def block_lists(transformer: nn.Module) -> dict[str, nn.ModuleList]:
    """The transformer's stacks of blocks: its direct ``nn.ModuleList`` children, by attribute name."""
    return {name: m for name, m in transformer.named_children() if isinstance(m, nn.ModuleList)}


class Sharder:
    """Shards modules over every process of the (already joined) default process group."""

    def __init__(self, device: torch.device, world_size: int):
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(device.type, (world_size,))

    def module(self, module: nn.Module) -> nn.Module:
        """One FSDP unit (a small module: the discriminator head)."""
        from torch.distributed.fsdp import fully_shard

        return fully_shard(module, mesh=self.mesh)

    def model(self, model: nn.Module) -> nn.Module:
        """A VideoDiT or real-family model: per transformer block, then the transformer, for each expert; the
        vision encoder on its own."""
        for transformer in experts(model).values():
            for blocks in block_lists(transformer).values():
                for block in blocks:
                    self.module(block)
            self.module(transformer)
        vision = getattr(model, "vision", None)
        if vision is not None and any(True for _ in vision.parameters()):
            self.module(vision)
        return model


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` is an FSDP unit (its forward is a collective: every process must run it)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def any_process(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag, true when it is true on any process (every process must call it)."""
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def reshard(model: nn.Module) -> None:
    """Free what a forward pass without backward left gathered (FSDP keeps a root unit's parameters whole
    after its forward, for the backward it expects): afterwards every parameter is its shard again, so
    adapter weights can be swapped and states read."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's whole state (sharded tensors gathered; every process must call it), on the CPU."""
    out = {}
    for k, v in module.state_dict().items():
        if hasattr(v, "full_tensor"):
            v = v.full_tensor()
        out[k] = v.detach().cpu()
    return out
