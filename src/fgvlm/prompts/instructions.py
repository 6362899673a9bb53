"""Instruction data: one question/answer conversation per image, built exactly as evaluation asks, and exported.

``build_instructions`` is the one builder for SFT training and for ``fgvlm prompts build`` alike, so what is
exported is what is trained. The question is ``build_prompt``'s text with evaluation's arguments (the dataset's
prompt names, ``object_word``, the per-image seed ``item_seed(seed, id)``, the model family's wording), so training
and ``fgvlm eval`` show the model byte-identical questions; the answer is the one evaluation scores (closed-qa: the
option key, or the name with ``answer_by: name``; closed-negative-qa: yes/no).

MixUp/CutMix images are an option any task takes: ``<task>-mixcut`` (``open-qa-mixcut``, ``closed-qa-mixcut``,
...) asks that task's question about a MixUp/CutMix image of the record's class (a) and one image of another class
(b, drawn from the same split by the per-image seed, among the classes the question can answer: closed-qa draws b
from the options shown). The record keeps both answers (what the very question answers for a, and for b), lambda
(the share of a), the CutMix box and the pair of ids. Exported files carry class a's answer (the dominant-class
rule); lambda and answer_b travel in each entry's ``meta`` so a trainer can apply ``lam * NLL(a) + (1 - lam) *
NLL(b)``.

A mix ``{task: weight}`` gives each image one task; the counts per task are the weights' exact shares (largest
remainder) and which image gets which task is a permutation fixed by the seed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fgvlm.config import ConfigError
from fgvlm.prompts.kinds import TASK_KINDS
from fgvlm.prompts.mixcut import MixCutOptions, mix_images
from fgvlm.prompts.tasks import Prompt, build_prompt, check_options, get_task, item_seed, object_word, task_names

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset, Record

MIXCUT_SUFFIX = "-mixcut"
MIXCUT_TASK = "open-qa-mixcut"
"""The reference study's MixUp/CutMix task (open-qa on mixed images)."""
FORMATS = ("messages", "llava")
_MIX_STREAM = 1  # second seed word of the mixcut generator: independent of the prompt's random.Random stream


def instruction_tasks() -> list[str]:
    """Tasks ``build_instructions`` knows: the prompt tasks of ``tasks.json``, each also with mixed images."""
    return [*task_names(), *(name + MIXCUT_SUFFIX for name in task_names())]


def split_task(task: str) -> tuple[str, bool]:
    """``"closed-qa-mixcut"`` -> ``("closed-qa", True)``; ``"open-qa"`` -> ``("open-qa", False)``."""
    if task.endswith(MIXCUT_SUFFIX) and task.removesuffix(MIXCUT_SUFFIX) in task_names():
        return task.removesuffix(MIXCUT_SUFFIX), True
    return task, False


def with_mixed_images(task: str) -> str:
    """The name of ``task`` on MixUp/CutMix images (unchanged if it already is)."""
    return task if split_task(task)[1] else task + MIXCUT_SUFFIX


@dataclasses.dataclass
class InstructionRecord:
    """One training conversation: an image, the user's question and the assistant's answer.

    ``image`` is a file path (as a string), or an in-memory image when it was drawn or mixed and no ``out_dir`` was
    given. The mixcut fields are None for the other tasks (and for an image that ``prob`` left unmixed).
    """

    id: str
    image: str | Image.Image
    question: str
    answer: str
    task: str
    label: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Task details: closed-qa ``options``/``keys``; closed-negative-qa ``candidate``/``is_positive``; mixcut
    ``mode``."""
    answer_b: str | None = None
    label_b: int | None = None
    lam: float | None = None
    """Share of class a (``label``) in the image; 1.0 for an unmixed mixcut image."""
    box: tuple[int, int, int, int] | None = None
    """CutMix: (x0, y0, x1, y1) region of the image taken from b (half-open pixels)."""
    pair: tuple[str, str] | None = None
    """(id of a, id of b): the two source images."""

    def load_image(self) -> Image.Image:
        """The image as RGB pixels (opens the file, or returns the in-memory image)."""
        if isinstance(self.image, Image.Image):
            return self.image.convert("RGB")
        with Image.open(self.image) as img:
            return img.convert("RGB")

    def meta(self) -> dict[str, Any]:
        """What exports carry beside the conversation: task, label, details and the mixcut fields that are set."""
        out: dict[str, Any] = {"task": self.task, "label": self.label, **self.extra}
        for name in ("answer_b", "label_b", "lam", "box", "pair"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def parse_mix(text: str) -> dict[str, float]:
    """``"open-qa=0.5,closed-qa=0.3"`` -> ``{"open-qa": 0.5, "closed-qa": 0.3}``; ConfigError names a bad part."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not weight >= 0:
            raise ConfigError(f"mix: cannot read {part!r}; expected TASK=WEIGHT with a weight >= 0")
        weights[name.strip()] = weight
    if not weights:
        raise ConfigError(f"mix: no TASK=WEIGHT pairs in {text!r}")
    return weights


def check_tasks(task: str | Mapping[str, float]) -> dict[str, float]:
    """One task name or a ``{task: weight}`` mix -> weights summing to 1; unknown tasks raise ConfigError."""
    weights = {task: 1.0} if isinstance(task, str) else dict(task)
    known = instruction_tasks()
    for name, weight in weights.items():
        if name not in known:
            raise ConfigError(f"unknown instruction task {name!r}; known: {', '.join(known)}")
        if not weight >= 0:
            raise ConfigError(f"mix: the weight of {name!r} must be >= 0, got {weight!r}")
    total = sum(weights.values())
    if not total > 0:
        raise ConfigError(f"mix: the weights {weights} sum to 0")
    return {name: weight / total for name, weight in weights.items() if weight > 0}


def assign_tasks(count: int, weights: Mapping[str, float], seed: int) -> list[str]:
    """A task per item: exact shares by largest remainder, in an order shuffled by ``seed``."""
    names = list(weights)
    quotas = np.array([weights[n] for n in names]) * count
    counts = np.floor(quotas).astype(int)
    by_remainder = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: count - int(counts.sum())]:
        counts[i] += 1
    tasks = [name for name, n in zip(names, counts, strict=True) for _ in range(n)]
    order = np.random.default_rng(seed).permutation(count)
    return [tasks[i] for i in order]


def build_instructions(
    dataset: Dataset,
    split: str,
    task: str | Mapping[str, float],
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    mixcut: MixCutOptions | None = None,
    family: str | None = None,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[InstructionRecord]:
    """One record per image of ``split`` (the first ``limit``), deterministic for ``seed``.

    ``task``: a task name or a mix ``{task: weight}``. ``out_dir``: where images that are not files go (drawn
    datasets: ``images/``; mixcut: ``mixcut/``), as PNG; None keeps them in memory. ``family``: the model family
    whose wording evaluation would use (None: the default wording). ``task_options``: per task, the options
    evaluation's ``task_options`` would pass (e.g. ``{"closed-qa": {"num_options": 10}}``; ``<task>-mixcut``
    uses ``<task>``'s). ``progress`` is called
    with 1 after each record.
    """
    weights = check_tasks(task)
    records = dataset.split(split).records
    records = records[:limit] if limit is not None else records
    builder = _Builder(dataset, split, seed, out_dir, mixcut or MixCutOptions(), family, task_options or {})
    out = []
    for record, name in zip(records, assign_tasks(len(records), weights, seed), strict=True):
        out.append(builder.build(record, name))
        if progress is not None:
            progress(1)
    return out


class _Builder:
    """Holds what every record of one build shares: prompt arguments, the split's labels, the image folder."""

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        seed: int,
        out_dir: str | Path | None,
        mixcut: MixCutOptions,
        family: str | None,
        task_options: Mapping[str, Mapping[str, Any]],
    ):
        unknown = sorted(set(task_options) - set(task_names()))
        if unknown:  # closed-qa-mixcut asks the closed-qa question, with closed-qa's options
            raise ConfigError(f"task_options: unknown prompt task(s) {', '.join(unknown)}; known: {task_names()}")
        self.dataset = dataset
        self.names = dataset.prompt_names
        self.seed = seed
        self.out_dir = Path(out_dir).resolve() if out_dir is not None else None
        self.mixcut = mixcut
        self.family = family
        self.task_options = task_options
        self.split_records = dataset.split(split).records
        self.split_labels = np.array([r.label for r in self.split_records])

    def build(self, record: Record, task: str) -> InstructionRecord:
        base, mixed = split_task(task)
        if mixed:
            return self._mixcut(record, base, task)
        prompt = self._prompt(task, record)
        extra = TASK_KINDS[prompt.kind].record_fields(prompt)
        image = self._source(record)
        return InstructionRecord(record.id, image, prompt.text, prompt.answer, task, record.label, extra)

    def _options(self, task: str) -> dict[str, Any]:
        return {"object": object_word(self.dataset.name), **self.task_options.get(task, {})}

    def _prompt(self, task: str, record: Record) -> Prompt:
        """Exactly evaluation's prompt (``TaskScorer.prompt``) for this image."""
        options = self._options(task)
        seed = item_seed(self.seed, record.id)
        try:
            return build_prompt(task, self.names, label=record.label, family=self.family, seed=seed, **options)
        except ValueError as err:
            raise ConfigError(f"task_options for {task}: {err}") from None

    def _mixcut(self, record: Record, base: str, task: str) -> InstructionRecord:
        """``base``'s question about a MixUp/CutMix image of ``record`` and a partner the question can answer."""
        prompt = self._prompt(base, record)
        kind = TASK_KINDS[prompt.kind]
        extra = kind.record_fields(prompt)
        fields = {"id": record.id, "question": prompt.text, "answer": prompt.answer, "task": task}
        rng = np.random.default_rng((item_seed(self.seed, record.id), _MIX_STREAM))
        if rng.random() >= self.mixcut.prob:
            return InstructionRecord(image=self._source(record), label=record.label, extra=extra, lam=1.0, **fields)
        allowed = kind.partner_classes(prompt, record.label, len(self.names))
        others = np.flatnonzero(np.isin(self.split_labels, allowed))
        if not len(others):
            raise ConfigError(f"{task}: the split has no image of another class the question can answer")
        partner = self.split_records[int(others[rng.integers(len(others))])]
        mixed = mix_images(self.dataset.load_image(record), self.dataset.load_image(partner), rng, self.mixcut)
        image = self._write(mixed.image, "mixcut", record.id) if self.out_dir else mixed.image
        spec = get_task(base, self.family)
        options = check_options(base, self._options(base))
        return InstructionRecord(
            image=image,
            label=record.label,
            extra={**extra, "mode": mixed.mode},
            answer_b=kind.answer_for(spec, prompt, partner.label, self.names, options),
            label_b=partner.label,
            lam=mixed.lam,
            box=mixed.box,
            pair=(record.id, partner.id),
            **fields,
        )

    def _source(self, record: Record) -> str | Image.Image:
        """The image's file, else (drawn datasets) its pixels, written under out_dir/images when there is one."""
        if record.path is not None:
            return str(Path(record.path).resolve())
        image = self.dataset.load_image(record)
        return self._write(image, "images", record.id) if self.out_dir else image

    def _write(self, image: Image.Image, folder: str, record_id: str) -> str:
        path = self.out_dir / folder / f"{_safe_name(record_id)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        return str(path)


def _safe_name(record_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", record_id)


def export_instructions(records: list[InstructionRecord], fmt: str, path: str | Path) -> Path:
    """Write ``records`` as ``messages`` (OpenAI-style JSONL, as lmms-engine reads it) or ``llava`` (a JSON list,
    as LLaVA / the Qwen fine-tuning scripts read it). Image paths are absolute; every entry has a ``meta`` object
    (task, label, details, mixcut lambda/answer_b/box/pair)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown instruction format {fmt!r}; choose one of {', '.join(FORMATS)}")
    for record in records:
        if not isinstance(record.image, str):
            raise ValueError(f"record {record.id}: its image is in memory; build with out_dir to write it as a file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "messages":
        text = "".join(json.dumps(_messages_entry(r), ensure_ascii=False) + "\n" for r in records)
    else:
        entries = (json.dumps(_llava_entry(r), ensure_ascii=False) for r in records)
        text = "[\n" + ",\n".join(entries) + "\n]\n"  # a JSON list, one conversation per line
    path.write_text(text, encoding="utf-8")
    return path


def _messages_entry(record: InstructionRecord) -> dict[str, Any]:
    user = [{"type": "image_url", "image_url": {"url": record.image}}, {"type": "text", "text": record.question}]
    return {
        "id": record.id,
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": record.answer}]},
        ],
        "meta": record.meta(),
    }


def _llava_entry(record: InstructionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "image": record.image,
        "conversations": [
            {"from": "human", "value": "<image>\n" + record.question},
            {"from": "gpt", "value": record.answer},
        ],
        "meta": record.meta(),
    }
