"""``objective: rank``: listwise training on the class-name scores, exactly what ``fgvlm eval --mode rank`` measures.

Per image, loss = -log softmax(s / T)[y] over the candidate answers of the training question (``rank:`` options in
``SFTConfig``), s being each candidate's log-likelihood as the assistant's answer, computed as rank evaluation
computes it (the image+prompt prefix once, its KV cache shared by every candidate packed in one row), with gradients
through the candidate block and the prefix. The model learns to put the true name above every other, with no
sampling: the expected-reward limit of a class-match RL objective. Validation and the final evaluation are the
defaults (the eval task ranked), so training and evaluation optimise and measure the same scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.config import ConfigError
from fgvlm.sft.objectives.base import ModuleObjective

if TYPE_CHECKING:
    from fgvlm.sft.config import SFTConfig


class RankObjective(ModuleObjective):
    name = "rank"

    @classmethod
    def check_config(cls, cfg: SFTConfig) -> None:
        super().check_config(cfg)
        if cfg.mixed_images and cfg.mixcut.loss == "both-names":
            raise ConfigError(
                "objective rank scores one candidate per answer; mixcut.loss both-names names two classes in one "
                "answer, which is no candidate: use lambda-nll or dominant"
            )
        if cfg.train.gradient_checkpointing:
            raise ConfigError(
                "objective rank shares the prefix's KV cache with the candidates, which activation checkpointing "
                "switches off: set train.gradient_checkpointing false (or fewer rank.negatives to save memory)"
            )

    def prepare(self) -> None:
        from fgvlm.eval.scoring import TaskScorer
        from fgvlm.prompts import object_word
        from fgvlm.prompts.instructions import split_task
        from fgvlm.sft.objectives.rank_model import RankCollator, RankModel

        setup, cfg = self.setup, self.cfg
        scorers = {}
        for task in {split_task(name)[0] for name in cfg.tasks}:
            options = {"object": object_word(cfg.data.dataset), **cfg.task_options.get(task, {})}
            scorers[task] = TaskScorer(task, setup.dataset, setup.family, options, cfg.seed, cfg.rank.score)
        self._collator = RankCollator(scorers, cfg.mixcut.loss)
        self.model = RankModel(setup.model, setup.backend, cfg.rank)

    def results_fields(self) -> dict[str, Any]:
        from fgvlm.config import to_dict

        return {**super().results_fields(), "rank": to_dict(self.cfg.rank)}
