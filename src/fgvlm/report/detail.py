"""The detailed look at one run: confusion among the most confused classes, per-class accuracy, confused pairs
with thumbnails, and a sample of predictions (right and wrong) with their images and raw answers."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fgvlm.report import figures
from fgvlm.report.images import ImageFinder
from fgvlm.report.rundirs import RunInfo

MAX_HEATMAP_CLASSES = 15
CONFUSED_PAIRS = 6
IMAGES_PER_PAIR = 3
SAMPLE_EACH = 6


@dataclass
class Example:
    """One image in a gallery: thumbnail (may be None), true and predicted names, and in generate mode the answer
    as matched plus the raw reply when a reasoning block was stripped from it."""

    image_id: str
    thumbnail: str | None
    true_name: str
    predicted_name: str
    correct: bool
    answer: str | None = None
    raw_answer: str | None = None
    top5: list[str] = field(default_factory=list)


@dataclass
class ConfusedPair:
    true_name: str
    predicted_name: str
    count: int
    examples: list[Example]


@dataclass
class RunDetail:
    """What the template shows for one run in detail."""

    run_id: str
    heatmap: str | None
    per_class_plot: str | None
    per_class: list[dict[str, Any]]
    pairs: list[ConfusedPair]
    samples: list[Example]
    image_note: str | None


def class_names(run: RunInfo, num_labels: int) -> list[str]:
    """Names from confusion.json's rows; labels beyond them are shown as their numbers."""
    rows = (run.confusion or {}).get("rows")
    names = [str(n) for n in rows] if isinstance(rows, list) else []
    return names + [f"class {i}" for i in range(len(names), num_labels)]


def _valid(run: RunInfo) -> list[dict[str, Any]]:
    def is_label(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return [p for p in run.predictions if is_label(p["label"]) and (p.get("pred") is None or is_label(p["pred"]))]


def _example(p: dict[str, Any], names: list[str], images: ImageFinder) -> Example:
    pred = p.get("pred")
    ranked = [t[0] for t in p.get("topk") or [] if isinstance(t, list) and t and isinstance(t[0], int)]
    return Example(
        image_id=str(p["id"]),
        thumbnail=images.thumbnail(str(p["id"])),
        true_name=names[p["label"]],
        predicted_name="unmatched" if pred is None else names[pred],
        correct=pred == p["label"],
        answer=p.get("answer") if isinstance(p.get("answer"), str) else None,
        raw_answer=p.get("raw_answer") if isinstance(p.get("raw_answer"), str) else None,
        top5=[names[c] if 0 <= c < len(names) else f"class {c}" for c in ranked[:5]],
    )


def _most_confused(matrix: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Off-diagonal (true, predicted) pairs by count, and the classes most involved in confusions."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(i), int(j)) for i, j in zip(*np.nonzero(off), strict=True)]
    pairs.sort(key=lambda ij: (-off[ij], ij))
    involvement = off.sum(axis=0) + off.sum(axis=1)
    classes = [int(c) for c in np.argsort(-involvement, kind="stable") if involvement[c] > 0][:MAX_HEATMAP_CLASSES]
    return pairs, sorted(classes)


def build_detail(run: RunInfo, split: str | None, seed: int = 0) -> RunDetail:
    """Everything of the detail section from ``predictions.jsonl`` (+ class names, + images when found)."""
    preds = _valid(run)
    num_labels = max([p["label"] for p in preds] + [p["pred"] for p in preds if p.get("pred") is not None] + [-1]) + 1
    names = class_names(run, num_labels)
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for p in preds:
        if p.get("pred") is not None:
            matrix[p["label"], p["pred"]] += 1
    support = Counter(p["label"] for p in preds)
    hits = Counter(p["label"] for p in preds if p.get("pred") == p["label"])
    present = sorted(support)
    per_class = [{"name": names[c], "n": support[c], "accuracy": hits[c] / support[c]} for c in present]
    pairs, classes = _most_confused(matrix)
    images = ImageFinder(run, split)
    confused = []
    for i, j in pairs[:CONFUSED_PAIRS]:
        members = [p for p in preds if p["label"] == i and p.get("pred") == j][:IMAGES_PER_PAIR]
        examples = [_example(p, names, images) for p in members]
        confused.append(ConfusedPair(names[i], names[j], int(matrix[i, j]), examples))
    rng = random.Random(seed)
    right = [p for p in preds if p.get("pred") == p["label"]]
    wrong = [p for p in preds if p.get("pred") != p["label"]]
    sample = rng.sample(right, min(SAMPLE_EACH, len(right))) + rng.sample(wrong, min(SAMPLE_EACH, len(wrong)))
    return RunDetail(
        run_id=run.run_id,
        heatmap=figures.confusion_heatmap(matrix[np.ix_(classes, classes)], [names[c] for c in classes])
        if classes
        else None,
        per_class_plot=figures.per_class_accuracy(
            [c["name"] for c in per_class], [c["accuracy"] for c in per_class], [c["n"] for c in per_class]
        ),
        per_class=per_class,
        pairs=confused,
        samples=[_example(p, names, images) for p in sample],
        image_note=images.note,
    )
