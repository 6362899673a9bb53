"""Prompt tasks (templates are data in ``fgvlm/resources/tasks.json``) rendered into ``Prompt`` records.

``build_prompt`` is the one way in, for zero-shot evaluation and for building SFT data alike: it returns the exact
question text, the expected answer, and for multiple-choice / verification prompts which classes were shown.
Randomness (option order, random distractors, positive vs negative) comes only from ``seed``; use
``item_seed(seed, item_id)`` to give every image its own stable seed, independent of order and sharding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from typing import Any

from fgvlm.prompts.distractors import confusable_classes
from fgvlm.registry import prompt_tasks, unknown_name

KINDS = ("open", "closed", "verify")
DISTRACTORS = ("random", "hard")
ANSWER_BY = ("key", "name")
OPTION_KEYS = ("letters", "numbers")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One rendered question: its text, the target answer, and what it showed.

    For SFT, ``text`` is the user turn and ``answer`` the assistant turn; for evaluation, ``options``/``keys`` map a
    multiple-choice reply back to a class and ``candidate``/``is_positive`` score a verification reply.
    """

    task: str
    kind: str
    text: str
    answer: str | None
    """Target answer text; None when no label was given."""
    label: int | None = None
    options: tuple[int, ...] = ()
    """closed: class ids in the order shown."""
    keys: tuple[str, ...] = ()
    """closed: the option keys ("A", "B", ... or "1", "2", ...) in the same order."""
    candidate: int | None = None
    """verify: the class asked about."""
    is_positive: bool | None = None
    """verify: whether the candidate is the true class."""
    family: str | None = None
    """The model family whose wording was used (None: the default wording)."""

    @property
    def key_to_label(self) -> dict[str, int]:
        return dict(zip(self.keys, self.options, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def object_word(dataset: str) -> str:
    """What ``{object}`` stands for with this dataset ("flower" for flowers102): the dataset class's ``object_word``."""
    from fgvlm.registry import dataset_class

    return dataset_class(dataset).object_word


def option_keys(count: int, style: str = "letters") -> list[str]:
    """Keys for ``count`` options: A..Z, then AA, AB, ... (spreadsheet columns), or 1..count."""
    if style not in OPTION_KEYS:
        raise ValueError(f"option_keys must be one of {OPTION_KEYS}, got {style!r}")
    if style == "numbers":
        return [str(i + 1) for i in range(count)]
    keys = []
    for index in range(count):
        key, n = "", index + 1
        while n:
            n, rest = divmod(n - 1, 26)
            key = chr(ord("A") + rest) + key
        keys.append(key)
    return keys


def item_seed(seed: int, item_id: str) -> int:
    """A stable per-item seed: the same (seed, id) always gives the same prompt, whatever the order or sharding."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "big")


def with_article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def check_options(task: str, options: dict[str, Any]) -> dict[str, Any]:
    """The task's options with its defaults filled in; unknown option names raise ``ValueError`` naming them."""
    return _check_options(task, get_task(task), options)


def _check_options(task: str, spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"object", *spec.get("defaults", {})}
    if spec["kind"] != "open":
        allowed |= {"similarity"}
    if spec["kind"] == "verify":
        allowed |= {"candidate"}
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
    if spec["kind"] == "open":
        text = spec["template"].format(object=opts["object"])
        return Prompt(text=text, answer=None if label is None else class_names[label], **fields)
    if spec["kind"] == "closed":
        return _closed(spec, class_names, label, rng, opts, fields)
    return _verify(task, spec, class_names, label, rng, opts, fields)


def _closed(
    spec: dict, class_names: Sequence[str], label: int | None, rng: random.Random, opts: dict, fields: dict
) -> Prompt:
    num_classes = len(class_names)
    count = opts["num_options"] or num_classes
    if not 2 <= count <= num_classes:
        raise ValueError(f"closed-qa: num_options must be between 2 and {num_classes}, got {count}")
    if opts["distractors"] not in DISTRACTORS or opts["answer_by"] not in ANSWER_BY:
        raise ValueError(
            f"closed-qa: distractors must be one of {DISTRACTORS} and answer_by one of {ANSWER_BY}; "
            f"got {opts['distractors']!r}, {opts['answer_by']!r}"
        )
    if count == num_classes:
        shown = list(range(num_classes))
    elif label is None:
        raise ValueError("closed-qa: num_options < number of classes needs the true label (to include it)")
    elif opts["distractors"] == "hard":
        shown = [label, *confusable_classes(label, class_names, opts.get("similarity"))[: count - 1]]
    else:
        shown = [label, *rng.sample([c for c in range(num_classes) if c != label], count - 1)]
    if opts["shuffle"]:
        rng.shuffle(shown)
    else:
        shown.sort()
    keys = option_keys(count, opts["option_keys"])
    lines = [spec["option_line"].format(key=key, name=class_names[c]) for key, c in zip(keys, shown, strict=True)]
    key_kind = "letter" if opts["option_keys"] == "letters" else "number"
    instruction = spec["instructions"][opts["answer_by"]].format(key_kind=key_kind)
    text = spec["template"].format(object=opts["object"], options="\n".join(lines), instruction=instruction)
    answer = None
    if label is not None:
        answer = keys[shown.index(label)] if opts["answer_by"] == "key" else class_names[label]
    return Prompt(text=text, answer=answer, options=tuple(shown), keys=tuple(keys), **fields)


def _verify(
    task: str, spec: dict, class_names: Sequence[str], label: int | None, rng: random.Random, opts: dict, fields: dict
) -> Prompt:
    if label is None:
        raise ValueError(f"{task}: a verification prompt needs the true label")
    candidate = opts.get("candidate")
    if candidate is None:
        positive = rng.random() < opts["positive_rate"]
        pool = confusable_classes(label, class_names, opts.get("similarity"))[: max(1, opts["hard_pool"])]
        candidate = label if positive else rng.choice(pool)
    elif not 0 <= candidate < len(class_names):
        raise ValueError(f"{task}: candidate {candidate} is outside 0..{len(class_names) - 1}")
    name = class_names[candidate]
    text = spec["template"].format(object=opts["object"], name=name, a_name=with_article(name))
    is_positive = candidate == label
    answer = spec["answers"]["positive" if is_positive else "negative"]
    return Prompt(text=text, answer=answer, candidate=candidate, is_positive=is_positive, **fields)
