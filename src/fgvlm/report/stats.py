"""Statistics a report adds on top of each run's metrics: paired differences between runs and chance level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fgvlm.report.rundirs import RunInfo


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of run A minus run B on the images both evaluated, with a paired-bootstrap 95 % interval."""

    difference: float
    low: float
    high: float
    n: int


def correct_by_id(run: RunInfo) -> dict[str, bool]:
    """Image id -> whether the run's prediction was right (an unmatched answer, ``pred`` null, is wrong)."""
    return {str(p["id"]): p.get("pred") is not None and p.get("pred") == p["label"] for p in run.predictions}


def paired_bootstrap(
    a: dict[str, bool], b: dict[str, bool], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> PairedDifference | None:
    """Resample the shared image ids (both runs' outcomes of an image stay together); None when none are shared.

    Pairing removes the between-image variance both runs share, so the interval is much narrower than one built
    from the two runs' separate intervals.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diff = np.array([float(a[i]) - float(b[i]) for i in shared])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return PairedDifference(
        float(diff.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), len(shared)
    )


def chance_level(run: RunInfo) -> float | None:
    """Accuracy of guessing uniformly among the answer choices: 1/options for closed questions with a fixed number
    of options, 1/2 for yes/no verification, else 1/number of classes."""
    options = (run.config.get("task_options") or {}).get("num_options")
    if isinstance(options, int) and options > 0:
        return 1.0 / options
    classes = _num_answer_classes(run)
    return 1.0 / classes if classes else None


def _num_answer_classes(run: RunInfo) -> int | None:
    if run.confusion and isinstance(run.confusion.get("rows"), list) and run.confusion["rows"]:
        return len(run.confusion["rows"])
    for source in (run.metrics or {}, run.meta.get("dataset") or {}):
        value: Any = source.get("num_classes")
        if isinstance(value, int) and value > 0:
            return value
    return None
