"""``fgvlm head train`` and ``fgvlm head eval`` end to end: dataset + frozen backbone -> features -> head -> files.

Train writes into the run directory: ``config.yaml``, ``train_log.jsonl``, ``sweep.json`` with ``--sweep``,
``predictions.jsonl`` / ``confusion.json`` / ``metrics.json`` for ``eval_split``, ``head.safetensors``, ``head.json``,
``meta.json`` and, last, ``done.json`` (``fgvlm.runs.finish_run``). Under ``torchrun`` all processes share the
feature extraction; only rank 0 trains and writes.

Resume (``fgvlm.runs.start_run``): a complete run is skipped and its metrics returned; a partial one is trained
again from step 0 -- cheap, because its features come back from the feature cache, and a head's steps take seconds.
``head eval`` writes its own run directory (default ``<head run>/eval-<split>``) with the same lifecycle.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError, from_dict, load_yaml, to_dict
from fgvlm.data import Dataset, create_dataset
from fgvlm.distributed import ProcessGroup
from fgvlm.heads.cache import FeatureCache
from fgvlm.heads.config import HeadEvalConfig, HeadTrainConfig
from fgvlm.heads.features import FeatureSpec, backbone_signature, split_features
from fgvlm.models.base import ModelConfig, VLMBackend
from fgvlm.runs import RunDir, TrainLogger, finish_run, limit_split, say, start_run


def model_source(cfg: ModelConfig) -> dict[str, Any]:
    """Whether the backbone is a base model (registry name / hub id) or a local directory such as an SFT run's."""
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        return {"source": "local", "path": str(path.resolve())}
    return {"source": "base", "name": cfg.name}


@dataclass
class HeadContext:
    """What every step of a head run needs: config, dataset, frozen backbone, feature cache, process group."""

    cfg: HeadTrainConfig
    dataset: Dataset
    backend: VLMBackend
    cache: FeatureCache
    group: ProcessGroup
    progress: bool = True
    extractions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """One entry per split/pooling/layer asked for: its cache key and whether it was already cached."""

    def split(self, name: str):
        """A split of the dataset, capped at ``limit`` images."""
        return limit_split(self.dataset.split(name), self.cfg.limit)

    def features(self, split: str, spec: FeatureSpec):
        """A split's cached features (extracted on a miss); records hit/miss in ``self.extractions``."""
        cfg = self.cfg
        found, hit = split_features(
            self.backend,
            self.split(split),
            spec,
            self.cache,
            cfg.model,
            cfg.data.options,
            cfg.embed_batch_size,
            self.progress,
            self.group,
        )
        self.extractions.append(
            {
                "split": split,
                "pooling": spec.pooling,
                "layer": spec.layer,
                "key": found.meta["key"],
                "cached": hit,
                "seconds": found.meta.get("seconds"),
            }
        )
        return found

    def val_split(self) -> str | None:
        name = self.cfg.val_split
        return name if name and name in self.dataset.split_names else None


def open_context(
    cfg: HeadTrainConfig,
    progress: bool = True,
    backend: VLMBackend | None = None,
    group: ProcessGroup | None = None,
) -> HeadContext:
    """Open the dataset and the backbone (``backend`` reuses one already loaded for ``cfg.model``)."""
    from fgvlm.models.loading import create_backend

    group = group or ProcessGroup.from_env()
    if group.world_size > 1 and cfg.online:
        raise ConfigError("online: true runs the backbone inside the head's training loop; launch it as one process")
    dataset = create_dataset(cfg.data)
    if cfg.prompt is None:  # the dataset's own question ("... flower ...", "... bird species ...")
        cfg = dataclasses.replace(cfg, prompt=dataset.head_prompt)
    backend = backend or create_backend(cfg.model, group)
    return HeadContext(cfg, dataset, backend, FeatureCache(cfg.cache_dir), group, progress and group.is_main)


def sweep_best(ctx: HeadContext, run: RunDir | None) -> dict[str, Any]:
    """Run the sweep grid (all ranks extract, rank 0 trains) and return the best row on every rank."""
    from fgvlm.heads.config import HeadRecipe
    from fgvlm.heads.sweep import holdout_indices, print_sweep, run_sweep, write_sweep

    cfg, grid, val = ctx.cfg, ctx.cfg.sweep_grid, ctx.val_split()
    table: dict[tuple[str, int], tuple] = {}
    for pooling in grid.poolings:
        for layer in grid.layers:
            spec = FeatureSpec(cfg.prompt, pooling, layer)
            train = ctx.features(cfg.train_split, spec)
            if val is not None:
                held = ctx.features(val, spec)
                table[pooling, layer] = (train.features, train.labels, held.features, held.labels)
            else:  # no validation split: score on a seeded hold-out of train, never on test
                keep, out = holdout_indices(train.labels, 0.2, cfg.seed)
                x, y = train.features, train.labels
                table[pooling, layer] = (x[keep], y[keep], x[out], y[out])
    best = None
    if ctx.group.is_main:
        recipe = HeadRecipe.from_config(cfg)
        rows = run_sweep(grid, recipe, lambda p, lay: table[p, lay], ctx.dataset.num_classes)
        scored_on = val or f"20% hold-out of {cfg.train_split}"
        print_sweep(rows, f"head sweep ({cfg.model.name}, scored on {scored_on})")
        write_sweep(run.path, rows, scored_on)
        best = rows[0]
    return ctx.group.broadcast(best)


def _sources(ctx: HeadContext, spec: FeatureSpec) -> dict[str, tuple[Any, Any, list[str]]]:
    """split -> (feature source, labels, ids) for train, val (when present) and eval: cached or online."""
    import torch

    from fgvlm.heads.training import OnlineFeatures, TensorFeatures

    cfg = ctx.cfg
    names = {"train": cfg.train_split, "val": ctx.val_split(), "eval": cfg.eval_split}
    out = {}
    for role, name in names.items():
        if name is None:
            continue
        split = ctx.split(name)
        if cfg.online:
            labels = torch.tensor(split.labels, dtype=torch.long)
            out[role] = (OnlineFeatures(ctx.backend, split, spec, cfg.embed_batch_size), labels, split.ids)
        else:
            found = ctx.features(name, spec)
            out[role] = (TensorFeatures(found.features), found.labels, found.ids)
    return out


def _open_run(out: str | Path, cfg: Any, resume: bool, group: ProcessGroup) -> tuple[RunDir | None, Any]:
    """Rank 0 opens the run (``start_run``); every rank learns whether it was complete (its stored metrics)."""
    run, stored = None, None
    if group.is_main:
        try:
            run = start_run(out, cfg, resume=resume)
            stored = run.read_results() if run.complete else None
        except ConfigError as err:
            stored = err
    stored = group.broadcast(stored)
    if isinstance(stored, Exception):
        raise stored
    return run, stored


def train_run(
    cfg: HeadTrainConfig,
    out: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    backend: VLMBackend | None = None,
) -> dict[str, Any] | None:
    """Train and evaluate a head; returns the eval split's metrics (None on non-zero ranks).

    ``backend``: a backbone already loaded for ``cfg.model`` (Python callers running several heads reuse it).
    """
    group = ProcessGroup.from_env()
    try:
        run, stored = _open_run(out, cfg, resume, group)
        if stored is not None:
            return stored if group.is_main else None
        if run is not None and run.status.state == "partial":
            say(f"{run.path}: the head is trained again from step 0 (its features come from the cache)")
        ctx = open_context(cfg, progress, backend, group)
        cfg = ctx.cfg  # with the dataset's prompt filled in
        if cfg.sweep:
            best = sweep_best(ctx, run)
            cfg = dataclasses.replace(cfg, pooling=best["pooling"], layer=best["layer"], lr=best["lr"])
            ctx.cfg = cfg
        spec = FeatureSpec(cfg.prompt, cfg.pooling, cfg.layer)
        sources = _sources(ctx, spec)
        if run is None:
            return None
        metrics = _train_and_write(ctx, run, spec, sources)
        finish_run(run)
        return metrics
    finally:
        group.close()


def _header(ctx: HeadContext, kind: str, split: str, model: str, num_classes: int, run: RunDir) -> dict[str, Any]:
    return {
        "kind": kind,
        "dataset": ctx.dataset.name,
        **ctx.dataset.protocol_header(),
        "split": split,
        "model": model,
        "num_classes": num_classes,
        "seconds": round(time.time() - run.started, 3),
    }


def _train_and_write(ctx: HeadContext, run: RunDir, spec: FeatureSpec, sources: dict) -> dict[str, Any]:
    """Train the head, then write predictions + metrics, the head, meta.json (``done.json`` comes after)."""
    from fgvlm.heads.config import HeadRecipe
    from fgvlm.heads.model import head_info, save_head
    from fgvlm.heads.outputs import write_evaluation
    from fgvlm.heads.training import train_head

    cfg, dataset = ctx.cfg, ctx.dataset
    logger = TrainLogger(run)
    logger.clear()  # a partial run is trained again from step 0
    train_x, train_y, _ = sources["train"]
    val = sources["val"][:2] if "val" in sources else None
    recipe = HeadRecipe.from_config(cfg)
    result = train_head(
        train_x, train_y, dataset.num_classes, recipe, val, on_log=lambda r: logger.log(**r), progress=ctx.progress
    )
    eval_x, eval_y, eval_ids = sources["eval"]
    start = time.perf_counter()
    eval_features = eval_x.get(range(len(eval_x)))
    extra = {
        "pooling": spec.pooling,
        "layer": spec.layer,
        "training": "online" if cfg.online else "cached",
        "head_train_seconds": round(result.seconds, 3),
        "best_step": result.best_step,
    }
    if cfg.online:
        extra["eval_embed_seconds"] = round(time.perf_counter() - start, 3)
    header = _header(ctx, "head-train", cfg.eval_split, cfg.model.name, dataset.num_classes, run)
    labels = eval_y.tolist()
    metrics = write_evaluation(
        run.path, header, result.head, eval_features, labels, eval_ids, dataset.class_names, extra
    )
    info = head_info(
        dataset=dataset,
        backbone={**model_source(cfg.model), **ctx.backend.describe()},
        signature=backbone_signature(ctx.backend, cfg.model),
        model_config=to_dict(cfg.model),
        prompt=cfg.prompt,
        pooling=spec.pooling,
        layer=spec.layer,
        standardize=cfg.standardize,
        training=extra["training"],
        data_options=cfg.data.options,
        recipe=dataclasses.asdict(recipe),
        best=(result.best_step, result.best_val),
        split=cfg.eval_split,
        metrics=metrics,
    )
    save_head(result.head, run.path, info)
    run.write_meta(
        command="head train",
        seed=cfg.seed,
        dataset=dataset.describe(),
        model=info["backbone"],
        features=ctx.extractions,
        training=extra["training"],
    )
    return metrics


def head_train_config(head_run: str | Path) -> HeadTrainConfig:
    """The resolved config of a ``fgvlm head train`` run directory."""
    path = Path(head_run) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{head_run}: no config.yaml; is this a `fgvlm head train` run directory?")
    return from_dict(HeadTrainConfig, load_yaml(path), where=str(path))


def eval_run(
    cfg: HeadEvalConfig,
    out: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    backend: VLMBackend | None = None,
) -> dict[str, Any]:
    """Evaluate a trained head on ``cfg.split`` into run directory ``out``; returns its metrics ({} on other ranks)."""
    from fgvlm.heads.model import load_head
    from fgvlm.heads.outputs import write_evaluation

    train_cfg = head_train_config(cfg.head_run)
    head, info = load_head(cfg.head_run)
    group = ProcessGroup.from_env()
    try:
        run, stored = _open_run(out, cfg, resume, group)
        if stored is not None:
            return stored if group.is_main else {}
        train_cfg = dataclasses.replace(train_cfg, online=False, limit=cfg.limit)
        ctx = open_context(train_cfg, progress, backend, group)
        check_backbone(ctx.backend, train_cfg.model, info)
        spec = FeatureSpec(info["prompt"], info["pooling"], info["layer"])
        found = ctx.features(cfg.split, spec)
        if run is None:
            return {}
        extra = {"pooling": spec.pooling, "layer": spec.layer, "head_run": str(cfg.head_run)}
        class_names = info["class_names"]
        header = _header(ctx, "head-eval", cfg.split, train_cfg.model.name, len(class_names), run)
        labels = found.labels.tolist()
        metrics = write_evaluation(run.path, header, head, found.features, labels, found.ids, class_names, extra)
        run.write_meta(
            command="head eval",
            seed=train_cfg.seed,
            dataset=ctx.dataset.describe(),
            model=ctx.backend.describe(),
            features=ctx.extractions,
            head_run=str(cfg.head_run),
        )
        finish_run(run)
        return metrics
    finally:
        group.close()


def _plain(value: Any) -> Any:
    """``value`` as head.json stores it (JSON round trip: tuples become lists, odd objects strings)."""
    return json.loads(json.dumps(value, default=str))


def check_backbone(backend: VLMBackend, model_cfg: ModelConfig, info: dict[str, Any]) -> None:
    """Refuse features unlike the head's training features: other weights, image processor or pixel bounds.

    The dtype is not compared: the same weights in another dtype (another device) give close features.
    """
    expected = info["backbone_signature"]
    actual = _plain(backbone_signature(backend, model_cfg))
    if expected["model"] != actual["model"]:
        raise ConfigError(
            f"the head was trained on backbone {info['backbone'].get('name')!r} ({expected['model']}) but the "
            f"loaded model is {backend.describe().get('name')!r} ({actual['model']}); pass the same --model"
        )
    differing = [
        f"{key}: {expected.get(key)!r} -> {actual.get(key)!r}"
        for key in ("preprocessing", "min_pixels", "max_pixels")
        if key in expected and expected[key] != actual.get(key)
    ]
    if differing:
        raise ConfigError(
            f"the head was trained on {info['backbone'].get('name')!r} with other preprocessing than the loaded "
            f"model's: {'; '.join(differing)}; use the head's model settings (head.json model_config)"
        )
