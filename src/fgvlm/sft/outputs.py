"""The end of a fine-tuning run: merge, save, reload-verify, evaluate, and write the shared result files.

``RUN/model/`` is written once, reloaded through ``AutoProcessor`` + ``AutoModelForImageTextToText`` (the path every
other command takes) and compared with the in-memory model on a training batch: a model that does not reload to the
same function is refused. The final evaluation runs on the RELOADED model: ``fgvlm eval``'s evaluator in rank mode
for the generate objective (its run is kept in ``eval-<split>/``; its predictions and confusion matrix are copied
up), the head on ``backend.embed`` features for classify (with ``head.safetensors`` + ``head.json`` beside them,
and ``head/`` a ``fgvlm head eval``-able head run).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from fgvlm.config import to_dict
from fgvlm.models.base import ModelConfig
from fgvlm.runs import RunDir
from fgvlm.sft.run import MODEL_DIR, Setup


@dataclasses.dataclass
class ClassifySetup:
    model: Any
    collator: Any
    val_records: list
    prompt: str
    head_lr: float


def setup_classify(setup: Setup) -> None:
    """Build the head and the classify model/collator on ``setup`` (``setup.classify``)."""
    from fgvlm.heads.model import build_head
    from fgvlm.prompts import build_prompt, object_word
    from fgvlm.sft.classify import ClassifyCollator, ClassifyModel, feature_dim
    from fgvlm.sft.data import instruction_records

    cfg, dataset = setup.cfg, setup.dataset
    prompt = build_prompt("open-qa", ["-"], family=setup.family, object=object_word(cfg.data.dataset)).text
    collator = ClassifyCollator(setup.processor, setup.family, prompt, cfg.model.name)
    dim = feature_dim(setup.backend, collator, setup.train_records[0], cfg.classify.layer)
    head = build_head(dim, dataset.num_classes, "linear", 512, cfg.classify.dropout, cfg.train.seed)
    head.to(setup.backend.device)
    model = ClassifyModel(setup.model, head, setup.backend, cfg.classify.pooling, cfg.classify.layer)
    val_records = []
    if setup.val_records:
        val_limit = len(setup.val_records)
        val_records = instruction_records(cfg, dataset, cfg.val_split, setup.family, val_limit)
    head_lr = cfg.classify.head_lr or max(cfg.train.lr, 1e-3)
    setup.classify = ClassifySetup(model, collator, val_records, prompt, head_lr)


def finish(setup: Setup, trainer: Any, best: dict[str, Any] | None, started: float) -> dict[str, Any]:
    """Final weights -> RUN/model (verified by reload) -> final evaluation -> metrics/meta files; the metrics."""
    from fgvlm.distributed import ProcessGroup
    from fgvlm.models.loading import load_backend
    from fgvlm.sft.modeling import merged_model, save_model, trainable_summary, verify_reload
    from fgvlm.sft.trainer import BEST_DIR, BEST_WEIGHTS, load_trainable

    cfg, run = setup.cfg, setup.run
    trained_seconds = time.time() - started
    summary = trainable_summary(trainer.model)
    group = ProcessGroup.from_env()
    best = group.broadcast(best)  # rank 0 alone keeps best/: every rank loads the same final weights
    if cfg.train.final == "best" and best is not None:
        load_trainable(trainer.model, run / BEST_DIR / BEST_WEIGHTS)
    merged = merged_model(setup.model)
    if setup.classify is not None:
        setup.classify.model.vlm = merged
    model_dir = (run / MODEL_DIR).resolve()
    if group.is_main:
        save_model(merged, setup.processor, model_dir)
    group.barrier()
    model_cfg = dataclasses.replace(cfg.model, name=str(model_dir))
    reloaded = load_backend(model_cfg)
    batch = setup.collator([setup.train_records[0]])
    reload_diff = verify_reload(merged, reloaded.model, batch)
    if setup.classify is not None:
        metrics = evaluate_classify(setup, reloaded, model_cfg, best, group.is_main)
    else:
        metrics = evaluate_generate(setup, reloaded, model_cfg, group.is_main)
    if not group.is_main:
        return metrics
    metrics = write_metrics(setup, metrics, model_dir, time.time() - started)
    run.write_meta(
        command="sft",
        seed=cfg.train.seed,
        dataset=setup.dataset.describe(),
        model={**setup.info, **summary, "saved": str(model_dir)},
        family=setup.family,
        train_samples=len(setup.train_records),
        val_samples=len(setup.val_records),
        mix_loss=cfg.mixcut.loss if cfg.task == "open-qa-mixcut" else None,
        best=best,
        final_weights=cfg.train.final,
        global_step=trainer.state.global_step,
        train_seconds=round(trained_seconds, 3),
        reload_max_logit_diff=reload_diff,
    )
    return metrics


def evaluate_generate(setup: Setup, backend: Any, model_cfg: ModelConfig, is_main: bool) -> dict[str, Any]:
    """``fgvlm eval`` (rank mode, the eval task) of the reloaded model on eval_split; results copied into RUN."""
    from fgvlm.eval.zeroshot import EvalConfig, evaluate

    cfg, run = setup.cfg, setup.run
    eval_cfg = EvalConfig(
        data=cfg.data,
        model=model_cfg,
        split=cfg.eval_split,
        mode="rank",
        task=cfg.eval_task,
        task_options=cfg.task_options.get(cfg.eval_task, {}),
        limit=cfg.eval_limit or cfg.limit,
        seed=cfg.seed,
    )
    out = run / f"eval-{cfg.eval_split}"
    metrics = evaluate(eval_cfg, out, resume=False, backend=backend)
    if is_main:
        for name in ("predictions.jsonl", "confusion.json"):
            shutil.copyfile(out / name, run / name)
    return metrics


def evaluate_classify(
    setup: Setup, backend: Any, model_cfg: ModelConfig, best: dict[str, Any] | None, is_main: bool
) -> dict[str, Any]:
    """The head on the reloaded model's ``embed`` features of eval_split; head files for predict and head eval."""
    import torch

    from fgvlm.heads.config import HeadTrainConfig
    from fgvlm.heads.features import backbone_signature
    from fgvlm.heads.model import save_head
    from fgvlm.heads.outputs import write_evaluation

    cfg, run, dataset, ctx = setup.cfg, setup.run, setup.dataset, setup.classify
    split = dataset.split(cfg.eval_split)
    total = min(len(split), cfg.eval_limit or cfg.limit or len(split))
    chunks = []
    for start in range(0, total, 8):
        images = [split[i].image for i in range(start, min(start + 8, total))]
        chunks.append(backend.embed(images, ctx.prompt, cfg.classify.pooling, cfg.classify.layer))
    features = torch.cat(chunks)
    head = ctx.model.head.eval().cpu()
    if not is_main:
        return {}
    extra = {"pooling": cfg.classify.pooling, "layer": cfg.classify.layer}
    header = results_header(setup, model_cfg.name, 0.0)
    labels, ids = split.labels[:total], split.ids[:total]
    metrics = write_evaluation(run.path, header, head, features, labels, ids, dataset.class_names, extra)
    info = {
        "class_names": dataset.class_names,
        "prompt_names": dataset.prompt_names,
        "backbone": {"source": "local", "path": model_cfg.name, **backend.describe()},
        "backbone_signature": backbone_signature(backend, model_cfg),
        "model_config": to_dict(model_cfg),
        "prompt": ctx.prompt,
        "pooling": cfg.classify.pooling,
        "layer": cfg.classify.layer,
        "standardize": False,
        "training": "sft-classify",
        "dataset": {"name": dataset.name, **dataset.protocol_header(), "options": cfg.data.options},
        "recipe": {"objective": "classify", **to_dict(cfg.classify), "lr": cfg.train.lr, "head_lr": ctx.head_lr},
        "best_step": best["step"] if best else None,
        "best_val": best["val_accuracy"] if best else None,
        "metrics": {cfg.eval_split: {k: metrics[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "n")}},
    }
    save_head(head, run.path, info)
    head_run = run / "head"
    head_run.mkdir(exist_ok=True)
    save_head(head, head_run, info)
    head_cfg = HeadTrainConfig(
        data=cfg.data,
        model=model_cfg,
        prompt=ctx.prompt,
        pooling=cfg.classify.pooling,
        layer=cfg.classify.layer,
        eval_split=cfg.eval_split,
        dropout=cfg.classify.dropout,
    )
    RunDir(head_run).write_config(head_cfg)
    return metrics


def results_header(setup: Setup, model: str, seconds: float) -> dict[str, Any]:
    """The shared metrics.json header of this run (``fgvlm.runs.HEADER_KEYS``)."""
    dataset = setup.dataset
    return {
        "kind": "sft",
        "dataset": dataset.name,
        **dataset.protocol_header(),
        "split": setup.cfg.eval_split,
        "model": model,
        "num_classes": dataset.num_classes,
        "seconds": round(seconds, 3),
    }


def write_metrics(setup: Setup, metrics: dict[str, Any], model_dir: Path, seconds: float) -> dict[str, Any]:
    """metrics.json through ``fgvlm.runs.write_results``: the shared header, then the evaluation's metrics."""
    from fgvlm.runs import HEADER_KEYS, write_results

    cfg = setup.cfg
    body = {k: v for k, v in metrics.items() if k not in HEADER_KEYS}
    body.update(
        objective=cfg.objective,
        base_model=cfg.model.name,
        mix_loss=cfg.mixcut.loss if cfg.tasks.get("open-qa-mixcut") else None,
    )
    return write_results(setup.run, results_header(setup, str(model_dir), seconds), body)
