"""Classification metrics in the shared ``metrics.json`` schema (zero-shot, heads and CNN all use it).

Unmatched answers (``pred is None``) count as wrong. The 95 % interval on accuracy is a percentile bootstrap over
images with a fixed seed, so the same predictions always give the same interval; ``accuracy_stderr`` is the standard
deviation of the same bootstrap means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(labels: Sequence[int], preds: Sequence[int | None], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted; an extra last column counts unmatched answers."""
    matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for y, p in zip(labels, preds, strict=True):
        matrix[y, num_classes if p is None else p] += 1
    return matrix


def macro_f1(labels: Sequence[int], preds: Sequence[int | None], num_classes: int) -> float:
    """Mean F1 over the classes present in ``labels`` (an unmatched answer is a false negative only)."""
    matrix = confusion_matrix(labels, preds, num_classes)[:, :num_classes]
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1) + confusion_matrix(labels, preds, num_classes)[:, num_classes]
    predicted = matrix.sum(axis=0)
    present = support > 0
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def bootstrap_means(correct: Sequence[bool], samples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``samples`` resamples (with replacement) of ``correct``; empty input gives no means."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)


def bootstrap_ci(correct: Sequence[bool], samples: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``correct``."""
    means = bootstrap_means(correct, samples, seed)
    if means.size == 0:
        return [0.0, 0.0]
    alpha = (1 - level) / 2
    return [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]


def bootstrap_stderr(correct: Sequence[bool], samples: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the accuracy: the standard deviation of the same resampled means as the CI.

    Stored in metrics.json as ``accuracy_stderr`` so exports (lm-evaluation-harness's ``acc_stderr``) are exact.
    """
    means = bootstrap_means(correct, samples, seed)
    return float(means.std(ddof=1)) if means.size > 1 else 0.0


def classification_metrics(
    labels: Sequence[int],
    preds: Sequence[int | None],
    class_names: Sequence[str],
    *,
    topk: Sequence[Sequence[int]] | None = None,
    preds_lenient: Sequence[int | None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` dict: accuracy (strict), lenient accuracy, top-5, macro-F1, CI, per-class accuracy.

    ``topk`` holds each image's ranked label ids (best first) when the method ranks classes; ``preds_lenient``
    the predictions of lenient answer matching (defaults to ``preds``). ``extra`` adds mode, task, protocol, speed.
    """
    n = len(labels)
    correct = [p is not None and p == y for y, p in zip(labels, preds, strict=True)]
    lenient = preds if preds_lenient is None else preds_lenient
    correct_lenient = [p is not None and p == y for y, p in zip(labels, lenient, strict=True)]
    top5 = None
    if topk is not None:
        top5 = float(np.mean([y in list(k)[:5] for y, k in zip(labels, topk, strict=True)])) if n else 0.0
    per_class = {}
    for label, name in enumerate(class_names):
        hits = [c for y, c in zip(labels, correct, strict=True) if y == label]
        if hits:
            per_class[name] = float(np.mean(hits))
    metrics = {
        "accuracy": float(np.mean(correct)) if n else 0.0,
        "accuracy_lenient": float(np.mean(correct_lenient)) if n else 0.0,
        "top5_accuracy": top5,
        "macro_f1": macro_f1(labels, preds, len(class_names)),
        "n": n,
        "n_unmatched": sum(p is None for p in preds),
        "ci95": bootstrap_ci(correct),
        "accuracy_stderr": bootstrap_stderr(correct),
        "per_class_accuracy": per_class,
    }
    metrics.update(extra or {})
    return metrics


def write_confusion(path, labels, preds, class_names) -> None:
    """``confusion.json``: class names (plus 'unmatched' as the last column) and the count matrix."""
    from fgvlm.runs import write_json

    matrix = confusion_matrix(labels, preds, len(class_names))
    write_json(path, {"rows": list(class_names), "columns": [*class_names, "unmatched"], "matrix": matrix.tolist()})
