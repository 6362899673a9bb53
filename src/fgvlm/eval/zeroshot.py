"""Zero-shot evaluation (``fgvlm eval``): a VLM answers a prompt task about every image of a split.

``evaluate(cfg, out)`` writes the run directory: ``config.yaml``, ``meta.json`` (dataset, model, exact prompt
wording, task, mode, seed), ``predictions.jsonl`` (one line per image, appended batch by batch), ``metrics.json``
(the fixed header of ``fgvlm.runs.write_results``, the shared metrics of ``fgvlm.eval.metrics``, plus
``images_per_s``, ``mode``, ``task``), ``confusion.json`` and ``done.json``.

Resuming: batch ``b`` always holds images ``b*B .. b*B+B-1`` of the split, and each batch's lines are appended
together. After a kill, a rerun drops the lines of any incomplete batch and carries on from there, so
``predictions.jsonl`` ends byte-identical to an uninterrupted run (same batches, same numbers). Skip, resume and
refusal of a run with another config follow the one lifecycle of ``fgvlm.runs.start_run``; ``done.json`` is written
last.

Data parallel: under ``torchrun --nproc_per_node N`` process ``r`` runs batches ``r, r+N, ...``; rank 0 gathers each
round and appends it in dataset order, so one result set comes out, equal to the single-process one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError, DataConfig
from fgvlm.distributed import ProcessGroup
from fgvlm.models.base import ModelConfig
from fgvlm.models.loading import create_backend
from fgvlm.runfiles import keep_first_lines
from fgvlm.runs import RunDir, finish_run, ordered_start_run, results_header, write_results

MODES = ("generate", "rank")
PREDICTIONS = "predictions.jsonl"


@dataclasses.dataclass
class EvalConfig:
    """What ``fgvlm eval`` evaluates, and how."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    split: str = "test"
    """Which split to evaluate (train, val, test)."""
    mode: str = "generate"
    """generate: free answer parsed by answer matching; rank: log-likelihood of every candidate answer."""
    task: str = "open-qa"
    """Prompt task (``fgvlm list tasks``): open-qa, closed-qa, closed-negative-qa."""
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Options of the prompt task (``fgvlm.prompts.build_prompt``), e.g. num_options, distractors, object."""
    batch_size: int = 8
    """Images per step (one progress update and one append to predictions.jsonl) and per forward: generate mode
    answers a batch in one left-padded forward; rank mode runs the image+prompt prefixes of the batch's images that
    share a prompt and candidates in one left-padded forward, then their candidates in one packed forward (scores
    equal to one image at a time)."""
    limit: int | None = None
    """Evaluate only the first N images of the split (quick checks)."""
    score: str = "mean"
    """Rank mode: which score picks the answer. 'mean' (per-token) by default: summed log-probability favours
    short names ("rose" wins on random models); 'sum' and 'prior' (sum minus the image-free prior) are reported too."""
    max_new_tokens: int = 32
    seed: int = 0
    """Seeds every random prompt choice (option order, distractors, positive vs negative), per image id."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.score not in ("sum", "mean", "prior"):
            raise ConfigError(f"score must be sum, mean or prior, got {self.score!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError(
                f"batch_size and max_new_tokens must be >= 1, got {self.batch_size}, {self.max_new_tokens}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or unset), got {self.limit}")
        from fgvlm.prompts import check_options

        try:
            check_options(self.task, self.task_options)
        except ValueError as err:
            raise ConfigError(f"task_options: {err}") from None


def prepare_run(run: RunDir, cfg: EvalConfig, ids: list[str]) -> int:
    """Check a partial run's predictions; return the number of images already done (a multiple of the batch size)."""
    predictions = run / PREDICTIONS
    done = run.read_jsonl(PREDICTIONS)
    for index, record in enumerate(done):
        if index >= len(ids) or record.get("id") != ids[index]:
            raise ConfigError(
                f"{predictions}: line {index + 1} has id {record.get('id')!r}, expected "
                f"{ids[index] if index < len(ids) else 'no more lines'}; cannot resume this run"
            )
    keep = len(done) // cfg.batch_size * cfg.batch_size if len(done) < len(ids) else len(ids)
    if keep < len(done) or (predictions.exists() and not done):
        keep_first_lines(predictions, keep)
    return keep


def _progress(total: int, completed: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from fgvlm.progress import ReportingProgress

    speed = TextColumn("{task.fields[rate]}")
    progress = ReportingProgress(
        TextColumn("eval"), BarColumn(), MofNCompleteColumn(), speed, TimeRemainingColumn(), disable=not enabled
    )
    task = progress.add_task("eval", total=total, completed=completed, rate="")
    return progress, task


def _run_batches(
    cfg: EvalConfig, split: Any, total: int, start: int, scorer: Any, backend: Any, run: RunDir, group: ProcessGroup
) -> tuple[int, float]:
    """Evaluate images ``start..total-1`` batch by batch; returns (images done here, seconds)."""
    size = cfg.batch_size
    batches = range(-(-start // size), -(-total // size))  # start is batch-aligned or == total
    progress, bar = _progress(total, start, group.is_main)
    began, done = time.perf_counter(), 0
    with progress:
        for first in range(batches.start, batches.stop, group.world_size):
            mine = first + group.rank
            records: list[dict[str, Any]] = []
            if mine < batches.stop:
                samples = [split[i] for i in range(mine * size, min(total, (mine + 1) * size))]
                if cfg.mode == "generate":
                    records = scorer.generate(backend, samples, cfg.max_new_tokens)
                else:
                    records = scorer.rank(backend, samples)
            for rank_records in group.gather(records):  # rank order = batch order = dataset order
                if group.is_main and rank_records:
                    run.append_jsonl(PREDICTIONS, rank_records)
                done += len(rank_records)
            rate = done / max(time.perf_counter() - began, 1e-9)
            progress.update(bar, completed=start + done, rate=f"{rate:.2f} img/s")
    return done, time.perf_counter() - began


def summarize(run: RunDir, cfg: EvalConfig, dataset: Any, scorer: Any, speed: float | None) -> dict[str, Any]:
    """metrics.json and confusion.json from the whole predictions.jsonl."""
    from fgvlm.eval.metrics import classification_metrics, write_confusion

    records = run.read_jsonl(PREDICTIONS)
    labels = [r["label"] for r in records]
    preds = [r["pred"] for r in records]
    class_names = scorer.metric_class_names or dataset.class_names
    ranked = cfg.mode == "rank" and scorer.reports_topk  # top-5 of <= 5 candidates is always 1.0: null instead
    extra: dict[str, Any] = {"images_per_s": speed, "mode": cfg.mode, "task": cfg.task}
    if cfg.mode == "rank":
        extra["score"] = cfg.score
        extra["accuracy_by_score"] = {
            kind: sum(r["pred_by_score"][kind] == r["label"] for r in records) / max(1, len(records))
            for kind in ("sum", "mean", "prior")
        }
    extra.update(scorer.kind.metric_extras(labels))
    metrics = classification_metrics(
        labels,
        preds,
        class_names,
        topk=[[label for label, _ in r["topk"]] for r in records] if ranked else None,
        preds_lenient=[r["pred_lenient"] for r in records] if cfg.mode == "generate" else None,
        extra=extra,
    )
    write_confusion(run / "confusion.json", labels, preds, class_names)
    seconds = time.time() - run.started
    header = results_header("eval", dataset, cfg.split, cfg.model.name, seconds, num_classes=len(class_names))
    return write_results(run, header, metrics)


def evaluate(cfg: EvalConfig, out: str | Path, *, resume: bool = True, backend: Any = None) -> dict[str, Any]:
    """Run a zero-shot evaluation into run directory ``out``; returns the metrics (on every process).

    ``resume``: continue a partial run / return a complete one's metrics (False: start over). ``backend``
    (optional) is an already loaded ``VLMBackend``, used instead of loading ``cfg.model``.
    """
    from fgvlm.data import create_dataset
    from fgvlm.eval.scoring import TaskScorer
    from fgvlm.prompts import object_word

    group = ProcessGroup.from_env()
    try:
        dataset = create_dataset(cfg.data)
        split = dataset.split(cfg.split)
        total = min(len(split), cfg.limit or len(split))
        options = {"object": object_word(cfg.data.dataset), **cfg.task_options}
        try:  # option values (e.g. num_options beyond the class count) fail here, before a model is loaded
            if total:
                TaskScorer(cfg.task, dataset, None, options, cfg.seed, cfg.score).prompt(split.records[0])
        except ValueError as err:
            raise ConfigError(f"task_options: {err}") from None
        opened = ordered_start_run(
            out, cfg, resume=resume, group=group, prepare=lambda run: prepare_run(run, cfg, split.ids[:total])
        )
        if opened.stored is not None:  # complete: its stored metrics
            return opened.stored
        run, start = opened.run, opened.prepared
        backend = backend or create_backend(cfg.model, group)
        scorer = TaskScorer(cfg.task, dataset, getattr(backend, "family", None), options, cfg.seed, cfg.score)
        if group.is_main:
            _write_meta(run, cfg, dataset, backend, scorer, split, total, start, group.world_size)
        run.cost.watch_backend(backend, ("prompt", "generated") if cfg.mode == "generate" else ("prompt",))
        done, seconds = _run_batches(cfg, split, total, start, scorer, backend, run, group)
        run.cost.add_images(done if group.is_main else 0)  # ``done`` counts every rank's images
        run.cost.gather(group)
        metrics = None
        if group.is_main:
            metrics = summarize(run, cfg, dataset, scorer, done / seconds if done else None)
            finish_run(run)
        return group.broadcast(metrics)
    finally:
        group.close()


def _write_meta(
    run: RunDir,
    cfg: EvalConfig,
    dataset: Any,
    backend: Any,
    scorer: Any,
    split: Any,
    total: int,
    start: int,
    world_size: int,
) -> None:
    example = scorer.prompt(split.records[0]) if total else None
    render = getattr(backend, "render_prompt", None)
    prompt = {
        "task": cfg.task,
        "kind": scorer.kind.name,
        "family": example.family if example else None,
        "template": scorer.spec["template"],
        "options": {k: v for k, v in scorer.settings.items() if k != "similarity"},
        "per_image": scorer.prompt_varies,
        "text": example.text if example else None,
        "rendered": render(example.text) if example and render else None,
    }
    run.write_meta(
        command="eval",
        seed=cfg.seed,
        dataset=dataset.describe(),
        model=backend.describe(),
        task=cfg.task,
        mode=cfg.mode,
        prompt=prompt,
        split=cfg.split,
        images=total,
        resumed_at=start or None,
        world_size=world_size,
    )
