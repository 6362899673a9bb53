"""A head's predictions on a split, written by the shared classifier writer (``fgvlm.eval.results``).

``predictions.jsonl`` (``{"id", "label", "pred", "topk": [[label, prob], ...]}``, top-5 by probability),
``metrics.json`` (fixed header + ``fgvlm.eval.metrics.classification_metrics`` with top-5 and ``mode: head``) and
``confusion.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fgvlm.heads.model import ClassificationHead
from fgvlm.heads.training import TensorFeatures, head_logits


def head_probabilities(head: ClassificationHead, features: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities ``[N, C]`` of a head in eval mode."""
    return torch.softmax(head_logits(head, TensorFeatures(features)), dim=1)


def write_evaluation(
    out_dir: Any,
    header: dict[str, Any],
    head: ClassificationHead,
    features: torch.Tensor,
    labels: Sequence[int],
    ids: Sequence[str],
    class_names: Sequence[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Predict every item, write the three files into ``out_dir`` (a ``RunDir``, or a folder: then no ``cost``
    block) and return the metrics."""
    from fgvlm.eval.results import write_probability_results

    probs = head_probabilities(head, features)
    return write_probability_results(out_dir, header, probs, labels, ids, class_names, {"mode": "head", **extra})
