"""The pieces ``objective: rank`` trains: the collator (image, question, candidates, targets) and the loss module.

``RankModel.image_loss`` is the objective's math for one image: the backend's ``candidate_logprobs`` (the scores
``fgvlm eval --mode rank`` computes: one prefill of image + question with the KV cache on, then every candidate's
tokens after it, packed in one row that shares the cache, with gradients), the configured score (mean or summed
token log-probability), and ``-sum_y w_y * log softmax(s / T)[y]`` over the candidates kept (all, or K negatives
plus the true answer(s)); ``w`` is 1 for a plain image, lambda / 1 - lambda for a MixUp/CutMix image's two answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

    from fgvlm.sft.config import RankOptions
    from fgvlm.sft.data import InstructionRecord


class RankCollator:
    """Records -> ``images``, ``prompts``, ``candidates`` (answer texts) and ``targets`` (``[(index, weight)]``).

    The candidates are what rank evaluation scores for the record's question (``TaskScorer.candidates`` of the
    record's base task, rebuilt from its id and seed, and checked to be the very question trained on).
    """

    def __init__(self, scorers: dict[str, Any], mix_loss: str):
        self.scorers = scorers
        self.mix_loss = mix_loss

    def answers(self, record: InstructionRecord) -> list[tuple[str, float]]:
        """(answer, weight): one, or a mixed image's two by the mixcut rule (both-names is refused by the config)."""
        if record.answer_b is None:
            return [(record.answer, 1.0)]
        lam = float(record.lam)
        if self.mix_loss == "dominant":
            return [(record.answer if lam >= 0.5 else record.answer_b, 1.0)]
        return [(record.answer, lam), (record.answer_b, 1.0 - lam)]

    def encode(self, record: InstructionRecord) -> tuple[list[str], list[tuple[int, float]]]:
        """The candidate texts of the record's question and its targets as (candidate index, weight)."""
        from fgvlm.prompts.instructions import split_task
        from fgvlm.sft.collator import SFTDataError

        scorer = self.scorers[split_task(record.task)[0]]
        prompt = scorer.prompt(record)
        if prompt.text != record.question:
            raise SFTDataError(f"training sample {record.id}: its question differs from the one rank evaluation asks")
        texts, _ = scorer.candidates(prompt)
        weights: dict[int, float] = {}
        for answer, weight in self.answers(record):
            if answer not in texts:
                raise SFTDataError(f"training sample {record.id}: answer {answer!r} is not among its candidates")
            weights[texts.index(answer)] = weights.get(texts.index(answer), 0.0) + weight
        return texts, sorted(weights.items())

    def __call__(self, records: list[InstructionRecord]) -> dict[str, Any]:
        batch: dict[str, list] = {"images": [], "prompts": [], "candidates": [], "targets": []}
        for record in records:
            texts, targets = self.encode(record)
            batch["images"].append(record.load_image())
            batch["prompts"].append(record.question)
            batch["candidates"].append(texts)
            batch["targets"].append(targets)
        return batch


class RankModel(nn.Module):
    """The VLM (possibly PEFT-wrapped; scored through its backend) whose forward is the listwise rank loss."""

    def __init__(self, vlm: nn.Module, backend: Any, options: RankOptions):
        super().__init__()
        self.vlm = vlm
        self.backend = backend  # not a submodule: it runs self.vlm's base model, whose parameters self.vlm holds
        self.options = options

    def forward(
        self,
        images: list[Image.Image],
        prompts: list[str],
        candidates: list[list[str]],
        targets: list[list[tuple[int, float]]],
    ) -> dict[str, torch.Tensor]:
        losses = [self.image_loss(*item) for item in zip(images, prompts, candidates, targets, strict=True)]
        return {"loss": torch.stack(losses).mean()}

    def scores(self, image: Image.Image, prompt: str, texts: list[str], keep: list[int] | None = None) -> torch.Tensor:
        """Scores of ``texts`` (only those at ``keep``, if given) as the answer (mean or summed token
        log-probability), with gradients."""
        summed, counts = self.backend.candidate_logprobs(image, prompt, texts, keep=keep)
        return summed / counts.to(summed.dtype) if self.options.score == "mean" else summed

    def kept(self, image: Image.Image, prompt: str, texts: list[str], targets: list[tuple[int, float]]) -> list[int]:
        """Indices of the candidates in the softmax: all, or the targets plus K negatives (random or hardest)."""
        negatives = self.options.negatives
        wrong = [i for i in range(len(texts)) if i not in {index for index, _ in targets}]
        if negatives == "all" or negatives >= len(wrong):
            return list(range(len(texts)))
        if self.options.hard_negatives:
            with torch.no_grad():
                scores = self.scores(image, prompt, texts)
            chosen = sorted(wrong, key=lambda i: -float(scores[i]))[:negatives]
        else:  # the global generator: the Trainer saves and restores it with each checkpoint
            chosen = [wrong[i] for i in torch.randperm(len(wrong))[:negatives].tolist()]
        return sorted({index for index, _ in targets} | set(chosen))

    def image_loss(
        self, image: Image.Image, prompt: str, texts: list[str], targets: list[tuple[int, float]]
    ) -> torch.Tensor:
        """``-sum_y w_y * log softmax(s / T)[y]`` for one image."""
        keep = self.kept(image, prompt, texts, targets)
        position = {index: row for row, index in enumerate(keep)}
        logprobs = torch.log_softmax(self.scores(image, prompt, texts, keep) / self.options.temperature, 0)
        return -sum(weight * logprobs[position[index]] for index, weight in targets)
