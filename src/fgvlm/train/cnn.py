"""CNN baselines: fine-tune any timm classifier (ResNet-50 by default) on a dataset, with or without MixUp/CutMix.

``train_cnn(config, out)`` builds the model, the cached data and the loss, runs ``fgvlm.train.loop.TrainLoop`` and
writes the shared result files (metrics.json, predictions.jsonl, confusion.json) for the evaluation split from the
best checkpoint, then ``done.json``; ``evaluate_run(CNNEvalConfig, out)`` re-evaluates a trained run on any split and
checkpoint. Both follow the run lifecycle of ``fgvlm.runs.start_run``: a complete run is skipped, a partial training
run resumes from its ``last`` checkpoint (or starts over when it has none yet), another config is refused.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgvlm.config import ConfigError, resolve_config, to_dict
from fgvlm.distributed import ProcessGroup
from fgvlm.runs import RunDir, check_same_data, finish_run, limit_split, start_run
from fgvlm.train.classifier import create_classifier, data_config, eval_resize, predict_probs, topk_metrics
from fgvlm.train.cnn_config import CNNEvalConfig, CNNTrainConfig
from fgvlm.train.distributed import replica_checksums
from fgvlm.train.images import ImageClassificationData, cache_split, train_loader
from fgvlm.train.loop import PRECISIONS, LoopSettings, TrainLoop
from fgvlm.train.runtime import seed_everything, torch_threads
from fgvlm.train.trackers import open_trackers

__all__ = ["CNNEvalConfig", "CNNTrainConfig", "evaluate_run", "train_cnn"]


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
        cfg, split = self.cfg, self.split(name)
        show = cfg.progress and self.dist.is_main
        images = (
            cache_split(split, self.shorter_side, cfg.cache_dir, max(cfg.num_workers, 1), show)
            if cfg.image_cache
            else split
        )
        return ImageClassificationData(images, split.labels, self.train_transform if train else self.eval_transform)

    def split(self, name: str) -> Any:
        """A split of the dataset, capped at the config's ``limit`` images."""
        return limit_split(self.dataset.split(name), self.cfg.limit)

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


def open_training_run(
    out: str | Path, cfg: CNNTrainConfig, resume: bool, dist: ProcessGroup
) -> tuple[RunDir | dict[str, Any], bool]:
    """Rank 0 opens the run (``start_run``); every rank gets (run, resume from checkpoint) or (stored metrics, False).

    A partial run without a ``last`` checkpoint yet (killed in its first epoch) starts over in place.
    """
    shared: Any = None
    if dist.is_main:
        try:
            run = start_run(out, cfg, resume=resume)
            shared = (run.read_results(), False) if run.complete else (None, _prepare_partial(run))
        except ConfigError as err:
            shared = err
    shared = dist.broadcast(shared)
    if isinstance(shared, Exception):
        raise shared
    stored, from_checkpoint = shared
    if stored is not None:
        return stored, False
    return (run if dist.is_main else RunDir(out)), from_checkpoint


def _prepare_partial(run: RunDir) -> bool:
    """True when the run continues from its ``last`` checkpoint; otherwise clear what an unfinished first epoch left."""
    if (run / "checkpoints" / "last.json").is_file():
        return True
    for name in ("checkpoints", "tb"):
        shutil.rmtree(run / name, ignore_errors=True)
    (run / "train_log.jsonl").unlink(missing_ok=True)
    return False


def train_cnn(
    cfg: CNNTrainConfig, out: str | Path, *, resume: bool = True, stop_after_epoch: int | None = None
) -> dict[str, Any]:
    """Train, keep best/last checkpoints, evaluate the best on ``cfg.eval_split``; returns its metrics (rank 0).

    Launched by ``torchrun`` with several processes, it trains with DDP (gloo on CPU) and rank 0 writes the files.
    ``stop_after_epoch`` cuts the run off after that epoch (schedule unchanged) for time-boxed jobs; it stays partial
    (no ``done.json``) and a rerun with ``resume`` continues it. ``resume=False`` starts over.
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
        best_metric="val_accuracy" if val else None,
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
        return topk_metrics(setup.predict(module, val[1]), val[1].labels, "val")

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

    run, from_checkpoint = open_training_run(out, cfg, resume, dist)
    if isinstance(run, dict):  # complete: its stored metrics
        return run if dist.is_main else {}
    seed_everything(cfg.seed)  # the same initial weights on every rank and in every rerun
    setup = build_setup(cfg, dist)
    val_name = cfg.val_split if cfg.val_split in setup.dataset.split_names else None
    train_data = setup.split_data("train", train=True)
    val = (val_name, setup.split_data(val_name)) if val_name else None
    if dist.is_main and from_checkpoint:  # continuing: the recorded data selection must be this one
        check_same_data(run, setup.dataset.describe())
    if dist.is_main and not from_checkpoint:
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
            limit=cfg.limit,
        )
    loop = _build_loop(setup, run, train_data, val)
    # the loop writes tb/ itself; wandb / mlflow (cfg.report_to) get each epoch's log record
    trackers = open_trackers(cfg.report_to, run.path, to_dict(cfg), exclude=("tensorboard",), enabled=dist.is_main)
    with trackers as tracked:
        loop.on_epoch = lambda record: tracked.log(record, record["step"])
        result = loop.fit(resume=from_checkpoint, stop_after_epoch=stop_after_epoch)
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
    metrics = write_split_results(run, setup, "cnn-train", cfg.eval_split, probs, extra)
    if result.finished:
        finish_run(run)
    return metrics


def write_split_results(
    run: RunDir, setup: CNNSetup, kind: str, split_name: str, probs: np.ndarray, extra: dict[str, Any]
) -> dict[str, Any]:
    """metrics.json (fixed header, shared schema, mode 'cnn'), predictions.jsonl and confusion.json for one split."""
    from fgvlm.eval.results import write_probability_results

    split, dataset, cfg = setup.split(split_name), setup.dataset, setup.cfg
    header = {
        "kind": kind,
        "dataset": dataset.name,
        **dataset.protocol_header(),
        "split": split_name,
        "model": cfg.arch,
        "num_classes": dataset.num_classes,
        "seconds": round(time.time() - run.started, 3),
    }
    extra = {"mode": "cnn", "arch": cfg.arch, "pretrained": cfg.pretrained_label, **extra}
    return write_probability_results(
        run.path, header, probs, split.labels, split.ids, dataset.class_names, extra, k=cfg.topk
    )


def evaluate_run(cfg: CNNEvalConfig, out: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Re-evaluate a trained run: its ``config.yaml`` rebuilds data and model, ``cfg.checkpoint`` gives the weights.

    Results go to run directory ``out`` (the CLI's default: ``<run>/eval-<split>-<checkpoint>``); ``best`` falls
    back to ``last`` for a run trained without a validation split.
    """
    from fgvlm.train.checkpoint import Checkpointer, load_weights

    trained = Path(cfg.run)
    if not (trained / "config.yaml").is_file():
        raise ConfigError(f"{trained}: no config.yaml; is this a `fgvlm cnn train` run directory?")
    train_cfg = resolve_config(CNNTrainConfig, trained / "config.yaml")
    train_cfg.limit = cfg.limit
    checkpoints = Checkpointer(trained)
    tag = cfg.checkpoint if checkpoints.exists(cfg.checkpoint) or cfg.checkpoint == "last" else "last"
    info = checkpoints.read_info(tag)
    target = start_run(out, cfg, resume=resume)
    if target.complete:
        return target.read_results()
    with torch_threads(train_cfg.num_threads):
        setup = build_setup(train_cfg, ProcessGroup(), pretrained=False)
        load_weights(checkpoints.weights_path(tag), setup.model)
        probs = setup.predict(setup.model, setup.split_data(cfg.split))
    extra = {"checkpoint": tag, "checkpoint_epoch": info.get("epoch"), "trained_run": str(trained)}
    metrics = write_split_results(target, setup, "cnn-eval", cfg.split, probs, extra)
    target.write_meta(
        command="cnn eval",
        seed=train_cfg.seed,
        dataset=setup.dataset.describe(),
        model=setup.source,
        run=str(trained),
        checkpoint=tag,
        checkpoint_epoch=info.get("epoch"),
    )
    finish_run(target)
    return metrics
