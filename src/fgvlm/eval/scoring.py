"""One batch of images -> prediction records, for any prompt task, by generation + parsing or by ranking.

A record is one line of ``predictions.jsonl``: ``id``, ``label``, ``pred`` (a label id or null) and, by mode,
``answer`` + ``pred_lenient`` (generate) or ``topk`` ``[[label, score], ...]`` + ``pred_by_score`` (rank).
Prompts that differ per image (shuffled or subset options, verification candidates) are recorded per line too.

Verification (``closed-negative-qa``) is scored as a two-class problem: ``label`` is 1 when the candidate is the
true class (the right answer is "yes") and 0 otherwise, ``pred`` is the parsed yes (1) / no (0); the image's own
class is kept as ``class_label`` and the candidate as ``candidate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fgvlm.eval.matching import get_matcher, match_yes_no
from fgvlm.prompts import Prompt, build_prompt, get_task, item_seed
from fgvlm.prompts.kinds import TASK_KINDS, VERIFY_CLASSES, Matchers

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset, Record, Sample
    from fgvlm.models.base import VLMBackend

TOPK = 5
SCORES = ("sum", "mean", "prior")
__all__ = ["SCORES", "TOPK", "VERIFY_CLASSES", "TaskScorer"]


class TaskScorer:
    """Builds each image's prompt and turns the backend's replies or scores into records.

    What differs between task kinds (candidates, parsing, record fields, metric classes) is the kind class's
    (``fgvlm.prompts.kinds``); the scorer holds the task's settings and the dataset's matchers.
    """

    def __init__(
        self, task: str, dataset: Dataset, family: str | None, options: dict[str, Any], seed: int, score: str = "mean"
    ):
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        self.task = task
        self.spec = get_task(task, family)
        self.kind = TASK_KINDS[self.spec["kind"]]
        self.family = family
        self.names = dataset.prompt_names
        self.options = options
        self.settings = {**self.spec.get("defaults", {}), **options}
        """The task's options with its defaults filled in."""
        self.seed = seed
        self.score = score
        generic = dataset.ignored_head_words
        self.matchers = Matchers(
            strict=get_matcher(self.names, lenient=False, ignored_head_words=generic),
            lenient=get_matcher(self.names, dataset.aliases, lenient=True, ignored_head_words=generic),
            yes_no=match_yes_no,
        )

    @property
    def metric_class_names(self) -> Sequence[str] | None:
        """Class names the metrics are computed over: yes/no for verification, else None (the dataset's)."""
        return self.kind.metric_class_names

    @property
    def num_candidates(self) -> int:
        """How many answers rank mode scores per image: 2 for verification, the option count for closed-qa, else
        every class. Top-5 accuracy means something only when this exceeds ``TOPK``."""
        return self.kind.num_candidates(self.settings, len(self.names))

    @property
    def reports_topk(self) -> bool:
        """Whether rank mode's top-5 accuracy is reported: only when more than ``TOPK`` candidates are ranked
        (with 5 or fewer the true answer is always among them, so the number would always be 1.0)."""
        return self.num_candidates > TOPK

    @property
    def prompt_varies(self) -> bool:
        """Whether images get different prompt texts (then each record keeps its own)."""
        return self.kind.prompt_varies(self.settings, len(self.names))

    def prompt(self, record: Record) -> Prompt:
        return build_prompt(
            self.task,
            self.names,
            label=record.label,
            family=self.family,
            seed=item_seed(self.seed, record.id),
            **self.options,
        )

    def _base(self, sample: Sample, prompt: Prompt) -> dict[str, Any]:
        base = self.kind.base_record(sample.id, sample.label, prompt)
        if self.prompt_varies:
            base["prompt"] = prompt.text
        return base

    # -- generate + parse -----------------------------------------------------------------------------------------
    def parse(self, answer: str, prompt: Prompt) -> tuple[int | None, int | None]:
        """(strict, lenient) prediction for one reply."""
        return self.kind.parse(answer, prompt, self.matchers)

    def generate(self, backend: VLMBackend, samples: list[Sample], max_new_tokens: int) -> list[dict[str, Any]]:
        prompts = [self.prompt(s) for s in samples]
        replies = backend.generate(
            [s.image for s in samples], [p.text for p in prompts], max_new_tokens, return_raw=True
        )
        records = []
        for sample, prompt, (answer, raw) in zip(samples, prompts, replies, strict=True):
            strict, lenient = self.parse(answer, prompt)
            record = {**self._base(sample, prompt), "pred": strict, "pred_lenient": lenient, "answer": answer}
            if raw.strip() != answer:  # e.g. a reasoning block was stripped before matching: keep what was said
                record["raw_answer"] = raw
            records.append(record)
        return records

    # -- rank -----------------------------------------------------------------------------------------------------
    def candidates(self, prompt: Prompt) -> tuple[list[str], list[int]]:
        """Candidate answer strings and the label each one stands for."""
        return self.kind.candidates(self.spec, self.settings, self.names, prompt)

    def rank(self, backend: VLMBackend, samples: list[Sample]) -> list[dict[str, Any]]:
        """Images that share a prompt and candidate set go to the backend together; records keep sample order."""
        prompts = [self.prompt(s) for s in samples]
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for index, prompt in enumerate(prompts):
            texts, _ = self.candidates(prompt)
            groups.setdefault((prompt.text, tuple(texts)), []).append(index)
        records: list[dict[str, Any]] = [{} for _ in samples]
        for (text, texts), indices in groups.items():
            scores = backend.rank([samples[i].image for i in indices], text, list(texts))
            for row, index in enumerate(indices):
                records[index] = self._ranked(samples[index], prompts[index], scores, row)
        return records

    def _ranked(self, sample: Sample, prompt: Prompt, scores: Any, row: int) -> dict[str, Any]:
        import torch

        from fgvlm.eval.results import top_k

        _, labels = self.candidates(prompt)
        ranked = top_k(scores.get(self.score)[row : row + 1], TOPK)[0]
        by_score = {kind: labels[int(torch.argmax(scores.get(kind)[row]))] for kind in SCORES}
        topk = [[labels[i], round(value, 6)] for i, value in ranked]
        return {**self._base(sample, prompt), "pred": labels[ranked[0][0]], "topk": topk, "pred_by_score": by_score}
