"""``HeadTrainConfig`` and ``HeadEvalConfig``: every option of ``fgvlm head train|eval``, filled by
``fgvlm.config.resolve_config``."""

from __future__ import annotations

import dataclasses
from typing import Any

from fgvlm.config import ConfigError, DataConfig
from fgvlm.models.base import POOLINGS, ModelConfig

HEAD_TYPES = ("linear", "mlp")


def check_pooling(pooling: str, where: str) -> None:
    """Reject poolings the backends do not offer; 'first' is refused on purpose (a causal LM's first token is blind)."""
    if pooling not in POOLINGS:
        extra = " ('first' is not offered: in a causal decoder the first token has not seen the image)"
        raise ConfigError(f"{where}: unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}" + extra)


@dataclasses.dataclass
class SweepConfig:
    """The grid of ``--sweep``: every pooling x layer x learning rate, scored on the validation split."""

    poolings: list[str] = dataclasses.field(default_factory=lambda: list(POOLINGS))
    """Poolings to try (each needs one feature extraction per layer; the cache makes reruns free)."""
    layers: list[int] = dataclasses.field(default_factory=lambda: [-1])
    """Hidden-state layers to try (negative counts from the end; -1 = last layer)."""
    lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    """Learning rates to try (head training only: no re-extraction)."""
    steps: int | None = None
    """Head steps per sweep point; None = the main ``steps``."""

    def __post_init__(self) -> None:
        for pooling in self.poolings:
            check_pooling(pooling, "sweep.poolings")
        if not (self.poolings and self.layers and self.lrs):
            raise ConfigError("sweep: poolings, layers and lrs must each list at least one value")


@dataclasses.dataclass
class HeadRecipe:
    """How the head is built and optimised: the part of ``HeadTrainConfig`` that a sweep point may vary."""

    head: str = "linear"
    """'linear' (Dropout + Linear, the reference head) or 'mlp' (Dropout + Linear + GELU + Dropout + Linear)."""
    hidden_dim: int = 512
    """Hidden width of the 'mlp' head."""
    dropout: float = 0.1
    """Dropout on the features (and on the MLP's hidden layer)."""
    standardize: bool = False
    """Standardise features with the train split's mean/std (saved inside the head). Cached mode only."""
    steps: int = 2000
    """Optimiser steps (the reference recipe: 2,000)."""
    batch_size: int = 32
    """Features per step; batches walk through seeded permutations of the train split."""
    lr: float = 1e-4
    """AdamW peak learning rate (the reference recipe: 1e-4)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warmup steps before the cosine decay to zero."""
    eval_every: int = 200
    """Evaluate on the validation split every N steps (and at the last step); the best step's head is kept."""
    log_every: int = 50
    """Write a ``train_log.jsonl`` line every N steps."""
    seed: int = 0
    """Seeds the head's initialisation, the batch order and dropout (same seed -> same head)."""

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ConfigError(f"head: unknown head type {self.head!r}; choose one of {', '.join(HEAD_TYPES)}")
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "log_every": self.log_every,
            "hidden_dim": self.hidden_dim,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            raise ConfigError(f"warmup_steps must be in [0, steps), got {self.warmup_steps} (steps={self.steps})")

    @classmethod
    def from_config(cls, cfg: HeadRecipe, **changes: Any) -> HeadRecipe:
        """The recipe part of a ``HeadTrainConfig`` (or another recipe), with ``changes`` applied."""
        values = {field.name: getattr(cfg, field.name) for field in dataclasses.fields(cls)}
        return cls(**{**values, **changes})


@dataclasses.dataclass
class HeadTrainConfig(HeadRecipe):
    """A classification head (linear probe or small MLP) on frozen VLM features, trained on a feature cache.

    Features are extracted once per (model fingerprint, dataset split and ids, prompt, pooling, layer,
    preprocessing) and cached as safetensors, so the head's 2,000 steps never run the VLM again. ``online: true``
    runs the frozen VLM on every batch instead (the reference study's way) for comparison.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Dataset, root and protocol; the head trains on ``train_split`` and selects its best step on ``val_split``."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """The frozen backbone: a registry name, hub id, or a local model directory (e.g. an SFT run's ``model/``)."""
    prompt: str | None = None
    """Question shown with the image when extracting features; part of the cache key. None: the dataset's own
    (``head_prompt``: "What is the name of the flower in this image?" on flowers102, "... bird species ..." on
    cub200)."""
    pooling: str = "mean"
    """'mean' (default: all real tokens; published probes on mean-pooled LMM features reach ~96 % on Flowers102),
    'image-mean' (image tokens only) or 'last' (last token). Never the first token of a causal decoder: it has
    seen no image (~1 %)."""
    layer: int = -1
    """Hidden-state layer to pool (negative counts from the end; -1 = the last, already final-normed)."""
    train_split: str = "train"
    """Split the head is trained on."""
    val_split: str | None = "val"
    """Split used to select the best step (skipped when the protocol has no such split)."""
    eval_split: str = "test"
    """Split reported in ``metrics.json`` / ``predictions.jsonl``."""
    limit: int | None = None
    """Use only the first N images of every split (quick checks; a limited split is its own cache entry)."""
    embed_batch_size: int = 16
    """Images per VLM forward during feature extraction."""
    cache_dir: str | None = None
    """Feature cache root; None = ``$FGVLM_CACHE`` or ``~/.cache/fgvlm`` (entries under ``features/<key>/``)."""
    online: bool = False
    """Run the frozen VLM on every training batch instead of reading cached features (slow; for comparison)."""
    sweep: bool = False
    """Try every point of ``sweep_grid`` first, then train the final head with the best one."""
    sweep_grid: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    """The pooling x layer x learning-rate grid of ``sweep``."""

    def __post_init__(self) -> None:
        from fgvlm.runs import check_limit

        super().__post_init__()
        check_pooling(self.pooling, "pooling")
        check_limit(self.limit)
        if self.embed_batch_size < 1:
            raise ConfigError(f"embed_batch_size must be >= 1, got {self.embed_batch_size}")
        if self.online and self.standardize:
            raise ConfigError(
                "online: true cannot standardise features (the train mean/std would need a full extraction pass "
                "first); set standardize: false or use the cached mode"
            )
        if self.online and self.sweep:
            raise ConfigError("online: true and sweep: true together would re-run the VLM for every sweep point")


@dataclasses.dataclass
class HeadEvalConfig:
    """``fgvlm head eval``: a trained head (its run directory) evaluated on one split of its own dataset."""

    head_run: str = ""
    """The ``fgvlm head train`` run directory: its config.yaml gives dataset and backbone, head.json the head."""
    split: str = "test"
    """Split to evaluate (train, val, test)."""
    limit: int | None = None
    """Evaluate only the first N images of the split."""

    def __post_init__(self) -> None:
        from fgvlm.runs import check_limit

        if not self.head_run:
            raise ConfigError("head_run: the `fgvlm head train` run directory to evaluate is required (--run)")
        check_limit(self.limit)
