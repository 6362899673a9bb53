"""Optimizers and learning-rate schedules shared by every training method.

The schedule is a per-step multiplier (linear warmup, then cosine decay to ``min_lr_ratio``) wrapped in
``torch.optim.lr_scheduler.LambdaLR``: its state is a step counter, so it resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so configs can name OPTIMIZERS without loading it
    import torch

OPTIMIZERS = ("sgd", "adamw")


def warmup_cosine(total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier for 0-based step ``s``: ``(s+1)/warmup`` during warmup, then cosine from 1 to ``min_lr_ratio``.

    The first step already trains (multiplier ``1/warmup``, not 0); the last of ``total_steps`` is just above
    ``min_lr_ratio``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return multiplier


def create_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warmup + cosine schedule; call ``scheduler.step()`` after every optimizer step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, min_lr_ratio))


def create_optimizer(
    model: torch.nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW through timm, with no weight decay on biases and norm layers."""
    from timm.optim import create_optimizer_v2

    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    kwargs = {"momentum": momentum} if name == "sgd" else {}
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay, **kwargs)
