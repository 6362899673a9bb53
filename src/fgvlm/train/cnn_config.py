"""``CNNTrainConfig`` (every option of ``fgvlm cnn train``, with reference-like defaults) and ``CNNEvalConfig``.

The reference study reports ResNet-50 at 93.24 % on Flowers102 (90.59 % with MixUp/CutMix), ImageNet-pretrained,
trained on "6,149 training, 1,020 test" images: that is our ``swapped`` protocol (train = tstid, test = trnid).
It does not publish its hyper-parameters; the defaults here are the standard fine-tuning recipe for that setting
(224 px RandomResizedCrop + flip, SGD with Nesterov momentum, cosine schedule with one warmup epoch, label smoothing
0.1, weight decay 1e-4), and the shipped YAMLs in ``configs/cnn/`` spell them out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fgvlm.config import ConfigError, DataConfig
from fgvlm.train.optim import OPTIMIZERS
from fgvlm.train.trackers import parse_report_to

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NO_WEIGHTS = ("none", "false", "")
HUB_WEIGHTS = ("hub", "true")


@dataclasses.dataclass
class CNNTrainConfig:
    """Options of ``fgvlm cnn train`` (YAML < flags < ``--set``); saved as ``config.yaml`` in the run directory."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Dataset, root and split protocol (the reference used flowers102 with protocol ``swapped``)."""
    arch: str = "resnet50"
    """Any timm architecture name (``timm.list_models()``); ``test_resnet`` (0.4 M params) for CPU tests."""
    pretrained: bool | str = False
    """Initial weights: true/'hub' (timm's default ImageNet weights from the Hugging Face hub, as the reference),
    a local ``.safetensors`` path (a head of another class count is replaced), or false/'none' (random init)."""
    image_size: int | None = None
    """Train/eval crop size in pixels; None = the model's own (224 for resnet50)."""
    epochs: int = 30
    """Passes over the train split."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (also sets the schedule length); None = epochs decide."""
    batch_size: int = 32
    """Images per optimizer step per process (DDP: the global batch is batch_size x processes)."""
    eval_batch_size: int | None = None
    """Images per evaluation batch; None = 2 x batch_size."""
    optimizer: str = "sgd"
    """sgd (Nesterov momentum) or adamw."""
    lr: float = 0.01
    """Peak learning rate after warmup (0.01 for SGD at batch 32; ~1e-3 for AdamW)."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """Weight decay (not applied to biases and norm layers)."""
    warmup_epochs: float = 1.0
    """Linear warmup length in epochs (fractions allowed), then cosine decay."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy (with MixUp/CutMix: of the mixed soft targets)."""
    crop_scale: list[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    """RandomResizedCrop area range."""
    hflip: float = 0.5
    """Horizontal flip probability."""
    color_jitter: float = 0.0
    """Colour jitter strength (0 = off; colour is a class cue for flowers)."""
    randaugment: str | None = None
    """timm RandAugment spec, e.g. 'rand-m9-mstd0.5-inc1'; None = off."""
    mixup: bool = False
    """MixUp on each batch (timm ``Mixup``; needs an even batch_size)."""
    cutmix: bool = False
    """CutMix on each batch; with both on, each batch picks one (see mix_switch_prob)."""
    mixup_alpha: float = 0.8
    """MixUp Beta(alpha, alpha) parameter."""
    cutmix_alpha: float = 1.0
    """CutMix Beta(alpha, alpha) parameter."""
    mix_prob: float = 1.0
    """Probability that a batch is mixed at all."""
    mix_switch_prob: float = 0.5
    """With both on: probability of CutMix instead of MixUp for a batch."""
    ema: bool = False
    """Keep an exponential moving average of the weights (timm ModelEmaV3); it is what gets evaluated and saved."""
    ema_decay: float = 0.9998
    """EMA decay per step."""
    grad_clip_norm: float | None = None
    """Clip the gradient norm to this value; None = no clipping."""
    precision: str = "auto"
    """auto (bf16 autocast on GPU, fp32 on CPU), fp32, bf16 or fp16 (GPU only)."""
    channels_last: bool = True
    """NHWC memory layout: faster convolutions on CPU and on tensor-core GPUs."""
    num_threads: int | None = None
    """torch CPU threads for this run (restored afterwards); None = torch's default. On a busy machine 1 thread
    can be many times faster than several that wait for each other."""
    num_workers: int = 2
    """DataLoader worker processes (0 = load in the training process)."""
    image_cache: bool = True
    """Decode every image once and keep it pre-resized in memory (see ``cache_scale``)."""
    cache_dir: str | None = None
    """Also store the pre-resized images in this folder, keyed by dataset, split, ids and size."""
    cache_scale: float = 1.15
    """Cached shorter side = this x image_size (at least the eval resize), so crops rarely upsample."""
    val_split: str | None = "val"
    """Split evaluated after every epoch (selects the ``best`` checkpoint); skipped when the protocol has none."""
    eval_split: str = "test"
    """Split of the final metrics.json / predictions.jsonl (from the best checkpoint)."""
    topk: int = 5
    """Ranked labels kept per image in predictions.jsonl."""
    limit: int | None = None
    """Use only the first N images of every split (quick checks)."""
    seed: int = 0
    """Seeds weights, data order and augmentation; the same seed gives the same run."""
    device: str | None = None
    """cpu, cuda, cuda:1 ...; None = the local GPU when there is one."""
    log_every_steps: int = 10
    """TensorBoard train loss / lr interval."""
    progress: bool = True
    """Show progress bars."""
    report_to: str = "tensorboard"
    """Trackers, comma-separated: tensorboard (tb/, always written), wandb, mlflow (extras; see train/trackers.py)."""

    def __post_init__(self) -> None:
        self.pretrained = normalise_pretrained(self.pretrained)
        parse_report_to(self.report_to)
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (
                len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
                f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}",
            ),
            (self.image_size is None or self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}"),
            (self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.cache_scale >= 1.0, f"cache_scale must be >= 1, got {self.cache_scale}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.topk >= 1, f"topk must be >= 1, got {self.topk}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1 (or unset), got {self.limit}"),
            (
                not (self.mixup or self.cutmix) or self.batch_size % 2 == 0,
                f"MixUp/CutMix need an even batch_size, got {self.batch_size}",
            ),
            (
                0.0 <= self.mix_prob <= 1.0 and 0.0 <= self.mix_switch_prob <= 1.0,
                "mix_prob and mix_switch_prob must be in [0, 1]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def pretrained_label(self) -> str:
        """'hub', 'none' or the local file path (for logs and meta.json)."""
        return "hub" if self.pretrained is True else "none" if self.pretrained is False else str(self.pretrained)


@dataclasses.dataclass
class CNNEvalConfig:
    """Options of ``fgvlm cnn eval``: a trained run's checkpoint evaluated on one split of its own dataset."""

    run: str = ""
    """The ``fgvlm cnn train`` run directory (its config.yaml rebuilds data and model)."""
    split: str = "test"
    """Split to evaluate."""
    checkpoint: str = "best"
    """best (highest validation accuracy; falls back to last without a validation split) or last."""
    limit: int | None = None
    """Evaluate only the first N images of the split."""

    def __post_init__(self) -> None:
        if not self.run:
            raise ConfigError("run: the `fgvlm cnn train` run directory to evaluate is required (--run)")
        if self.checkpoint not in ("best", "last"):
            raise ConfigError(f"checkpoint must be 'best' or 'last', got {self.checkpoint!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or unset), got {self.limit}")


def normalise_pretrained(value: bool | str) -> bool | str:
    """true/'hub' -> True, false/'none' -> False, anything else must be a .safetensors path."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"pretrained must be true, false, 'hub', 'none' or a .safetensors path, got {value!r}")
    if value.strip().lower() in HUB_WEIGHTS:
        return True
    if value.strip().lower() in NO_WEIGHTS:
        return False
    if Path(value).suffix != ".safetensors":
        raise ConfigError(
            f"pretrained: {value!r} is not 'hub', 'none' or a .safetensors file (pickle checkpoints "
            "such as .pt/.pth/.bin are refused: loading them can run code)"
        )
    return value
