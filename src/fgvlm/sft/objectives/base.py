"""``Objective``: the interface every training objective implements, with the defaults most of them share.

The run (``fgvlm.sft.run``) calls, in order: ``check_config`` (class level, when the config is built), ``prepare``
(after the model is loaded and prepared: build what the objective trains and how it batches), ``check_samples``,
then hands ``training_model``, ``collator``, ``loss`` and ``optimizer_groups`` to the Trainer and ``validate`` to the
monitor; at the end ``use_merged`` (the LoRA-merged model), ``evaluate`` (the final evaluation on the reloaded
``RUN/model``, writing the objective's result files) and ``results_fields`` / ``meta_fields``.

Defaults: validation is the eval task's accuracy by ``rank`` on the validation subset with the model being trained,
and the final evaluation is ``fgvlm eval --mode rank`` of the reloaded model (its run kept in ``eval-<split>/``);
``generate`` and ``rank`` keep both, ``classify`` replaces them by its head's.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any, ClassVar

from fgvlm.config import ConfigError

if TYPE_CHECKING:
    import torch

    from fgvlm.models.base import ModelConfig
    from fgvlm.sft.config import SFTConfig
    from fgvlm.sft.run import Setup

VALIDATION_BATCH = 8


class Objective:
    """One training objective; subclasses set ``name`` and override what they change."""

    name: ClassVar[str] = ""
    mixed_images: ClassVar[bool] = True
    """Whether the objective trains on MixUp/CutMix images (``-mixcut`` tasks)."""
    packing: ClassVar[bool] = False
    """Whether ``packing: true`` applies (padding-free rows of the generate collator)."""
    collator_checks_lengths: ClassVar[bool] = False
    """Whether every training record is encoded once before training (a too-long sample is refused by id)."""
    log_keys: ClassVar[tuple[str, ...]] = ()
    """Numbers of the objective's own that ``train_log.jsonl`` records when a log line has them (its callbacks or
    ``validate`` put them in the Trainer's logs)."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.cfg = setup.cfg

    # -- configuration ------------------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: SFTConfig) -> None:
        """Refuse options this objective cannot honour (ConfigError naming the key)."""
        if cfg.mixed_images and not cls.mixed_images:
            raise ConfigError(
                f"objective {cls.name} trains on plain images; use task open-qa (not open-qa-mixcut / images: mixcut)"
            )

    # -- training -----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build what the objective trains and batches with (the setup's model, collator and records are ready)."""

    def check_samples(self) -> None:
        """Encode every training record once before training when the collator can refuse one (too long)."""
        if not self.collator_checks_lengths:
            return
        from fgvlm.progress import track

        for record in track(self.setup.train_records, description="checking samples", transient=True):
            self.setup.collator.encode_record(record)

    @property
    def training_model(self) -> torch.nn.Module:
        """The module the Trainer trains (and checkpoints by its trainable parameters)."""
        return self.setup.model

    @property
    def collator(self) -> Any:
        """Records -> one batch of ``training_model``'s inputs."""
        return self.setup.collator

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """The loss of one micro-batch (``model`` is ``training_model``, possibly wrapped by DDP)."""
        raise NotImplementedError(f"objective {self.name} defines no loss")

    def callbacks(self) -> list[Any]:
        """Trainer callbacks of the objective (placed before the run's monitor, so their log numbers reach it)."""
        return []

    def optimizer_groups(self, model: Any, lr: float) -> list[dict[str, Any]] | None:
        """AdamW parameter groups when some parameters need their own learning rate; None: the Trainer's own."""
        return None

    def validate(self, model: Any) -> dict[str, Any]:
        """``val_accuracy`` / ``val_top5`` of the model being trained: the eval task ranked on the validation
        subset (the model switches to eval mode for it and back)."""
        from fgvlm.eval.scoring import TaskScorer
        from fgvlm.prompts import object_word

        setup = self.setup
        if not setup.val_records:
            return {}
        cfg = self.cfg
        options = {"object": object_word(cfg.data.dataset), **cfg.task_options.get(cfg.eval_task, {})}
        scorer = TaskScorer(cfg.eval_task, setup.dataset, setup.family, options, cfg.seed, "mean")
        split = setup.dataset.split(cfg.val_split)
        network = setup.backend.model
        was_training = network.training
        network.eval()
        try:
            records = []
            for start in range(0, len(setup.val_records), VALIDATION_BATCH):
                stop = min(start + VALIDATION_BATCH, len(setup.val_records))
                records += scorer.rank(setup.backend, [split[i] for i in range(start, stop)])
        finally:
            network.train(was_training)
        n = max(1, len(records))
        top5 = sum(r["label"] in [c for c, _ in r["topk"]] for r in records) / n if scorer.reports_topk else None
        return {"val_accuracy": sum(r["pred"] == r["label"] for r in records) / n, "val_top5": top5}

    # -- the end of the run -------------------------------------------------------------------------------------
    def use_merged(self, merged: torch.nn.Module) -> None:
        """The LoRA-merged model replaces the trained one (an objective holding it in a wrapper updates it)."""

    def evaluate(
        self, backend: Any, model_cfg: ModelConfig, best: dict[str, Any] | None, is_main: bool
    ) -> dict[str, Any]:
        """The final evaluation of the reloaded ``RUN/model`` (``backend``): ``fgvlm eval`` in rank mode on the
        eval task and split; its run is kept in ``eval-<split>/``, predictions and confusion copied up."""
        from fgvlm.eval.zeroshot import evaluate

        cfg, run = self.cfg, self.setup.run
        eval_cfg = self.eval_config(model_cfg, "rank")
        out = run / f"eval-{cfg.eval_split}"
        metrics = evaluate(eval_cfg, out, resume=False, backend=backend)
        if is_main:
            for name in ("predictions.jsonl", "confusion.json"):
                shutil.copyfile(out / name, run / name)
        return metrics

    def eval_config(self, model_cfg: ModelConfig, mode: str, **changes: Any) -> Any:
        """``fgvlm eval``'s config for the final evaluation of ``model_cfg``: the eval task on the eval split."""
        from fgvlm.eval.zeroshot import EvalConfig

        cfg = self.cfg
        return EvalConfig(
            data=cfg.data,
            model=model_cfg,
            split=cfg.eval_split,
            mode=mode,
            task=cfg.eval_task,
            task_options=cfg.task_options.get(cfg.eval_task, {}),
            limit=cfg.eval_limit or cfg.limit,
            seed=cfg.seed,
            **changes,
        )

    def results_fields(self) -> dict[str, Any]:
        """What ``metrics.json`` records of the objective (beside the evaluation's numbers)."""
        cfg = self.cfg
        return {"objective": self.name, "mix_loss": cfg.mixcut.loss if cfg.mixed_images else None}

    def meta_fields(self) -> dict[str, Any]:
        """What ``meta.json`` records of the objective."""
        return self.results_fields()


class ModuleObjective(Objective):
    """An objective whose training module computes its own loss: ``prepare`` sets ``self.model`` (an
    ``nn.Module`` wrapping the VLM, so DDP wraps it whole) and ``self._collator``; the loss is the module's."""

    model: Any = None
    _collator: Any = None

    @property
    def training_model(self) -> torch.nn.Module:
        return self.model

    @property
    def collator(self) -> Any:
        return self._collator

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return model(**inputs)["loss"]
