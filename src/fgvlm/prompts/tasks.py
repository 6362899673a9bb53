"""Prompt tasks (templates are data in ``fgvlm/resources/tasks.json``) rendered into ``Prompt`` records.

``build_prompt`` is the one way in, for zero-shot evaluation and for building SFT data alike: it returns the exact
question text, the expected answer, and for multiple-choice / verification prompts which classes were shown.
Randomness (option order, random distractors, positive vs negative) comes only from ``seed``; use
``item_seed(seed, item_id)`` to give every image its own stable seed, independent of order and sharding.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from fgvlm.prompts.kinds import TASK_KINDS, Prompt, TaskKind, option_keys, with_article
from fgvlm.registry import prompt_tasks, unknown_name

__all__ = ["KINDS", "Prompt", "build_prompt", "check_options", "get_task", "item_seed", "option_keys", "task_kind"]
__all__ += ["object_word", "task_names", "with_article"]

KINDS = tuple(TASK_KINDS)


def task_names() -> list[str]:
    return [name for name in prompt_tasks() if not name.startswith("_")]


def get_task(task: str, family: str | None = None) -> dict[str, Any]:
    """The task's spec from ``tasks.json`` with the family's overrides applied (an unknown family uses the default)."""
    tasks = prompt_tasks()
    if task.startswith("_") or task not in tasks:
        raise unknown_name("prompt task", task, task_names())
    spec = {key: value for key, value in tasks[task].items() if key != "families"}
    spec.update(tasks[task].get("families", {}).get(family or "", {}))
    if spec.get("kind") not in KINDS:
        raise ValueError(f"tasks.json: task {task!r} has kind {spec.get('kind')!r}; expected one of {KINDS}")
    return spec


def task_kind(task: str) -> TaskKind:
    """The kind class of a prompt task (``open``, ``closed`` or ``verify``, from ``tasks.json``)."""
    return TASK_KINDS[get_task(task)["kind"]]


def object_word(dataset: str) -> str:
    """What ``{object}`` stands for with this dataset ("flower" for flowers102): the dataset class's ``object_word``."""
    from fgvlm.registry import dataset_class

    return dataset_class(dataset).object_word


def item_seed(seed: int, item_id: str) -> int:
    """A stable per-item seed: the same (seed, id) always gives the same prompt, whatever the order or sharding."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "big")


def check_options(task: str, options: dict[str, Any]) -> dict[str, Any]:
    """The task's options with its defaults filled in; unknown option names raise ``ValueError`` naming them."""
    return _check_options(task, get_task(task), options)


def _check_options(task: str, spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"object", *spec.get("defaults", {}), *TASK_KINDS[spec["kind"]].extra_options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ValueError(f"prompt task {task!r}: unknown option(s) {', '.join(unknown)}; known: {known}")
    return {"object": "object", **spec.get("defaults", {}), **options}


def build_prompt(
    task: str,
    class_names: Sequence[str],
    label: int | None = None,
    family: str | None = None,
    seed: int = 0,
    **options: Any,
) -> Prompt:
    """Render prompt task ``task`` for one image whose class is ``label`` (None: unknown, e.g. at inference).

    Options (defaults in ``tasks.json``): ``object`` (the word for what is shown, e.g. "flower"); closed-qa:
    ``num_options`` (None = all classes; else the true class plus num_options - 1 distractors), ``distractors``
    ("random", or "hard" = the most confusable classes, see ``fgvlm.prompts.distractors``), ``similarity`` (a
    ``[C, C]`` matrix for "hard"), ``answer_by`` ("key" or "name"), ``option_keys`` ("letters" or "numbers"),
    ``shuffle`` (random option order; else by class id); closed-negative-qa: ``positive_rate``, ``hard_pool`` (the
    negative is drawn from this many most confusable classes), ``candidate`` (force the class asked about).
    """
    spec = get_task(task, family)
    opts = _check_options(task, spec, options)
    if label is not None and not 0 <= label < len(class_names):
        raise ValueError(f"label {label} is outside 0..{len(class_names) - 1}")
    rng = random.Random(seed)
    fields = {
        "task": task,
        "kind": spec["kind"],
        "label": label,
        "family": family if family in prompt_tasks()[task].get("families", {}) else None,
    }
    return TASK_KINDS[spec["kind"]].render(spec, class_names, label, rng, opts, fields)
