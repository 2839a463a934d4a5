"""One process, or one rank of a ``torchrun`` job: DDP over NCCL on CUDA, gloo on CPU.

:func:`init_distributed` reads what torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``);
started without it, the run is a single process and every collective is a no-op.

Examples:
    >>> dist = Dist()
    >>> dist.main, dist.sum([1.5, 2.0]), dist.first(lambda first: first)
    (True, [1.5, 2.0], True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def first(self, fn, *, per_node: bool = False):
        """``fn(True)`` on rank 0 (local rank 0 of each node with ``per_node``), then, once it is
        done, ``fn(False)`` on the others: for work whose result the others reuse (downloads,
        data preparation)."""
        leader = (self.local_rank if per_node else self.rank) == 0
        result = fn(True) if leader else None
        self.barrier()
        return result if leader else fn(False)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device_of(self) if _nccl() else "cpu")
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world
        torch.distributed.all_gather_object(gathered, obj)
        return gathered


def _nccl() -> bool:
    return torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"


def device_of(dist: Dist) -> torch.device:
    """This rank's GPU, or the CPU."""
    return torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed() -> Dist:
    """DDP when started by torchrun (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local, enabled=True)


def finish(dist: Dist) -> None:
    """Wait for every rank, then take the process group down."""
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
