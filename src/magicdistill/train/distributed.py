"""The processes of a run: one (plain ``python``/``magicdistill``) or N started by ``torchrun``.

``World.from_env`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and joins the process
group (gloo on the CPU, nccl on CUDA); without it, or with one process, the run is single-process and
nothing distributed is touched. Data parallelism splits each global batch into equal contiguous row
slices, one per rank (``rows``), so N processes see exactly the clips and noise one process sees.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from . import process_end


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files (config, metrics, samples, final model, checkpoint record)."""
        return self.rank == 0

    @staticmethod
    def from_env(device: str) -> "World":
        """torchrun's processes join one group; a plain start (or ``--nproc-per-node 1``) is one process."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return World()
        if not dist.is_initialized():
            dev = torch.device(device)
            if dev.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return World(dist.get_rank(), dist.get_world_size())

    def device(self, device: str) -> torch.device:
        """A CUDA run puts each process on its own GPU (torchrun's LOCAL_RANK)."""
        dev = torch.device(device)
        if self.distributed and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return dev

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch (equal contiguous slices)."""
        if batch_size % self.size:
            raise ValueError(f"--batch-size {batch_size} is not divisible by the {self.size} processes: each takes "
                             f"an equal share of the global batch (use a multiple of {self.size})")
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (e.g. it encodes the clips into the cache, which they then
        read instead of encoding the same clips N times into the same files)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (e.g. whether its checks of the run folder passed)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-rank batch means -> global batch means (equal slices: the mean of the ranks' means)."""
        if not self.distributed or not metrics:
            return metrics
        keys = list(metrics)  # the same keys in the same order on every rank (the same code ran)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: v / self.size for k, v in zip(keys, t.tolist())}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (a non-finite shard stops them all together)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    @staticmethod
    @contextmanager
    def joined(device: str) -> Iterator["World"]:
        """The run's processes for the length of a command. A run that ends normally meets at a barrier before
        its process group is torn down, so no process closes its connections while another still talks to it,
        and its process then ends without the interpreter's teardown (train/process_end.py); a failing one leaves
        at once (the others may never reach the barrier; torchrun stops them)."""
        world = World.from_env(device)
        try:
            yield world
        except BaseException:
            world.close()
            raise
        world.barrier()
        world.close()
        if world.distributed:
            process_end.finished_in_a_group()


def draw_rows(sample, shape: tuple[int, ...], g: torch.Generator, rows: slice | None, batch_size: int) -> torch.Tensor:
    """``sample(shape, generator=g)`` (torch.rand, torch.randn, ...) for this process's ``rows`` of a global batch of
    ``batch_size``: every process draws the whole batch's numbers from the same seeded generator and keeps its rows,
    so N processes train on exactly the noise one process does (``rows`` None: one process, all rows)."""
    if rows is None:
        return sample(shape, generator=g)
    return sample((batch_size, *shape[1:]), generator=g)[rows]


def all_finite(t: torch.Tensor) -> bool:
    """This rank's part of a (possibly sharded) tensor is finite."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return bool(torch.isfinite(local).all()) if local.numel() else True

