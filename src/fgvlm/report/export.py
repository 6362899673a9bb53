"""Export runs in lm-evaluation-harness / lmms-eval's output format, so fgvlm results sit beside users' others.

Layout (as their ``EvaluationTracker`` writes it): ``OUT/<model_name_sanitized>/results_<date>.json`` with
``results.{task}."acc,none"`` / ``"acc_stderr,none"`` (and ``top5_acc``, ``macro_f1``), ``configs``, ``versions``,
``n-shot``, ``higher_is_better``, ``n-samples`` and ``config``; and one ``samples_<task>_<date>.jsonl`` per task with
``doc_id``, ``doc``, ``target``, ``arguments`` (``gen_args_N.arg_M``), ``resps``, ``filtered_resps``, ``filter``,
``metrics``, ``acc`` and the three hashes. Runs of one model share a results file (one task each). A run that
recorded its cost (metrics.json's ``cost`` block) adds ``images_per_second,none`` and ``device_hours,none`` to its
task's results (stderr "N/A", like top-5) and the whole block as ``configs.{task}.metadata.fgvlm_cost``.

``acc_stderr`` is the run's bootstrap standard error (``accuracy_stderr`` in metrics.json); runs written before it
was recorded get the binomial standard error sqrt(p(1-p)/(n-1)), which lm-evaluation-harness itself uses for means.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fgvlm.report.cost import cost_block, export_fields
from fgvlm.report.detail import class_names
from fgvlm.report.protocols import protocol_fields
from fgvlm.report.rundirs import ReportError, RunInfo, load_runs
from fgvlm.report.tables import model_name

TASK_VERSION = 1.0  # version of the task definitions below; bump when their meaning changes
RESULT_SECTIONS = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")


def sanitize(name: str) -> str:
    """lm-evaluation-harness's sanitizing of model names for folder names ("org/model" -> "org__model")."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def task_name(run: RunInfo) -> str:
    """e.g. ``fgvlm_synthflowers_official_test_open_qa_rank`` (dataset, protocol, split, task, mode),
    ``fgvlm_flowers102_coop_4shot_seed1_base_test_head`` or ``..._cnn_train``: the protocol travels in the name."""
    parts = [run.value("dataset"), *protocol_parts(run), _split(run), run.value("task"), run.value("mode") or run.kind]
    if isinstance(parts[0], dict):
        parts[0] = parts[0].get("dataset")
    return "fgvlm_" + "_".join(re.sub(r"\W+", "_", str(p)).strip("_") for p in parts if p)


def protocol_parts(run: RunInfo) -> list[str | None]:
    """The protocol, then '<K>shot_seed<S>' for a k-shot training set and the class subset unless it is all."""
    fields = protocol_fields(run)
    shots = f"{fields['shots']}shot_seed{fields['shot_seed']}" if fields["shots"] is not None else None
    classes = fields["classes"] if fields["classes"] not in (None, "all") else None
    return [run.value("protocol") or "official", shots, classes]


def _split(run: RunInfo) -> str | None:
    value = (run.metrics or {}).get("split") or run.meta.get("split") or run.config.get("split")
    return value if isinstance(value, str) else None


def standard_error(metrics: dict[str, Any]) -> float:
    """The bootstrap standard error when recorded, else the binomial one with lm-eval's n-1."""
    if isinstance(metrics.get("accuracy_stderr"), (int, float)):
        return float(metrics["accuracy_stderr"])
    p, n = float(metrics["accuracy"]), int(metrics.get("n") or 0)
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_results(run: RunInfo, task: str) -> dict[str, Any]:
    metrics = run.metrics or {}
    entry: dict[str, Any] = {"alias": task, "name": task, "sample_len": metrics.get("n")}
    entry["acc,none"] = metrics["accuracy"]
    entry["acc_stderr,none"] = standard_error(metrics)
    if isinstance(metrics.get("top5_accuracy"), (int, float)):
        entry["top5_acc,none"] = metrics["top5_accuracy"]
        entry["top5_acc_stderr,none"] = "N/A"
    entry["macro_f1,none"] = metrics.get("macro_f1")
    entry["macro_f1_stderr,none"] = "N/A"
    entry.update(export_fields(metrics))  # the run's throughput and device-hours, when it recorded them
    return entry


def task_config(run: RunInfo, task: str) -> dict[str, Any]:
    """The ``configs`` entry: what lm-eval's task YAML would say, plus fgvlm's resolved config."""
    prompt = run.meta.get("prompt") if isinstance(run.meta.get("prompt"), dict) else {}
    described = run.meta.get("dataset") if isinstance(run.meta.get("dataset"), dict) else {}
    generate = run.value("mode") == "generate"
    metric_list = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    metric_list += [{"metric": "macro_f1", "aggregation": "f1", "higher_is_better": True}]
    return {
        "task": task,
        "dataset_path": described.get("root"),
        "dataset_name": run.value("dataset") if isinstance(run.value("dataset"), str) else None,
        "test_split": _split(run),
        "output_type": "generate_until" if generate else "multiple_choice",
        "doc_to_text": prompt.get("text") if not prompt.get("per_image") else prompt.get("template"),
        "num_fewshot": 0,
        "metric_list": metric_list,
        "metadata": {
            "version": TASK_VERSION,
            "fgvlm_run": str(run.path),
            "fgvlm_kind": run.kind,
            **({"fgvlm_cost": cost_block(run.metrics)} if cost_block(run.metrics) else {}),
        },
        "fgvlm_config": run.config,
    }


def sample_records(run: RunInfo) -> list[dict[str, Any]]:
    """One lm-eval sample per prediction, in the order of ``predictions.jsonl``."""
    ids = [p[key] for p in run.predictions for key in ("label", "pred") if isinstance(p.get(key), int)]
    names = class_names(run, max(ids, default=-1) + 1)
    gen_kwargs = {"max_new_tokens": run.config.get("max_new_tokens")} if run.value("mode") == "generate" else {}
    prompt = run.meta.get("prompt") if isinstance(run.meta.get("prompt"), dict) else {}
    text = str(prompt.get("text") or "")
    records = []
    for doc_id, p in enumerate(run.predictions):
        pred, label = p.get("pred"), p["label"]
        target = names[label] if isinstance(label, int) and 0 <= label < len(names) else str(label)
        predicted = names[pred] if isinstance(pred, int) and 0 <= pred < len(names) else None
        response = p.get("answer") if isinstance(p.get("answer"), str) else (predicted or "")
        doc = {"id": p["id"], "label": label, "class_name": target}
        records.append(
            {
                "doc_id": doc_id,
                "doc": doc,
                "target": target,
                "arguments": {"gen_args_0": {"arg_0": text, "arg_1": gen_kwargs}},
                "resps": [[response]],
                "filtered_resps": [predicted if predicted is not None else "[unmatched]"],
                "filter": "none",
                "metrics": ["acc"],
                "acc": float(pred is not None and pred == label),
                "doc_hash": _sha(json.dumps(doc, sort_keys=True)),
                "prompt_hash": _sha(text),
                "target_hash": _sha(target),
            }
        )
    return records


def _general_config(run: RunInfo) -> dict[str, Any]:
    model = run.meta.get("model") if isinstance(run.meta.get("model"), dict) else {}
    return {
        "model": "fgvlm",
        "model_args": model.get("local_path") or model.get("hub_id") or model_name(run),
        "model_num_parameters": model.get("num_parameters"),
        "model_dtype": model.get("dtype"),
        "model_revision": model.get("revision"),
        "model_sha": model.get("fingerprint"),
        "batch_size": run.config.get("batch_size"),
        "device": model.get("device"),
        "limit": run.config.get("limit"),
        "bootstrap_iters": 1000,
        "random_seed": run.meta.get("seed"),
        "numpy_seed": run.meta.get("seed"),
        "torch_seed": run.meta.get("seed"),
    }


def _add_task(results: dict[str, Any], run: RunInfo, folder: Path, date_id: str) -> None:
    task = task_name(run)
    if task in results["results"]:  # two runs of one model on one task: keep both, told apart by run id
        task = f"{task}_" + re.sub(r"\W+", "_", run.run_id)
    metrics = run.metrics or {}
    results["results"][task] = task_results(run, task)
    results["configs"][task] = task_config(run, task)
    results["versions"][task] = TASK_VERSION
    results["n-shot"][task] = 0
    results["higher_is_better"][task] = {"acc": True, "top5_acc": True, "macro_f1": True}
    if cost_block(metrics):
        results["higher_is_better"][task].update(images_per_second=True, device_hours=False)
    described = run.meta.get("dataset") if isinstance(run.meta.get("dataset"), dict) else {}
    splits = described.get("splits") if isinstance(described.get("splits"), dict) else {}
    results["n-samples"][task] = {"original": splits.get(_split(run), metrics.get("n")), "effective": metrics.get("n")}
    with (folder / f"samples_{task}_{date_id}.jsonl").open("w", encoding="utf-8") as fh:
        for record in sample_records(run):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _wall_time(runs: list[RunInfo]) -> str | None:
    seconds = [r.done.get("wall_time_s") if r.done else (r.metrics or {}).get("seconds") for r in runs]
    known = [s for s in seconds if isinstance(s, (int, float))]
    return str(sum(known)) if known else None


def export_lmms_eval(paths: list[str | Path], out_dir: str | Path) -> list[Path]:
    """Write results and samples files for every finished run under ``paths``; returns the results files."""
    runs = [r for r in load_runs(paths) if r.complete and r.predictions]
    if not runs:
        raise ReportError(f"{', '.join(map(str, paths))}: no finished run with predictions.jsonl to export")
    date_id = datetime.now().isoformat().replace(":", "-")
    by_model: dict[str, list[RunInfo]] = {}
    for run in runs:
        by_model.setdefault(model_name(run) or run.value("arch") or run.run_id, []).append(run)
    written = []
    for name, model_runs in by_model.items():
        folder = Path(out_dir) / sanitize(name)
        folder.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {key: {} for key in RESULT_SECTIONS}
        for run in model_runs:
            _add_task(results, run, folder, date_id)
        first = model_runs[0]
        results.update(
            config=_general_config(first),
            git_hash=first.meta.get("git_revision"),
            date=time.time(),
            model_source="fgvlm",
            model_name=name,
            model_name_sanitized=sanitize(name),
            fgvlm_version=(first.meta.get("versions") or {}).get("fgvlm"),
            total_evaluation_time_seconds=_wall_time(model_runs),
        )
        path = folder / f"results_{date_id}.json"
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        written.append(path)
    return written
