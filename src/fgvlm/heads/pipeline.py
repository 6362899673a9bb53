"""``fgvlm head train`` and ``fgvlm head eval`` end to end: dataset + frozen backbone -> features -> head -> files.

Train writes into the run directory: ``config.yaml``, ``meta.json``, ``head.safetensors``, ``head.json``,
``train_log.jsonl``, ``metrics.json`` / ``predictions.jsonl`` / ``confusion.json`` for ``eval_split``, and
``sweep.json`` with ``--sweep``. Under ``torchrun`` all processes share the feature extraction; only rank 0 trains
and writes.
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
from fgvlm.heads.config import HeadTrainConfig
from fgvlm.heads.features import FeatureSpec, backbone_signature, split_features
from fgvlm.models.base import ModelConfig, VLMBackend
from fgvlm.runs import RunDir

TRAIN_LOG = "train_log.jsonl"


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

    def features(self, split: str, spec: FeatureSpec):
        """A split's cached features (extracted on a miss); records hit/miss in ``self.extractions``."""
        cfg = self.cfg
        found, hit = split_features(
            self.backend,
            self.dataset.split(split),
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


def open_context(cfg: HeadTrainConfig, progress: bool = True, backend: VLMBackend | None = None) -> HeadContext:
    """Open the dataset and the backbone (``backend`` reuses one already loaded for ``cfg.model``)."""
    from fgvlm.models.loading import create_backend

    group = ProcessGroup.from_env()
    if group.world_size > 1 and cfg.online:
        raise ConfigError("online: true runs the backbone inside the head's training loop; launch it as one process")
    dataset = create_dataset(cfg.data)
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
        split = ctx.dataset.split(name)
        if cfg.online:
            labels = torch.tensor(split.labels, dtype=torch.long)
            out[role] = (OnlineFeatures(ctx.backend, split, spec, cfg.embed_batch_size), labels, split.ids)
        else:
            found = ctx.features(name, spec)
            out[role] = (TensorFeatures(found.features), found.labels, found.ids)
    return out


def train_run(
    cfg: HeadTrainConfig, out: str | Path, progress: bool = True, backend: VLMBackend | None = None
) -> dict[str, Any] | None:
    """Train and evaluate a head; returns the eval split's metrics (None on non-zero ranks).

    ``backend``: a backbone already loaded for ``cfg.model`` (Python callers running several heads reuse it).
    """
    ctx = open_context(cfg, progress, backend)
    run = RunDir(out) if ctx.group.is_main else None
    try:
        if cfg.sweep:
            best = sweep_best(ctx, run)
            cfg = dataclasses.replace(cfg, pooling=best["pooling"], layer=best["layer"], lr=best["lr"])
            ctx.cfg = cfg
        spec = FeatureSpec(cfg.prompt, cfg.pooling, cfg.layer)
        sources = _sources(ctx, spec)
        if run is None:
            return None
        return _train_and_write(ctx, run, spec, sources)
    finally:
        ctx.group.close()


def _train_and_write(ctx: HeadContext, run: RunDir, spec: FeatureSpec, sources: dict) -> dict[str, Any]:
    from fgvlm.heads.config import HeadRecipe
    from fgvlm.heads.model import save_head
    from fgvlm.heads.outputs import write_evaluation
    from fgvlm.heads.training import train_head

    cfg, dataset = ctx.cfg, ctx.dataset
    run.write_config(cfg)
    (run / TRAIN_LOG).unlink(missing_ok=True)
    train_x, train_y, _ = sources["train"]
    val = sources["val"][:2] if "val" in sources else None
    recipe = HeadRecipe.from_config(cfg)
    result = train_head(
        train_x,
        train_y,
        dataset.num_classes,
        recipe,
        val,
        on_log=lambda record: run.append_jsonl(TRAIN_LOG, [record]),
        progress=ctx.progress,
    )
    eval_x, eval_y, eval_ids = sources["eval"]
    start = time.perf_counter()
    eval_features = eval_x.get(range(len(eval_x)))
    extra = {
        "protocol": dataset.protocol,
        "split": cfg.eval_split,
        "pooling": spec.pooling,
        "layer": spec.layer,
        "training": "online" if cfg.online else "cached",
        "head_train_seconds": round(result.seconds, 3),
        "best_step": result.best_step,
    }
    if cfg.online:
        extra["eval_embed_seconds"] = round(time.perf_counter() - start, 3)
    metrics = write_evaluation(
        run.path, result.head, eval_features, eval_y.tolist(), eval_ids, dataset.class_names, extra
    )
    info = {
        "class_names": dataset.class_names,
        "prompt_names": dataset.prompt_names,
        "backbone": {**model_source(cfg.model), **ctx.backend.describe()},
        "backbone_signature": backbone_signature(ctx.backend, cfg.model),
        "model_config": to_dict(cfg.model),
        "prompt": cfg.prompt,
        "pooling": spec.pooling,
        "layer": spec.layer,
        "standardize": cfg.standardize,
        "training": extra["training"],
        "dataset": {"name": dataset.name, "protocol": dataset.protocol, "options": cfg.data.options},
        "recipe": dataclasses.asdict(recipe),
        "best_step": result.best_step,
        "best_val": result.best_val,
        "metrics": {cfg.eval_split: {k: metrics[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "n")}},
    }
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


def eval_run(
    run_dir: str | Path, split: str = "test", progress: bool = True, backend: VLMBackend | None = None
) -> dict[str, Any]:
    """Evaluate a trained head on ``split``; writes ``<run>/eval-<split>/`` and returns its metrics."""
    from fgvlm.heads.model import load_head
    from fgvlm.heads.outputs import write_evaluation

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml; is this a `fgvlm head train` run directory?")
    cfg = from_dict(HeadTrainConfig, load_yaml(run_dir / "config.yaml"), where=str(run_dir / "config.yaml"))
    head, info = load_head(run_dir)
    ctx = open_context(dataclasses.replace(cfg, online=False), progress, backend)
    try:
        check_backbone(ctx.backend, cfg.model, info)
        spec = FeatureSpec(info["prompt"], info["pooling"], info["layer"])
        found = ctx.features(split, spec)
        extra = {
            "protocol": ctx.dataset.protocol,
            "split": split,
            "pooling": spec.pooling,
            "layer": spec.layer,
            "head_run": str(run_dir),
        }
        if not ctx.group.is_main:
            return {}
        out = run_dir / f"eval-{split}"
        metrics = write_evaluation(
            out, head, found.features, found.labels.tolist(), found.ids, info["class_names"], extra
        )
        RunDir(out).write_meta(
            command="head eval",
            seed=cfg.seed,
            dataset=ctx.dataset.describe(),
            model=ctx.backend.describe(),
            features=ctx.extractions,
        )
        return metrics
    finally:
        ctx.group.close()


def _plain(value: Any) -> Any:
    """``value`` as head.json stores it (JSON round trip: tuples become lists, odd objects strings)."""
    return json.loads(json.dumps(value, default=str))


def check_backbone(backend: VLMBackend, model_cfg: ModelConfig, info: dict[str, Any]) -> None:
    """Refuse features unlike the head's training features: other weights, image processor or pixel bounds.

    The dtype is not compared: the same weights in another dtype (another device) give close features.
    """
    expected = info.get("backbone_signature")
    if expected is None:  # a head saved before signatures were recorded
        return
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
