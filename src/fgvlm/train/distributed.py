"""What data-parallel training adds to ``fgvlm.distributed``: synced BatchNorm statistics and a replica check."""

from __future__ import annotations

from typing import Any

from fgvlm.distributed import ProcessGroup


def average_buffers(info: ProcessGroup, module: Any) -> None:
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


def replica_checksums(info: ProcessGroup, module: Any) -> list[float]:
    """Every rank's ``weights_checksum`` in rank order: all equal when the replicas are in sync."""
    return info.gather(weights_checksum(module))
