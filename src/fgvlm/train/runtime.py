"""Process-wide torch settings shared by every training and extraction path: seeding and CPU thread count."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, so initial weights and data order repeat across reruns and ranks."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads (None = unchanged), restoring the previous setting after.

    On a small shared CPU, 2 threads spin-wait against other processes and ran 4-50x slower than 1 here.
    """
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
