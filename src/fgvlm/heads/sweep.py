"""``--sweep``: every pooling x layer x learning rate, heads trained on cached features, scored on validation.

Each (pooling, layer) needs one feature extraction, which the cache keeps: a rerun, or a later ``head train``
with the winning setting, extracts nothing. Learning rates only retrain the head.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fgvlm.heads.config import HeadRecipe
from fgvlm.heads.training import TensorFeatures, train_head

SWEEP_FILE = "sweep.json"


def holdout_indices(labels: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded per-class hold-out of about ``fraction`` of each class (at least one item stays in training).

    Used to score sweep points when the protocol has no validation split (never the test split).
    """
    generator = torch.Generator().manual_seed(seed)
    train, held = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        count = min(len(members) - 1, round(len(members) * fraction))
        held += members[:count]
        train += members[count:]
    return sorted(train), sorted(held)


def run_sweep(
    grid: Any,
    recipe: HeadRecipe,
    features_for: Callable[[str, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    num_classes: int,
) -> list[dict[str, Any]]:
    """Train one head per grid point; rows sorted best first (validation accuracy, then lower loss).

    ``features_for(pooling, layer)`` returns (train features, train labels, val features, val labels).
    """
    rows = []
    steps = grid.steps or recipe.steps
    for pooling in grid.poolings:
        for layer in grid.layers:
            train_x, train_y, val_x, val_y = features_for(pooling, layer)
            for lr in grid.lrs:
                start = time.perf_counter()
                changes = {"lr": lr, "steps": steps, "warmup_steps": 0, "eval_every": min(recipe.eval_every, steps)}
                point = HeadRecipe(**{**vars(recipe), **changes})
                result = train_head(
                    TensorFeatures(train_x), train_y, num_classes, point, (TensorFeatures(val_x), val_y)
                )
                best = result.best_val or {"accuracy": 0.0, "loss": float("inf")}
                row = {"pooling": pooling, "layer": layer, "lr": lr, "val_accuracy": best["accuracy"]}
                row.update(val_loss=round(best["loss"], 6), best_step=result.best_step)
                rows.append({**row, "seconds": round(time.perf_counter() - start, 2)})
    return sorted(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"]))


def print_sweep(rows: list[dict[str, Any]], title: str = "head sweep") -> None:
    """The sweep as a rich table, best first."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("pooling", "layer", "lr", "val acc", "val loss", "best step", "s"):
        table.add_column(column, justify="left" if column == "pooling" else "right")
    for row in rows:
        table.add_row(
            row["pooling"],
            str(row["layer"]),
            f"{row['lr']:g}",
            f"{100 * row['val_accuracy']:.2f}",
            f"{row['val_loss']:.4f}",
            str(row["best_step"]),
            f"{row['seconds']:.1f}",
        )
    Console(stderr=True).print(table)


def write_sweep(run_dir: str | Path, rows: list[dict[str, Any]], scored_on: str) -> None:
    from fgvlm.runs import write_json

    write_json(Path(run_dir) / SWEEP_FILE, {"scored_on": scored_on, "best": rows[0], "rows": rows})
