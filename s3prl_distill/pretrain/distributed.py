"""Data-parallel context of a pretraining run (``torchrun``: RANK / WORLD_SIZE / LOCAL_RANK).

One process without ``WORLD_SIZE`` (or 1) needs no process group; every helper here is then a
no-op. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["DistContext", "init_distributed"]


@dataclass
class DistContext:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def comm_device(self, device: torch.device) -> torch.device:
        """Where collective tensors live: ``device`` for nccl, the CPU for gloo."""
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        return device if backend == "nccl" else torch.device("cpu")

    def all_min(self, value: int, device: torch.device) -> int:
        """The smallest ``value`` over all processes."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.comm_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def all_sum(self, values: Tensor) -> Tensor:
        """Element-wise sum of ``values`` over all processes (a float64 copy on the comm device)."""
        out = values.detach().to(torch.float64).clone()
        if self.distributed:
            device = out.device
            out = out.to(self.comm_device(device))
            dist.all_reduce(out)
            out = out.to(device)
        return out

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every process's ``obj`` (picklable plain data), in rank order."""
        if not self.distributed:
            return [obj]
        gathered: List[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def frame_weight(self, loss: Tensor, frames: Tensor, device: torch.device) -> Tensor:
        """Scale this rank's mean loss so that DDP's gradient average equals the gradient of the
        mean over all ranks' valid frames (ranks may hold different numbers of frames)."""
        if not self.distributed:
            return loss
        total = frames.detach().to(self.comm_device(device), torch.float64).reshape(1).clone()
        dist.all_reduce(total)
        share = frames.detach().to(loss.device, loss.dtype) * self.world_size / total.to(
            loss.device, loss.dtype).clamp(min=1.0)
        return loss * share

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def check_replicas_equal(self, module: nn.Module, device: torch.device) -> None:
        """Raise if any process's parameters differ from rank 0's (DDP desync)."""
        if not self.distributed:
            return
        flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
        flat = flat.to(self.comm_device(device))
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        if float(diff) > 0:
            raise RuntimeError(f"student parameters differ across processes (max abs difference "
                               f"{float(diff):.3g}): data-parallel replicas went out of sync")
        logger.info("student parameters identical across %d processes", self.world_size)

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes (RANK / WORLD_SIZE / LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return DistContext(rank, world, local_rank, here)
