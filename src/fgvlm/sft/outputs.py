"""The end of a fine-tuning run, the same for every objective: merge, save, reload-verify, evaluate, write results.

``RUN/model/`` is written once, reloaded through ``AutoProcessor`` + ``AutoModelForImageTextToText`` (the path every
other command takes) and compared with the in-memory model on a training batch: a model that does not reload to the
same function is refused. The final evaluation runs on the RELOADED model and is the objective's
(``Objective.evaluate``: ``fgvlm eval`` in rank mode for generate and rank, the head on ``embed`` features for
classify); ``metrics.json`` gets the shared header, the evaluation's numbers and the objective's fields, and
``meta.json`` what produced it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from fgvlm.sft.setup import MODEL_DIR, Setup


def finish(setup: Setup, objective: Any, trainer: Any, best: dict[str, Any] | None, started: float) -> dict[str, Any]:
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
    objective.use_merged(merged)
    model_dir = (run / MODEL_DIR).resolve()
    if group.is_main:
        save_model(merged, setup.processor, model_dir)
    group.barrier()
    model_cfg = dataclasses.replace(cfg.model, name=str(model_dir))
    reloaded = load_backend(model_cfg)
    batch = setup.collator([setup.train_records[0]])
    reload_diff = verify_reload(merged, reloaded.model, batch)
    metrics = objective.evaluate(reloaded, model_cfg, best, group.is_main)
    if not group.is_main:
        return metrics
    metrics = write_metrics(setup, objective, metrics, model_dir, time.time() - started)
    run.write_meta(
        command="sft",
        seed=cfg.train.seed,
        dataset=setup.dataset.describe(),
        model={**setup.info, **summary, "saved": str(model_dir)},
        family=setup.family,
        train_samples=len(setup.train_records),
        val_samples=len(setup.val_records),
        **objective.meta_fields(),
        best=best,
        final_weights=cfg.train.final,
        global_step=trainer.state.global_step,
        train_seconds=round(trained_seconds, 3),
        reload_max_logit_diff=reload_diff,
    )
    return metrics


def write_metrics(
    setup: Setup, objective: Any, metrics: dict[str, Any], model_dir: Path, seconds: float
) -> dict[str, Any]:
    """metrics.json through ``fgvlm.runs.write_results``: the shared header, the evaluation's metrics, the
    objective's fields and the base model."""
    from fgvlm.runs import HEADER_KEYS, write_results

    body = {k: v for k, v in metrics.items() if k not in HEADER_KEYS}
    body.update(objective.results_fields(), base_model=setup.cfg.model.name)
    return write_results(setup.run, setup.results_header(str(model_dir), seconds), body)
