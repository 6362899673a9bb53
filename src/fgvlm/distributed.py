"""Several processes under ``torchrun``: who am I, collective calls, and passing small Python objects around.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) a process group is joined: gloo by default (it works on
CPU-only machines, and for GPU runs too when only small lists of records travel), nccl for GPU training. A plain
``python`` run is a world of one and touches no ``torch.distributed`` at all. (``accelerate launch --cpu`` starts a
single process; plain ``torchrun`` works.) Rank 0 alone writes files; every rank takes part in collective calls, so
none may return early. Evaluation, feature extraction and training all use this one class.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process (from the environment; no group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when this object initialised the process group (and so tears it down)."""

    @classmethod
    def from_env(cls, backend: str = "gloo", timeout_s: float | None = None) -> ProcessGroup:
        """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; join a process group when there are several.

        ``timeout_s``: how long a collective call waits for the other ranks (None: torch's default for the backend).
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = not dist.is_initialized()
        if owns:
            # torch._dynamo imported while a group exists (DDP's constructor and timm import it) keeps references to
            # the group that destroy_process_group cannot drop: its gloo threads then outlive ``close`` and now and
            # then abort the process at exit ("terminate called without an active exception"). Imported first,
            # it holds none.
            import torch._dynamo  # noqa: F401

            if backend == "nccl":
                import torch

                # NCCL object collectives (broadcast_object_list, all_gather_object) stage tensors on the current
                # CUDA device; without this every rank would use cuda:0.
                torch.cuda.set_device(local_rank)
            timeout = datetime.timedelta(seconds=timeout_s) if timeout_s is not None else None
            dist.init_process_group(backend=backend, timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False
