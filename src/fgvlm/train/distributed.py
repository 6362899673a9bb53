"""Several processes under ``torchrun``: process-group set-up, gathering results, and a replica sync check.

On CPU the backend is gloo (``accelerate``'s CPU launchers start a single process; plain ``torchrun`` works). Rank 0
alone writes files; every rank takes part in collective calls, so none may return early.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world_size == 1`` when not launched by torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1; otherwise do nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world_size)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (just ``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_buffers(info: DistInfo, module: Any) -> None:
    """Average floating buffers (BatchNorm running statistics) over ranks, as timm's ``distribute_bn`` does.

    DDP keeps parameters equal, but each rank updates its running statistics on its own shard: without this the
    ranks would evaluate, and save, different models.
    """
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(info.world_size)
            else:
                dist.broadcast(buffer, src=0)


def weights_checksum(module: Any) -> float:
    """Sum of every float parameter and buffer in float64: equal on ranks whose weights are equal."""
    import torch

    with torch.no_grad():
        values = [t.detach().double().sum().item() for t in module.state_dict().values() if t.is_floating_point()]
    return float(sum(values))


def replica_checksums(info: DistInfo, module: Any) -> list[float]:
    """Every rank's ``weights_checksum`` in rank order: all equal when the replicas are in sync."""
    return gather_objects(info, weights_checksum(module))


def cleanup(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
