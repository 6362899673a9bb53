"""The report's plots, drawn with matplotlib's Agg backend and embedded as base64 PNG data URIs.

Each function returns a ``data:image/png;base64,...`` string (or None when there is nothing to draw), so the page
needs no other file. Sizes are kept small (about 100 dpi, compact figures): a whole report stays near 1-1.5 MB.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fgvlm.report.tables import ResultRow  # noqa: E402

DPI = 100
# train_log.jsonl keys of the shared schema, with the older names some runs still write
LOSS_KEYS = ("train_loss", "loss")
LR_KEYS = ("lr",)
VAL_KEYS = ("val_accuracy", "val_top1")


def png_data_uri(fig: Any) -> str:
    """Render and close ``fig``; the PNG as a data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def accuracy_bars(rows: list[ResultRow]) -> str | None:
    """Horizontal bars of accuracy with 95 % CI whiskers; chance as a grey tick, reference numbers as diamonds."""
    shown = [r for r in rows if r.accuracy is not None]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.38 * len(shown)))
    y = np.arange(len(shown))[::-1]
    acc = np.array([100 * r.accuracy for r in shown])
    low = np.array([100 * (r.accuracy - r.ci_low) if r.ci_low is not None else 0.0 for r in shown])
    high = np.array([100 * (r.ci_high - r.accuracy) if r.ci_high is not None else 0.0 for r in shown])
    colors = ["#c0504d" if r.is_reference else "#4f81bd" for r in shown]
    ax.barh(y, acc, xerr=[low, high], color=colors, capsize=3, height=0.6)
    for yi, r in zip(y, shown, strict=True):
        if r.chance is not None:
            ax.plot([100 * r.chance] * 2, [yi - 0.35, yi + 0.35], color="#555555", linestyle=":", linewidth=1.5)
        if r.reference_value is not None:
            ax.plot(100 * r.reference_value, yi, marker="D", color="#222222", markersize=5)
    ax.set_yticks(y, [r.run_id for r in shown])
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy % (bars: 95 % CI; dotted: chance; diamond: reference study)")
    ax.grid(axis="x", alpha=0.3)
    return png_data_uri(fig)


def _series(log: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for index, record in enumerate(log):
        value = next((record[k] for k in keys if isinstance(record.get(k), (int, float))), None)
        if value is None:
            continue
        x = record.get("step", index)
        steps.append(float(x) if isinstance(x, (int, float)) else float(index))
        values.append(float(value))
    return steps, values


def training_curves(log: list[dict[str, Any]]) -> str | None:
    """Training loss, learning rate and validation accuracy against the step (panels with data only)."""
    panels = [
        ("training loss", _series(log, LOSS_KEYS)),
        ("learning rate", _series(log, LR_KEYS)),
        ("validation accuracy %", _series(log, VAL_KEYS)),
    ]
    panels = [(name, data) for name, data in panels if data[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.4), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes[0], panels, strict=True):
        scale = 100 if name.endswith("%") else 1
        ax.plot(steps, [scale * v for v in values], marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.tight_layout()
    return png_data_uri(fig)


def confusion_heatmap(matrix: np.ndarray, names: list[str]) -> str | None:
    """Counts of true (rows) vs predicted (columns) for the given classes, with the counts written in."""
    if matrix.size == 0:
        return None
    size = max(3.5, 0.38 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 25:
        peak = matrix.max() or 1
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                color = "white" if count > peak / 2 else "black"
                ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return png_data_uri(fig)


def per_class_accuracy(names: list[str], accuracy: list[float], counts: list[int]) -> str | None:
    """One bar per class (worst first), labelled with the class name and its number of images."""
    if not names:
        return None
    order = np.argsort(accuracy, kind="stable")
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.16 * len(names)))
    y = np.arange(len(names))[::-1]
    ax.barh(y, [100 * accuracy[i] for i in order], color="#4f81bd", height=0.7)
    ax.set_yticks(y, [f"{names[i]} (n={counts[i]})" for i in order], fontsize=6 if len(names) > 30 else 8)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    ax.grid(axis="x", alpha=0.3)
    return png_data_uri(fig)
