"""metrics.json: hand-computed accuracy, macro-F1, top-5, unmatched answers, bootstrap interval."""

from __future__ import annotations

import pytest

from fgvlm.eval.metrics import bootstrap_ci, classification_metrics, confusion_matrix, macro_f1


def test_hand_computed_metrics():
    labels = [0, 1, 2, 2]
    preds = [0, None, 2, 1]  # one unmatched answer (counts as wrong)
    topk = [[0, 1], [2, 1], [2, 0], [1, 2]]
    m = classification_metrics(labels, preds, ["a", "b", "c"], topk=topk, preds_lenient=[0, 1, 2, 1])
    assert m["accuracy"] == 0.5 and m["accuracy_lenient"] == 0.75
    assert m["top5_accuracy"] == 1.0 and m["n"] == 4 and m["n_unmatched"] == 1
    # F1: a = 1 (p 1/1, r 1/1); b = 0 (no hit); c: p = 1/1, r = 1/2 -> 2/3. Mean 5/9.
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["per_class_accuracy"] == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert 0.0 <= m["ci95"][0] <= 0.5 <= m["ci95"][1] <= 1.0


def test_confusion_has_unmatched_column():
    matrix = confusion_matrix([0, 1, 1], [1, None, 1], 2)
    assert matrix.tolist() == [[0, 1, 0], [0, 1, 1]]


def test_macro_f1_perfect_and_generate_mode_top5_null():
    assert macro_f1([0, 1, 2], [0, 1, 2], 3) == 1.0
    assert classification_metrics([0], [0], ["a"])["top5_accuracy"] is None


def test_bootstrap_is_deterministic_and_tight_for_constant():
    assert bootstrap_ci([True] * 50) == [1.0, 1.0]
    values = [True, False] * 100
    lo, hi = bootstrap_ci(values)
    assert bootstrap_ci(values) == [lo, hi] and lo < 0.5 < hi and hi - lo < 0.2
