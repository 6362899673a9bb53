"""``SFTConfig``: every option of ``fgvlm sft`` (YAML < flags < ``--set``), saved as the run's ``config.yaml``.

The defaults are the reference recipe: full fine-tuning of the language model and projector with the vision tower
frozen, AdamW at lr 2e-5 with a cosine schedule, per-device batch 1, 4,000 steps, the open-qa task, and the model's
own chat template for training and evaluation alike. No torch import here: configs load without it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fgvlm.config import ConfigError, DataConfig
from fgvlm.models.base import POOLINGS, ModelConfig
from fgvlm.prompts.mixcut import MixCutOptions

METHODS = ("full", "lora")
PROMPT_FORMATS = ("chat-template", "lmms-engine")
PARTS = ("vision", "projector", "language")
FREEZE_PRESETS = {"vision": ("vision",), "none": ()}
"""Named freeze settings; any comma-separated list of ``PARTS`` also works (e.g. ``vision,projector``)."""
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
REPORTERS = ("tensorboard", "none", "wandb", "mlflow")
FINAL_WEIGHTS = ("last", "best")
IMAGES = ("plain", "mixcut")
RANK_SCORES = ("mean", "sum")
THINKING = ("off", "on")
RL_LOSSES = ("grpo", "dr-grpo", "dapo")


@dataclasses.dataclass
class LoraOptions:
    """PEFT LoRA on the language model's linear layers (``method: lora``)."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: str | None = None
    """Regex of module names to adapt; None = the family's language-model pattern (never the vision tower)."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ConfigError(f"lora.r and lora.alpha must be >= 1, got {self.r}, {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class TrainOptions:
    """The optimisation recipe, passed to ``transformers.TrainingArguments``."""

    lr: float = 2e-5
    """Peak learning rate (AdamW); the reference recipe: 2e-5."""
    scheduler: str = "cosine"
    """Learning-rate schedule after warmup: cosine, linear, constant, constant_with_warmup."""
    warmup_ratio: float = 0.03
    """Fraction of max_steps spent in linear warmup."""
    per_device_batch_size: int = 1
    """Training samples per process per micro-step (the reference recipe: 1)."""
    grad_accum: int = 1
    """Micro-steps accumulated per optimizer step."""
    max_steps: int = 4000
    """Optimizer steps in total (the reference recipe: 4,000)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 disables it)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30 % more time); useful on GPUs."""
    bf16: bool | None = None
    """bfloat16 mixed precision; None = on when training on a GPU that supports it, off on CPU."""
    seed: int = 0
    """Seeds the data order, dropout, LoRA initialisation and the classify head."""
    eval_every: int = 500
    """Validation accuracy by ``rank`` (or the head, for classify) every N optimizer steps and at the end."""
    eval_limit: int | None = 200
    """Validation images used during training (the first N of the validation split); None = all."""
    save_every: int = 500
    """Write a resumable checkpoint every N steps (and at the end)."""
    save_total_limit: int = 2
    """Resumable checkpoints kept (the newest ones)."""
    log_every: int = 10
    """Write a train_log.jsonl line (loss, lr, grad norm) every N steps."""
    final: str = "last"
    """Which weights become RUN/model: 'last' (the reference recipe) or 'best' (best validation accuracy)."""
    num_workers: int = 0
    """DataLoader worker processes (images are decoded and processed in the collator)."""
    num_threads: int | None = None
    """torch CPU threads (None = torch's default). On a busy or small CPU, 1 thread can be many times faster for
    small models than oversubscribed threads."""

    def __post_init__(self) -> None:
        positive = {
            "per_device_batch_size": self.per_device_batch_size,
            "grad_accum": self.grad_accum,
            "max_steps": self.max_steps,
            "eval_every": self.eval_every,
            "save_every": self.save_every,
            "log_every": self.log_every,
            "save_total_limit": self.save_total_limit,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.final not in FINAL_WEIGHTS:
            raise ConfigError(f"train.final must be one of {', '.join(FINAL_WEIGHTS)}, got {self.final!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"train.num_threads must be >= 1 (or null), got {self.num_threads}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"train.eval_limit must be >= 1 (or null for all), got {self.eval_limit}")


@dataclasses.dataclass
class ClassifyOptions:
    """``objective: classify``: a linear head on pooled hidden states, trained jointly with the model."""

    pooling: str = "mean"
    """mean (all real tokens; the heads' default), image-mean or last, as ``fgvlm head train``."""
    layer: int = -1
    """Hidden-state layer pooled (-1 = last)."""
    dropout: float = 0.1
    """Dropout on the pooled features before the linear layer."""
    head_lr: float | None = None
    """Learning rate of the head; None = max(train.lr, 1e-3) (a fresh linear layer needs a larger step than the
    pretrained model: 1e-3 with the reference 2e-5)."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"classify.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classify.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class RankOptions:
    """``objective: rank``: listwise training on the class-name scores that rank evaluation uses.

    Per image, loss = -log softmax(s / temperature)[y] over the candidate answers (every class name for open-qa, the
    options for closed-qa, yes/no for closed-negative-qa), s = each candidate's log-likelihood as the answer, the
    image+prompt prefix run once with its KV cache shared by all candidates packed in one row (as ``fgvlm eval
    --mode rank`` scores them). With all 102 Flowers102 names a step of Qwen3-VL-4B at batch 1 is one ~360-token
    prefix plus one ~500-token candidate row, forward and backward: it fits one 80 GB GPU without checkpointing.
    """

    negatives: int | str = "all"
    """'all' (every other candidate) or K: K negatives per image (uniformly drawn, or the hardest with
    hard_negatives) plus the true answer(s); fewer candidates make a step cheaper when there are hundreds."""
    hard_negatives: bool = False
    """With negatives K: the K wrong candidates the current model scores highest (one extra gradient-free pass over
    all candidates per image) instead of K drawn at random."""
    temperature: float = 1.0
    """Softmax temperature over the scores (below 1 sharpens: the loss concentrates on the closest rivals)."""
    score: str = "mean"
    """mean (default): each candidate's per-token log-probability, the score rank evaluation picks by default, so
    training optimises what evaluation measures; sum: the summed log-probability (softmax over sums is the model's
    own answer distribution renormalised over the candidates). Measured on tiny random models
    (scripts/sft_evidence.py, 3,000 steps, lr 1e-3-3e-3): mean learned on every family tried, sum collapsed to one
    class on two of three (its gradients are ~n_tokens times larger at the same learning rate)."""

    def __post_init__(self) -> None:
        if self.negatives != "all" and not (isinstance(self.negatives, int) and self.negatives >= 1):
            raise ConfigError(f"rank.negatives must be 'all' or an integer >= 1, got {self.negatives!r}")
        if not self.temperature > 0:
            raise ConfigError(f"rank.temperature must be > 0, got {self.temperature!r}")
        if self.score not in RANK_SCORES:
            raise ConfigError(f"rank.score must be one of {', '.join(RANK_SCORES)}, got {self.score!r}")


@dataclasses.dataclass
class RLOptions:
    """``objective: rl`` (``fgvlm rl``): GRPO on sampled answers rewarded by fgvlm's answer matcher.

    Per training image, ``group_size`` answers are sampled from the current model (one prefill of image + prompt,
    its KV cache shared by the group); each is rewarded (``reward``: 1 when the matcher maps it to the true class);
    the advantage is the reward minus the group's mean (divided by the group's std for grpo and dapo); the loss is
    the clipped policy-gradient surrogate per answer token, plus ``kl`` times the KL to the reference model. Defaults
    follow the published recipes: Visual-RFT / CLS-RL (GRPO, G = 8, no thinking for CLS-RL's no-thinking variant,
    exact-match reward), DAPO's clip range (0.2 / 0.28, as Fine-R1), and beta = 0 (recent recipes drop the KL).
    """

    group_size: int = 8
    """Answers sampled per image (G); Visual-RFT: 8 (4 for 7B models, to fit)."""
    temperature: float = 1.0
    """Sampling temperature (TRL's and R1-V's default). From a weak warm start, 1.0 finds the right name rarely
    (~2 % reward measured on a tiny model at 24 % greedy accuracy): lower it (0.7) or warm-start with SFT first."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most probable tokens up to this mass (1.0: all)."""
    max_new_tokens: int | None = None
    """Longest sampled answer in tokens; None = 32 with thinking off, 512 with thinking on. An answer cut off here
    gets reward 0 (or the policy learns to ramble until a lenient matcher finds a name)."""
    thinking: str | bool = "off"
    """off: the question as evaluation asks it, the answer straight away (CLS-RL's no-thinking RL); on: the prompt
    asks for the reasoning in <think>...</think> then the answer; the reasoning is stripped before matching and a
    format reward (``format_reward``) is added when the reply has that shape (Visual-RFT)."""
    format_reward: float = 1.0
    """thinking on: reward added for a reply of the form <think>...</think> answer (Visual-RFT's format reward)."""
    reward: str = "match"
    """A name in ``fgvlm.sft.objectives.rewards.REWARDS``: match (the strict matcher: canonical names, the option
    key or name for closed-qa), lenient (aliases and the conservative fuzzy fallback: botanical synonyms count)."""
    kl: float = 0.0
    """beta, the KL coefficient to the reference model (the model with LoRA adapters disabled); 0 as in DAPO and
    Dr. GRPO. Needs method lora with the projector frozen (no second copy of the model is kept)."""
    clip_low: float = 0.2
    """Lower clip of the probability ratio (1 - clip_low)."""
    clip_high: float = 0.28
    """Upper clip of the probability ratio (1 + clip_high); DAPO's clip-higher 0.28 (GRPO: 0.2)."""
    updates_per_batch: int = 1
    """Optimizer steps per batch of rollouts (mu); above 1 the ratio to the sampling policy and the clip matter, and
    the batches drawn in between are skipped. TRL's default: 1."""
    loss: str = "grpo"
    """grpo (token mean per answer, then mean over answers), dr-grpo (no std normalisation of the advantage, token
    sum / max_new_tokens per answer), dapo (token-level: sum over every answer token / their number)."""
    skip_equal_groups: bool = False
    """Leave groups whose rewards are all equal (no signal: advantage 0) out of the loss's normaliser (DAPO)."""
    log_rollouts_every: int = 10
    """Write every rollout of every N-th step to RUN/rollouts.jsonl (text, reward, matched class)."""

    @property
    def answer_tokens(self) -> int:
        """``max_new_tokens`` with its default for the thinking setting."""
        return self.max_new_tokens or (512 if self.thinking == "on" else 32)

    def __post_init__(self) -> None:
        from fgvlm.sft.objectives.rewards import REWARDS

        if isinstance(self.thinking, bool):  # YAML reads a bare off / on as a boolean
            self.thinking = "on" if self.thinking else "off"
        for key, value, allowed in (
            ("thinking", self.thinking, THINKING),
            ("loss", self.loss, RL_LOSSES),
            ("reward", self.reward, tuple(REWARDS)),
        ):
            if value not in allowed:
                raise ConfigError(f"rl.{key} must be one of {', '.join(allowed)}, got {value!r}")
        for key, value in (
            ("group_size", self.group_size),
            ("updates_per_batch", self.updates_per_batch),
            ("log_rollouts_every", self.log_rollouts_every),
        ):
            if value < 1 or (key == "group_size" and value < 2):
                raise ConfigError(f"rl.{key} must be >= {2 if key == 'group_size' else 1}, got {value}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"rl.temperature must be > 0 and rl.top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"rl.max_new_tokens must be >= 1 (or null), got {self.max_new_tokens}")
        if self.kl < 0 or not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ConfigError(
                f"rl.kl, rl.clip_low, rl.clip_high out of range: {self.kl}, {self.clip_low}, {self.clip_high}"
            )


@dataclasses.dataclass
class SFTConfig:
    """Supervised fine-tuning of a VLM on instruction data built from a classification dataset (``fgvlm sft``)."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(name="qwen3-vl-4b"))
    """The model to fine-tune (registry name, hub id or local folder)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Dataset, root and protocol (the reference study: flowers102, protocol swapped)."""
    task: str = "open-qa"
    """Instruction task: open-qa, closed-qa, closed-negative-qa; any of them with the suffix -mixcut asks its
    question about MixUp/CutMix images (open-qa-mixcut: the reference study's MixUp/CutMix SFT)."""
    mix: dict[str, float] | None = None
    """A mixture of tasks instead of one, e.g. {open-qa: 0.5, closed-qa: 0.3, closed-negative-qa: 0.2}: each image
    gets one task drawn with these weights (seeded per image)."""
    task_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Options per prompt task, as ``fgvlm eval``'s task_options, e.g. {closed-qa: {num_options: 10}}
    (a -mixcut task asks its base task's question with the base task's options)."""
    images: str = "plain"
    """plain, or mixcut: every task of the run on MixUp/CutMix images (the same as adding -mixcut to each)."""
    method: str = "full"
    """full (every trainable part updated) or lora (PEFT adapters on the language model)."""
    lora: LoraOptions = dataclasses.field(default_factory=LoraOptions)
    freeze: str = "vision"
    """Parts kept frozen: 'vision' (default: the vision tower), 'none' (everything trains: the reference
    framework's setup), or a comma-separated list of vision, projector, language."""
    train: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    mixcut: MixCutOptions = dataclasses.field(default_factory=MixCutOptions)
    """How mixed images are made and trained (tasks with -mixcut, or images: mixcut)."""
    packing: bool = False
    """Padding-free packing of the samples of a batch (Qwen families; others pad)."""
    objective: str = "generate"
    """What the model is trained on (``fgvlm.sft.objectives``): generate (teacher-forced answers, loss on the
    answer tokens), classify (linear head on pooled features + cross-entropy), rank (listwise: the class-name
    scores of rank evaluation, softmax cross-entropy over the candidates), rl (GRPO on sampled answers rewarded by
    the answer matcher: ``fgvlm rl``)."""
    classify: ClassifyOptions = dataclasses.field(default_factory=ClassifyOptions)
    rank: RankOptions = dataclasses.field(default_factory=RankOptions)
    rl: RLOptions = dataclasses.field(default_factory=RLOptions)
    prompt_format: str = "chat-template"
    """chat-template: the model's own template; lmms-engine: the reference framework's (system turn, newline after
    the image). The format is saved with RUN/model, so evaluation uses the same one."""
    max_length: int = 4096
    """Longest training sequence in tokens (image tokens included); a longer one is refused before training."""
    limit: int | None = None
    """Use only the first N images of each split (quick checks)."""
    train_split: str = "train"
    val_split: str | None = "val"
    """Split for validation during training (skipped when the protocol has none)."""
    eval_split: str = "test"
    """Split of the final evaluation written to metrics.json / predictions.jsonl."""
    eval_limit: int | None = None
    """Images of eval_split in the final evaluation (None = all)."""
    report_to: str = "tensorboard"
    """Trainer loggers: tensorboard (RUN/tb), none, or another transformers integration."""
    seed: int = 0
    """Seed of the instruction data (prompts, mixing pairs); train.seed seeds the optimisation."""
    resume: bool = True
    """Continue from the last checkpoint in the run directory (off: start over)."""

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("method", self.method, METHODS),
            ("prompt_format", self.prompt_format, PROMPT_FORMATS),
            ("report_to", self.report_to, REPORTERS),
            ("images", self.images, IMAGES),
        ):
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        frozen_parts(self.freeze)
        from fgvlm.prompts.instructions import check_tasks

        check_tasks(self.tasks)
        from fgvlm.sft.objectives import OBJECTIVES, objective_class

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        objective_class(self.objective).check_config(self)
        if self.max_length < 16:
            raise ConfigError(f"max_length must be >= 16, got {self.max_length}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or unset), got {self.limit}")

    @property
    def tasks(self) -> dict[str, float]:
        """Task -> weight of the instruction data (one task with weight 1 unless ``mix`` is set); with
        ``images: mixcut`` every task is its -mixcut form."""
        from fgvlm.prompts.instructions import with_mixed_images

        tasks = dict(self.mix) if self.mix else {self.task: 1.0}
        if self.images == "mixcut":
            tasks = {with_mixed_images(name): weight for name, weight in tasks.items()}
        return tasks

    @property
    def mixed_images(self) -> bool:
        """Whether any training task uses MixUp/CutMix images (then ``mixcut.loss`` applies and is recorded)."""
        from fgvlm.prompts.instructions import split_task

        return any(split_task(name)[1] for name in self.tasks)

    @property
    def eval_task(self) -> str:
        """The prompt task of validation and the final evaluation: the training task on plain images; open-qa
        for a mix."""
        from fgvlm.prompts.instructions import split_task

        return "open-qa" if self.mix else split_task(self.task)[0]


def frozen_parts(freeze: str) -> tuple[str, ...]:
    """``freeze`` (a preset or a comma-separated list of parts) -> the frozen parts; unknown names raise."""
    if freeze in FREEZE_PRESETS:
        return FREEZE_PRESETS[freeze]
    parts = tuple(p.strip() for p in freeze.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError(
            f"freeze: unknown part(s) {unknown or [freeze]}; use {', '.join(FREEZE_PRESETS)} or a comma-separated "
            f"list of {', '.join(PARTS)}"
        )
    return parts


@dataclasses.dataclass
class RLTrainOptions(TrainOptions):
    """``TrainOptions`` with the defaults of RL after SFT: lr 1e-5 constant, no warmup, 200 steps (Visual-RFT's ~200
    steps on a few hundred images), validation and checkpoints every 50 steps, a log line every step."""

    lr: float = 1e-5
    scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_steps: int = 200
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 1


@dataclasses.dataclass
class RLConfig(SFTConfig):
    """``fgvlm rl``: an ``SFTConfig`` with objective rl, method lora and ``RLTrainOptions`` (any ``train:`` key a
    config leaves out keeps the RL default)."""

    objective: str = "rl"
    method: str = "lora"
    train: RLTrainOptions = dataclasses.field(default_factory=RLTrainOptions)
