"""Multi-GPU / multi-node training under ``torchrun``.

Gradients are averaged across processes with one flattened ``all_reduce`` per backward instead of
wrapping modules in ``DistributedDataParallel``: GN calls ``torch.autograd.grad`` inside the
discriminator's forward (double backprop), which DDP's reducer hooks do not support. The arithmetic is
DDP's: every process computes the mean loss of its shard of the global batch and the gradients are
averaged, so N processes give the gradients of one process with the whole global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place: ``rank`` of ``world_size``, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> slice:
        """This process's contiguous share of a global batch (which must divide evenly)."""
        size = global_batch // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)


def init_from_environment(device_hint: str) -> ProcessGroup:
    """Join the process group ``torchrun`` describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_hint != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ProcessGroup(rank, world_size, local_rank)


def average_gradients(module: nn.Module, group: ProcessGroup) -> None:
    """Average the gradients of ``module`` over all processes (no-op for one process)."""
    if group.world_size == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= group.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group."""
    if group.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
