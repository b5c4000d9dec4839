"""FSDP2 sharding of the models of a multi-process run (``torchrun``): torch's ``fully_shard``.

Each transformer block is one FSDP unit (its parameters are all-gathered just before it runs and freed
after), then the transformer itself (the rest of its parameters: embedders, norms, output). A model's
vision encoder is a unit of its own: the context is built outside the transformer's forward. The frozen
backbone, its LoRAs, a full generator or fake copy, the EMA copy and the discriminator head are all
sharded, so each process holds 1/N of every parameter, gradient and optimizer state. Gradients are
averaged over the processes in the reduce-scatter (a data-parallel mean).
"""

from __future__ import annotations

import torch
from torch import nn

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks")  # Hunyuan (double, single), Wan


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
        """A VideoDiT: per transformer block, then the transformer; the vision encoder on its own."""
        transformer = model.transformer
        for name in BLOCK_LISTS:
            for block in getattr(transformer, name, None) or []:
                self.module(block)
        self.module(transformer)
        vision = getattr(model, "vision", None)
        if vision is not None and any(True for _ in vision.parameters()):
            self.module(vision)
        return model


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
