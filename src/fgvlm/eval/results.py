"""A classifier's results from its class probabilities: the one top-k helper and the one writer heads and CNNs share.

``write_probability_results`` turns probabilities ``[N, C]`` into ``predictions.jsonl``
(``{"id", "label", "pred", "topk": [[label, prob], ...]}``, best first), ``metrics.json`` (through
``fgvlm.runs.write_results``, with its fixed header) and ``confusion.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOPK = 5


def top_k(probs: Any, k: int = TOPK) -> list[list[tuple[int, float]]]:
    """Per row of scores ``[N, C]`` (numpy or torch), the ``k`` highest labels with their scores, best first.

    Ties keep the lower label first (stable sort), so the same scores always give the same ranking.
    """
    values = probs.detach().float().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    order = np.argsort(-values, axis=1, kind="stable")[:, : min(k, values.shape[1])]
    return [[(int(c), float(row[c])) for c in cols] for row, cols in zip(values, order, strict=True)]


def write_probability_results(
    out: Any,
    header: dict[str, Any],
    probs: Any,
    labels: Sequence[int],
    ids: Sequence[str],
    class_names: Sequence[str],
    extra: dict[str, Any] | None = None,
    k: int = TOPK,
) -> dict[str, Any]:
    """Write predictions.jsonl, confusion.json and metrics.json (header, shared metrics, ``extra``); return metrics.

    ``out``: the ``RunDir`` (its metrics.json gets the run's ``cost`` block) or a folder (no cost block).
    """
    from fgvlm.eval.metrics import classification_metrics, write_confusion
    from fgvlm.runfiles import rewrite_jsonl
    from fgvlm.runs import RunDir, write_results

    path = out.path if isinstance(out, RunDir) else Path(out)
    path.mkdir(parents=True, exist_ok=True)
    ranked = top_k(probs, k)
    preds = [row[0][0] for row in ranked]
    labels = [int(y) for y in labels]
    lines = [
        {"id": i, "label": y, "pred": p, "topk": [[c, round(prob, 6)] for c, prob in row]}
        for i, y, p, row in zip(ids, labels, preds, ranked, strict=True)
    ]
    rewrite_jsonl(path / "predictions.jsonl", lines)  # a rerun never leaves a mix of old and new lines
    topk = [[c for c, _ in row] for row in ranked]
    metrics = classification_metrics(labels, preds, class_names, topk=topk, extra=extra)
    write_confusion(path / "confusion.json", labels, preds, class_names)
    return write_results(out, header, metrics)
