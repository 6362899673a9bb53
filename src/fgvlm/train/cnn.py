"""CNN baselines: fine-tune any timm classifier (ResNet-50 by default) on a dataset, with or without MixUp/CutMix.

``train_cnn(config, out)`` builds the model, the cached data and the loss, runs ``fgvlm.train.loop.TrainLoop`` and
writes the shared result files (metrics.json, predictions.jsonl, confusion.json) for the evaluation split from the
best checkpoint; ``evaluate_run(run_dir)`` re-evaluates a finished run on any split and checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgvlm.config import ConfigError, config_differences, load_yaml, resolve_config, to_dict
from fgvlm.distributed import ProcessGroup
from fgvlm.runs import RunDir, write_json
from fgvlm.train.classifier import create_classifier, data_config, eval_resize, predict_probs, topk_metrics
from fgvlm.train.cnn_config import CNNTrainConfig
from fgvlm.train.distributed import replica_checksums
from fgvlm.train.images import ImageClassificationData, cache_split, train_loader
from fgvlm.train.loop import PRECISIONS, LoopSettings, TrainLoop
from fgvlm.train.runtime import seed_everything, torch_threads
from fgvlm.train.trackers import open_trackers

__all__ = ["CNNTrainConfig", "evaluate_run", "train_cnn"]


@dataclass
class CNNSetup:
    """What a config builds before training or evaluation: data, model, transforms, device."""

    cfg: CNNTrainConfig
    dataset: Any
    model: torch.nn.Module
    source: dict[str, Any]
    preprocessing: dict[str, Any]
    train_transform: Any
    eval_transform: Any
    shorter_side: int
    device: torch.device
    precision: str
    dist: ProcessGroup

    def split_data(self, name: str, train: bool = False) -> ImageClassificationData:
        """A split as (transformed image, label) pairs, decoded once into the pre-resized cache when enabled."""
        cfg, split = self.cfg, self.dataset.split(name)
        show = cfg.progress and self.dist.is_main
        images = (
            cache_split(split, self.shorter_side, cfg.cache_dir, max(cfg.num_workers, 1), show)
            if cfg.image_cache
            else split
        )
        return ImageClassificationData(images, split.labels, self.train_transform if train else self.eval_transform)

    def autocast(self) -> Any:
        dtype = PRECISIONS[self.precision]
        return torch.autocast(device_type=self.device.type, dtype=dtype) if dtype is not None else None

    def predict(self, module: torch.nn.Module, data: ImageClassificationData) -> np.ndarray:
        return predict_probs(
            module,
            data,
            batch_size=self.cfg.eval_batch_size or 2 * self.cfg.batch_size,
            device=self.device,
            num_workers=self.cfg.num_workers,
            channels_last=self.cfg.channels_last,
            autocast=self.autocast(),
            dist=self.dist,
        )


def select_device(cfg: CNNTrainConfig, dist: ProcessGroup) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")


def select_precision(cfg: CNNTrainConfig, device: torch.device) -> str:
    """auto: bf16 autocast on a GPU that supports it (else fp16), fp32 on CPU."""
    if cfg.precision != "auto":
        if cfg.precision == "fp16" and device.type != "cuda":
            raise ConfigError("precision: fp16 autocast needs a GPU; use fp32 or bf16 on CPU")
        return cfg.precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def build_setup(cfg: CNNTrainConfig, dist: ProcessGroup, pretrained: bool | str | None = None) -> CNNSetup:
    """Dataset, timm model (weights per ``pretrained``, default the config's) and its own preprocessing."""
    from timm.data import create_transform

    from fgvlm.data import create_dataset

    device = select_device(cfg, dist)
    dataset = create_dataset(cfg.data)
    weights = cfg.pretrained if pretrained is None else pretrained
    model, source = create_classifier(cfg.arch, dataset.num_classes, weights)
    config = data_config(model, cfg.image_size)
    common = {k: config[k] for k in ("input_size", "interpolation", "mean", "std")}
    # RandomResizedCrop + flip (+ colour jitter, + RandAugment); eval: resize to size/crop_pct, centre crop.
    train_tf = create_transform(
        **common,
        is_training=True,
        scale=tuple(cfg.crop_scale),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter or None,
        auto_augment=cfg.randaugment,
    )
    eval_tf = create_transform(**common, crop_pct=config["crop_pct"], crop_mode=config.get("crop_mode"))
    shorter = max(round(config["input_size"][-1] * cfg.cache_scale), eval_resize(config))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    preprocessing = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    return CNNSetup(
        cfg,
        dataset,
        model,
        source,
        preprocessing,
        train_tf,
        eval_tf,
        shorter,
        device,
        select_precision(cfg, device),
        dist,
    )


def make_loss_fn(cfg: CNNTrainConfig, num_classes: int, device: torch.device) -> Any:
    """Cross-entropy with label smoothing, or timm Mixup/CutMix on the batch with soft-target cross-entropy."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    mixup = None
    if cfg.mixup or cfg.cutmix:
        mixup = Mixup(
            mixup_alpha=cfg.mixup_alpha if cfg.mixup else 0.0,
            cutmix_alpha=cfg.cutmix_alpha if cfg.cutmix else 0.0,
            prob=cfg.mix_prob,
            switch_prob=cfg.mix_switch_prob,
            label_smoothing=cfg.label_smoothing,
            num_classes=num_classes,
        )
    criterion = SoftTargetCrossEntropy() if mixup else torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def loss_fn(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        if mixup is not None:
            images, labels = mixup(images, labels)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return criterion(model(images), labels), images.shape[0]

    return loss_fn


def open_run_dir(out: str | Path, resume: bool, dist: ProcessGroup) -> RunDir:
    """The run directory; a finished or started run is only continued with ``resume`` (never overwritten)."""
    last = Path(out) / "checkpoints" / "last.json"
    if last.is_file() and not resume:
        raise ConfigError(f"{out} already holds a trained run; pass --resume to continue it or choose a new --out")
    if resume and not last.is_file():
        raise ConfigError(f"cannot resume: {last} not found")
    dist.barrier()  # every rank has checked before rank 0 creates anything
    return RunDir(out)


def check_resume_config(run: RunDir, cfg: CNNTrainConfig) -> None:
    """Refuse to continue a run with a config other than the one it started with (naming the differing keys)."""

    saved_path = run / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"cannot resume: {saved_path} not found")
    differences = config_differences(load_yaml(saved_path), to_dict(cfg))
    if differences:
        raise ConfigError(
            f"{run.path} was trained with a different config; cannot resume. Differing keys: "
            f"{'; '.join(differences)}. Resume with the run's own config.yaml, or choose a new --out."
        )


def train_cnn(
    cfg: CNNTrainConfig, out: str | Path, resume: bool = False, stop_after_epoch: int | None = None
) -> dict[str, Any]:
    """Train, keep best/last checkpoints, evaluate the best on ``cfg.eval_split``; returns its metrics (rank 0).

    Launched by ``torchrun`` with several processes, it trains with DDP (gloo on CPU) and rank 0 writes the files.
    ``stop_after_epoch`` cuts the run off after that epoch (schedule unchanged) for time-boxed jobs; ``resume``
    continues it.
    """
    use_cuda = torch.cuda.is_available() and not (cfg.device or "").startswith("cpu")
    dist = ProcessGroup.from_env(backend="nccl" if use_cuda else "gloo")
    try:
        with torch_threads(cfg.num_threads):
            return _train(cfg, out, resume, dist, stop_after_epoch)
    finally:
        dist.close()


def _build_loop(
    setup: CNNSetup, run: RunDir, train_data: ImageClassificationData, val: tuple[str, ImageClassificationData] | None
) -> TrainLoop:
    from fgvlm.train.optim import create_optimizer, create_scheduler

    cfg, dist, device = setup.cfg, setup.dist, setup.device
    steps_per_epoch = len(train_data) // (cfg.batch_size * dist.world_size)
    if steps_per_epoch < 1:
        raise ConfigError(
            f"batch_size {cfg.batch_size} x {dist.world_size} process(es) is larger than the train "
            f"split ({len(train_data)} images): lower batch_size"
        )
    settings = LoopSettings(
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        max_steps=cfg.max_steps,
        best_metric=f"{val[0]}_top1" if val else None,
        precision=setup.precision,
        grad_clip_norm=cfg.grad_clip_norm,
        log_every_steps=cfg.log_every_steps,
        progress=cfg.progress,
    )
    optimizer = create_optimizer(setup.model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    scheduler = create_scheduler(
        optimizer, settings.total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio
    )
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(setup.model, decay=cfg.ema_decay)

    def evaluate(module: torch.nn.Module) -> dict[str, float]:
        return topk_metrics(setup.predict(module, val[1]), val[1].labels, val[0])

    def batches(epoch: int) -> Any:
        return train_loader(
            train_data,
            cfg.batch_size,
            epoch,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            rank=dist.rank,
            world_size=dist.world_size,
            pin_memory=device.type == "cuda",
        )

    return TrainLoop(
        setup.model,
        optimizer,
        make_loss_fn(cfg, setup.dataset.num_classes, device),
        batches,
        run_dir=run,
        settings=settings,
        device=device,
        scheduler=scheduler,
        evaluate=evaluate if val else None,
        ema=ema,
        dist=dist,
    )


def _train(
    cfg: CNNTrainConfig, out: str | Path, resume: bool, dist: ProcessGroup, stop_after_epoch: int | None
) -> dict[str, Any]:
    from fgvlm.train.checkpoint import load_weights

    run = open_run_dir(out, resume, dist)
    if resume:
        check_resume_config(run, cfg)
    seed_everything(cfg.seed)  # the same initial weights on every rank and in every rerun
    setup = build_setup(cfg, dist)
    val_name = cfg.val_split if cfg.val_split in setup.dataset.split_names else None
    train_data = setup.split_data("train", train=True)
    val = (val_name, setup.split_data(val_name)) if val_name else None
    if dist.is_main and not resume:
        run.write_config(cfg)
        run.write_meta(
            command="cnn train",
            seed=cfg.seed,
            dataset=setup.dataset.describe(),
            model=setup.source,
            preprocessing=setup.preprocessing,
            cache_shorter_side=setup.shorter_side,
            validation_split=val_name,
            device=str(setup.device),
            precision=setup.precision,
            world_size=dist.world_size,
        )
    loop = _build_loop(setup, run, train_data, val)
    # the loop writes tb/ itself; wandb / mlflow (cfg.report_to) get each epoch's log record
    trackers = open_trackers(cfg.report_to, run.path, to_dict(cfg), exclude=("tensorboard",), enabled=dist.is_main)
    with trackers as tracked:
        loop.on_epoch = lambda record: tracked.log(record, record["step"])
        result = loop.fit(resume=resume, stop_after_epoch=stop_after_epoch)
    checksums = replica_checksums(dist, loop.eval_module)
    in_sync = all(c == checksums[0] for c in checksums)
    if not in_sync:
        raise RuntimeError("DDP ranks finished with different weights; the run's results are not trustworthy")
    load_weights(loop.checkpoints.weights_path(result.best_tag), loop.eval_module)
    eval_data = setup.split_data(cfg.eval_split)
    probs = setup.predict(loop.eval_module, eval_data)
    last = result.history[-1] if result.history else {}
    extra = {
        "checkpoint": result.best_tag,
        "best": result.best,
        "epochs_trained": last.get("epoch"),
        "steps": result.step,
        "world_size": dist.world_size,
        "replicas_in_sync": in_sync,
        "replica_checksums": checksums,
        "train_images_per_s": last.get("images_per_s"),
    }
    if not dist.is_main:
        return {}
    return write_results(run.path, setup, cfg.eval_split, probs, extra)


def write_results(
    path: Path, setup: CNNSetup, split_name: str, probs: np.ndarray, extra: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json (shared schema, mode 'cnn'), predictions.jsonl and confusion.json for one split."""
    from fgvlm.eval.metrics import classification_metrics, write_confusion

    split, dataset, cfg = setup.dataset.split(split_name), setup.dataset, setup.cfg
    k = min(cfg.topk, dataset.num_classes)
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    preds = ranked[:, 0].tolist()
    metrics = classification_metrics(
        split.labels,
        preds,
        dataset.class_names,
        topk=ranked.tolist(),
        extra={
            "mode": "cnn",
            "protocol": dataset.protocol,
            "dataset": dataset.name,
            "split": split_name,
            "arch": cfg.arch,
            "pretrained": cfg.pretrained_label,
            **extra,
        },
    )
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "metrics.json", metrics)
    lines = [
        json.dumps(
            {
                "id": sample_id,
                "label": label,
                "pred": row[0],
                "topk": [[int(c), round(float(probs[i, c]), 6)] for c in row],
            }
        )
        for i, (sample_id, label, row) in enumerate(zip(split.ids, split.labels, ranked.tolist(), strict=True))
    ]
    tmp = path / ".predictions.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path / "predictions.jsonl")
    write_confusion(path / "confusion.json", split.labels, preds, dataset.class_names)
    return metrics


def evaluate_run(
    run_dir: str | Path, split: str = "test", checkpoint: str = "best", out: str | Path | None = None
) -> dict[str, Any]:
    """Re-evaluate a trained run: its ``config.yaml`` rebuilds data and model, ``checkpoint`` gives the weights.

    Results go to ``out`` (default ``RUN_DIR/eval-<split>-<checkpoint>``); ``best`` falls back to ``last`` for a
    run trained without a validation split.
    """
    from fgvlm.train.checkpoint import Checkpointer, load_weights

    run = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    cfg = resolve_config(CNNTrainConfig, run / "config.yaml")
    checkpoints = Checkpointer(run)
    tag = checkpoint if checkpoints.exists(checkpoint) or checkpoint == "last" else "last"
    info = checkpoints.read_info(tag)
    with torch_threads(cfg.num_threads):
        setup = build_setup(cfg, ProcessGroup(), pretrained=False)
        load_weights(checkpoints.weights_path(tag), setup.model)
        probs = setup.predict(setup.model, setup.split_data(split))
    target = RunDir(out if out is not None else run / f"eval-{split}-{checkpoint}")
    target.write_config(cfg)
    target.write_meta(
        command="cnn eval",
        seed=cfg.seed,
        dataset=setup.dataset.describe(),
        model=setup.source,
        run=str(run),
        checkpoint=tag,
        checkpoint_epoch=info.get("epoch"),
    )
    return write_results(target.path, setup, split, probs, {"checkpoint": tag, "checkpoint_epoch": info.get("epoch")})
