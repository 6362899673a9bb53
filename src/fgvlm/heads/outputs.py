"""A head's predictions on a split, written in the shared schema of ``fgvlm eval``.

``metrics.json`` (``fgvlm.eval.metrics.classification_metrics`` with top-5 and ``mode: head``),
``predictions.jsonl`` (``{"id", "label", "pred", "topk": [[label, prob], ...]}``, top-5 by probability) and
``confusion.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fgvlm.heads.model import ClassificationHead
from fgvlm.heads.training import TensorFeatures, head_logits

TOPK = 5


def head_probabilities(head: ClassificationHead, features: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities ``[N, C]`` of a head in eval mode."""
    return torch.softmax(head_logits(head, TensorFeatures(features)), dim=1)


def top_classes(probs: torch.Tensor, k: int = TOPK) -> list[list[tuple[int, float]]]:
    """Per row, the ``k`` most probable labels with their probabilities, best first (ties: lower label first)."""
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
    return [[(int(c), float(row[c])) for c in cols] for row, cols in zip(probs, order, strict=True)]


def write_evaluation(
    out_dir: str | Path,
    head: ClassificationHead,
    features: torch.Tensor,
    labels: Sequence[int],
    ids: Sequence[str],
    class_names: Sequence[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Predict every item, write the three files into ``out_dir`` and return the metrics."""
    from fgvlm.eval.metrics import classification_metrics, write_confusion
    from fgvlm.runs import RunDir

    run = RunDir(out_dir)
    ranked = top_classes(head_probabilities(head, features))
    preds = [row[0][0] for row in ranked]
    lines = [
        {"id": i, "label": int(y), "pred": p, "topk": [[c, round(prob, 6)] for c, prob in row]}
        for i, y, p, row in zip(ids, labels, preds, ranked, strict=True)
    ]
    (run / "predictions.jsonl").unlink(missing_ok=True)
    run.append_jsonl("predictions.jsonl", lines)
    topk = [[c for c, _ in row] for row in ranked]
    metrics = classification_metrics(list(labels), preds, class_names, topk=topk, extra={"mode": "head", **extra})
    run.write_json("metrics.json", metrics)
    write_confusion(run / "confusion.json", list(labels), preds, class_names)
    return metrics
