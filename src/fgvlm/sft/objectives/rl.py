"""``objective: rl`` (``fgvlm rl``): GRPO on sampled answers, rewarded by fgvlm's answer matcher.

Each step samples ``rl.group_size`` answers per training image from the current model (one prefill per image, its
KV cache shared by the group: ``fgvlm.models.sampling``), rewards each with ``rl.reward`` (``rewards.REWARDS``:
strict or lenient matching against the true class), and trains on the clipped policy-gradient loss of the group
advantages (``rl_model.RLModel``). It is built on the shared fine-tuning trainer (``SFTTrainer``), not on TRL's
``GRPOTrainer``: TRL is not a dependency here, and the shared trainer gives this objective the run contract
(checkpoints, resume, DDP, best/last, ``RUN/model``, ``done.json``) every other objective has.

Validation: the eval task ranked (the shared default) and answered by greedy generation (``val_gen_accuracy``)
every ``train.eval_every`` steps. Final evaluation: rank mode (``eval-<split>/``, the shared default) and
generate mode (``eval-<split>-generate/``: ``generate_accuracy`` in metrics.json). Step numbers (reward mean/std,
share of zero-variance groups, rollout accuracy, answer length, truncated share, KL, clip fraction, entropy) go
to ``train_log.jsonl`` and TensorBoard; every rollout of sampled steps to ``RUN/rollouts.jsonl``.

Families: every decoder-only family (Qwen3-VL, Qwen2.5-VL, Idefics2, SmolVLM, InstructBLIP). InstructBLIP-Flan-T5
is refused: its answer is decoded by a T5 decoder, which the padded decoder-only training batch does not build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from fgvlm.config import ConfigError
from fgvlm.sft.objectives.base import VALIDATION_BATCH, ModuleObjective

if TYPE_CHECKING:
    from fgvlm.models.base import ModelConfig
    from fgvlm.sft.config import SFTConfig

ROLLOUTS = "rollouts.jsonl"
STEP_METRICS = (
    "reward_mean",
    "reward_std",
    "zero_variance_groups",
    "rollout_accuracy",
    "answer_length",
    "truncated",
    "kl",
    "clip_fraction",
    "entropy",
)


class RLObjective(ModuleObjective):
    name = "rl"
    mixed_images = False
    log_keys: ClassVar[tuple[str, ...]] = (*STEP_METRICS, "val_gen_accuracy")

    @classmethod
    def check_config(cls, cfg: SFTConfig) -> None:
        from fgvlm.sft.config import frozen_parts

        super().check_config(cfg)
        rl = cfg.rl
        if rl.kl > 0 and (cfg.method != "lora" or "projector" not in frozen_parts(cfg.freeze)):
            raise ConfigError(
                "rl.kl > 0 takes the reference model as the model with its LoRA adapters disabled: use method lora "
                "with freeze vision,projector (a fully trained part would not be reverted)"
            )
        if rl.updates_per_batch > 1 and cfg.train.grad_accum > 1:
            raise ConfigError("rl.updates_per_batch > 1 reuses one batch of rollouts: set train.grad_accum 1")
        if cfg.train.save_every % rl.updates_per_batch:
            raise ConfigError(
                f"train.save_every ({cfg.train.save_every}) must be a multiple of rl.updates_per_batch "
                f"({rl.updates_per_batch}): a checkpoint inside a cycle would lose its rollouts"
            )

    def prepare(self) -> None:
        from fgvlm.distributed import is_main_process
        from fgvlm.eval.scoring import TaskScorer
        from fgvlm.models.families import get_family
        from fgvlm.prompts import object_word
        from fgvlm.prompts.instructions import split_task
        from fgvlm.sft.objectives.rewards import get_reward
        from fgvlm.sft.objectives.rl_model import RLCollator, RLModel, judge_rollout

        setup, cfg = self.setup, self.cfg
        if get_family(setup.family).encoder_decoder:
            raise ConfigError(
                f"objective rl supports decoder-only families; {setup.family} decodes its answer with an "
                "encoder-decoder language model (use objective rank or generate)"
            )
        self.scorers = {}
        for task in {split_task(name)[0] for name in cfg.tasks} | {cfg.eval_task}:
            options = {"object": object_word(cfg.data.dataset), **cfg.task_options.get(task, {})}
            self.scorers[task] = TaskScorer(task, setup.dataset, setup.family, options, cfg.seed)
        thinking = cfg.rl.thinking == "on"
        self._collator = RLCollator(self.scorers, setup.backend, thinking)
        judge = judge_rollout(
            setup.backend,
            lambda record: self.scorers[split_task(record.task)[0]],
            thinking,
            cfg.rl.format_reward,
            get_reward(cfg.rl.reward),
        )
        log = setup.run / ROLLOUTS if is_main_process() else None
        self.model = RLModel(setup.model, setup.backend, cfg.rl, judge, cfg.train.seed, log)

    def callbacks(self) -> list[Any]:
        from fgvlm.sft.objectives.rl_callback import RLCallback

        return [RLCallback(self.model, self.setup.run / ROLLOUTS)]

    def validate(self, model: Any) -> dict[str, Any]:
        """The shared rank validation plus ``val_gen_accuracy``: greedy answers to the training prompt (with the
        thinking instruction when on), read by the strict matcher."""
        numbers = super().validate(model)
        setup = self.setup
        if not setup.val_records:
            return numbers
        scorer = self.scorers[self.cfg.eval_task]
        split = setup.dataset.split(self.cfg.val_split)
        correct = 0
        for start in range(0, len(setup.val_records), VALIDATION_BATCH):
            chunk = [split[i] for i in range(start, min(start + VALIDATION_BATCH, len(setup.val_records)))]
            prompts = [scorer.prompt(record) for record in chunk]
            suffix = self._collator.prompt_suffix
            answers = setup.backend.generate(
                [record.image for record in chunk], [p.text + suffix for p in prompts], self.cfg.rl.answer_tokens
            )
            for record, prompt, answer in zip(chunk, prompts, answers, strict=True):
                target = scorer.kind.base_record(record.id, record.label, prompt)["label"]
                correct += scorer.parse(answer, prompt)[0] == target
        return {**numbers, "val_gen_accuracy": correct / len(setup.val_records)}

    def evaluate(
        self, backend: Any, model_cfg: ModelConfig, best: dict[str, Any] | None, is_main: bool
    ) -> dict[str, Any]:
        """Rank mode (the shared default, in ``eval-<split>/``) and generate mode (``eval-<split>-generate/``)."""
        from fgvlm.eval.zeroshot import evaluate

        metrics = super().evaluate(backend, model_cfg, best, is_main)
        cfg = self.cfg
        eval_cfg = self.eval_config(model_cfg, "generate", max_new_tokens=cfg.rl.answer_tokens)
        generated = evaluate(
            eval_cfg, self.setup.run / f"eval-{cfg.eval_split}-generate", resume=False, backend=backend
        )
        extra = {"generate_accuracy": generated["accuracy"], "generate_accuracy_lenient": generated["accuracy_lenient"]}
        return {**metrics, **extra} if is_main else metrics

    def results_fields(self) -> dict[str, Any]:
        from fgvlm.config import to_dict

        return {**super().results_fields(), "rl": to_dict(self.cfg.rl)}
