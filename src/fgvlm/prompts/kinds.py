"""One class per prompt-task kind: ``open`` (name it), ``closed`` (choose among options), ``verify`` (yes/no).

A task in ``tasks.json`` names its kind; everything that differs between kinds lives on the kind's class and
nowhere else: which options it takes, how a question is rendered, what an instruction record keeps of it, the
answer a given class would have (the second answer of a MixUp/CutMix image), which classes can be mixed in, and
for evaluation the candidates ranked per image, how a reply is parsed, what a prediction record carries and the
classes the metrics are computed over. ``TASK_KINDS`` is the table; adding a kind = one class + one entry.

Parsing needs the answer matchers, which live a layer above (``fgvlm.eval.matching``); the scorer passes them in
as a ``Matchers`` value, so this module imports nothing from evaluation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fgvlm.prompts.distractors import confusable_classes

DISTRACTORS = ("random", "hard")
ANSWER_BY = ("key", "name")
OPTION_KEYS = ("letters", "numbers")
VERIFY_CLASSES = ("no", "yes")
"""Class names of the verification task's metrics: label 0 = the answer should be no, 1 = yes."""


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


@dataclass(frozen=True)
class Matchers:
    """What parsing a reply needs: strict and lenient class matchers and the yes/no reader (from ``fgvlm.eval``)."""

    strict: Any
    """``.match(answer, options) -> label | None`` (canonical names only)."""
    lenient: Any
    """The same with aliases and the fuzzy fallback."""
    yes_no: Callable[[str], bool | None]


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


def with_article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


class TaskKind:
    """The interface; the open kind's behaviour is the default."""

    name = "open"
    extra_options: frozenset[str] = frozenset()
    """Options this kind takes besides ``object`` and the task's defaults."""
    metric_class_names: Sequence[str] | None = None
    """Class names the metrics are computed over (None: the dataset's)."""

    # -- rendering ------------------------------------------------------------------------------------------------
    def render(
        self, spec: dict, names: Sequence[str], label: int | None, rng: random.Random, opts: dict, fields: dict
    ) -> Prompt:
        """The question for an image of class ``label`` (None: unknown, at inference)."""
        text = spec["template"].format(object=opts["object"])
        return Prompt(text=text, answer=None if label is None else names[label], **fields)

    def record_fields(self, prompt: Prompt) -> dict[str, Any]:
        """What an instruction record keeps of the prompt besides question and answer (``InstructionRecord.extra``)."""
        return {}

    def answer_for(self, spec: dict, prompt: Prompt, label: int, names: Sequence[str], opts: dict) -> str:
        """The answer this very question has when the image shows class ``label`` (a mixed image's second class)."""
        return names[label]

    def partner_classes(self, prompt: Prompt, label: int, num_classes: int) -> list[int]:
        """Classes whose images may be mixed into this question's image: those the question can answer."""
        return [c for c in range(num_classes) if c != label]

    # -- evaluation -----------------------------------------------------------------------------------------------
    def num_candidates(self, settings: dict, num_names: int) -> int:
        """Answers rank mode scores per image."""
        return num_names

    def prompt_varies(self, settings: dict, num_names: int) -> bool:
        """Whether images get different prompt texts (then each prediction record keeps its own)."""
        return False

    def candidates(self, spec: dict, settings: dict, names: Sequence[str], prompt: Prompt) -> tuple[list, list]:
        """Candidate answer strings ranked for ``prompt`` and the label each one stands for."""
        return list(names), list(range(len(names)))

    def base_record(self, sample_id: str, label: int, prompt: Prompt) -> dict[str, Any]:
        """The prediction record's identity fields (``id``, ``label`` and what the kind adds)."""
        return {"id": sample_id, "label": label}

    def parse(self, answer: str, prompt: Prompt, matchers: Matchers) -> tuple[int | None, int | None]:
        """(strict, lenient) prediction for one reply."""
        return matchers.strict.match(answer, None), matchers.lenient.match(answer, None)

    def metric_extras(self, labels: list[int]) -> dict[str, Any]:
        """Kind-specific numbers for ``metrics.json``."""
        return {}


class OpenKind(TaskKind):
    """Name the object freely; the answer is the class name."""


class ClosedKind(TaskKind):
    """Choose among listed options (all classes, or the true one plus distractors); answer by key or by name."""

    name = "closed"
    extra_options = frozenset({"similarity"})

    def render(
        self, spec: dict, names: Sequence[str], label: int | None, rng: random.Random, opts: dict, fields: dict
    ) -> Prompt:
        shown = self._shown(names, label, rng, opts)
        keys = option_keys(len(shown), opts["option_keys"])
        lines = [spec["option_line"].format(key=key, name=names[c]) for key, c in zip(keys, shown, strict=True)]
        key_kind = "letter" if opts["option_keys"] == "letters" else "number"
        instruction = spec["instructions"][opts["answer_by"]].format(key_kind=key_kind)
        text = spec["template"].format(object=opts["object"], options="\n".join(lines), instruction=instruction)
        answer = None if label is None else self._answer(label, shown, keys, names, opts)
        return Prompt(text=text, answer=answer, options=tuple(shown), keys=tuple(keys), **fields)

    def _shown(self, names: Sequence[str], label: int | None, rng: random.Random, opts: dict) -> list[int]:
        num_classes = len(names)
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
            shown = [label, *confusable_classes(label, names, opts.get("similarity"))[: count - 1]]
        else:
            shown = [label, *rng.sample([c for c in range(num_classes) if c != label], count - 1)]
        if opts["shuffle"]:
            rng.shuffle(shown)
        else:
            shown.sort()
        return shown

    def record_fields(self, prompt: Prompt) -> dict[str, Any]:
        return {"options": list(prompt.options), "keys": list(prompt.keys)}

    def answer_for(self, spec: dict, prompt: Prompt, label: int, names: Sequence[str], opts: dict) -> str:
        return self._answer(label, list(prompt.options), list(prompt.keys), names, opts)

    @staticmethod
    def _answer(label: int, shown: list[int], keys: list[str], names: Sequence[str], opts: dict) -> str:
        if label not in shown:
            raise ValueError(f"closed-qa: class {label} is not among the options shown {shown}")
        return keys[shown.index(label)] if opts["answer_by"] == "key" else names[label]

    def partner_classes(self, prompt: Prompt, label: int, num_classes: int) -> list[int]:
        return [c for c in prompt.options if c != label]

    def num_candidates(self, settings: dict, num_names: int) -> int:
        return settings["num_options"] or num_names

    def prompt_varies(self, settings: dict, num_names: int) -> bool:
        count = settings["num_options"] or num_names
        return bool(settings["shuffle"]) or count < num_names

    def candidates(self, spec: dict, settings: dict, names: Sequence[str], prompt: Prompt) -> tuple[list, list]:
        by_key = settings["answer_by"] == "key"
        texts = list(prompt.keys) if by_key else [names[c] for c in prompt.options]
        return texts, list(prompt.options)

    def base_record(self, sample_id: str, label: int, prompt: Prompt) -> dict[str, Any]:
        return {"id": sample_id, "label": label, "options": list(prompt.options)}

    def parse(self, answer: str, prompt: Prompt, matchers: Matchers) -> tuple[int | None, int | None]:
        options = prompt.key_to_label
        return matchers.strict.match(answer, options), matchers.lenient.match(answer, options)


class VerifyKind(TaskKind):
    """Is this object the named candidate? Yes/no, scored as a two-class problem (label 1 = yes is right)."""

    name = "verify"
    extra_options = frozenset({"similarity", "candidate"})
    metric_class_names = VERIFY_CLASSES

    def render(
        self, spec: dict, names: Sequence[str], label: int | None, rng: random.Random, opts: dict, fields: dict
    ) -> Prompt:
        task = fields["task"]
        if label is None:
            raise ValueError(f"{task}: a verification prompt needs the true label")
        candidate = opts.get("candidate")
        if candidate is None:
            positive = rng.random() < opts["positive_rate"]
            pool = confusable_classes(label, names, opts.get("similarity"))[: max(1, opts["hard_pool"])]
            candidate = label if positive else rng.choice(pool)
        elif not 0 <= candidate < len(names):
            raise ValueError(f"{task}: candidate {candidate} is outside 0..{len(names) - 1}")
        name = names[candidate]
        text = spec["template"].format(object=opts["object"], name=name, a_name=with_article(name))
        is_positive = candidate == label
        answer = spec["answers"]["positive" if is_positive else "negative"]
        return Prompt(text=text, answer=answer, candidate=candidate, is_positive=is_positive, **fields)

    def record_fields(self, prompt: Prompt) -> dict[str, Any]:
        return {"candidate": prompt.candidate, "is_positive": prompt.is_positive}

    def answer_for(self, spec: dict, prompt: Prompt, label: int, names: Sequence[str], opts: dict) -> str:
        return spec["answers"]["positive" if prompt.candidate == label else "negative"]

    def num_candidates(self, settings: dict, num_names: int) -> int:
        return len(VERIFY_CLASSES)

    def prompt_varies(self, settings: dict, num_names: int) -> bool:
        return True

    def candidates(self, spec: dict, settings: dict, names: Sequence[str], prompt: Prompt) -> tuple[list, list]:
        answers = spec["answers"]
        return [answers["positive"], answers["negative"]], [1, 0]

    def base_record(self, sample_id: str, label: int, prompt: Prompt) -> dict[str, Any]:
        return {"id": sample_id, "label": int(prompt.is_positive), "class_label": label, "candidate": prompt.candidate}

    def parse(self, answer: str, prompt: Prompt, matchers: Matchers) -> tuple[int | None, int | None]:
        said_yes = matchers.yes_no(answer)
        pred = None if said_yes is None else int(said_yes)
        return pred, pred

    def metric_extras(self, labels: list[int]) -> dict[str, Any]:
        return {"positives": sum(labels)}


TASK_KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (OpenKind(), ClosedKind(), VerifyKind())}
"""Kind name (``tasks.json``'s ``kind``) -> its class."""
