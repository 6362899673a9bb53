"""The model card (``README.md``) of a published run: Hub metadata, a ``model-index`` with the run's numbers, and text.

The metadata and the ``model-index`` are written by ``huggingface_hub``'s own ``ModelCardData`` / ``EvalResult``, so
the Hub (and ``huggingface_hub.ModelCard.load``) reads back exactly the numbers of the run's ``metrics.json``: top-1
accuracy, its 95 % bootstrap interval, top-5 and macro-F1, in percent, with the dataset, split protocol, split,
classes, shots and n. The text gives the recipe, the hardware and the ``cost`` block when the run has one, how to load
the model and the exact command that reproduces it. Nothing in a card depends on the time it was written: staging the
same run twice gives the same bytes (a resumed upload makes the same commit).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fgvlm.report.rundirs import RunInfo

CI_NOTE = "95 % interval: percentile bootstrap over the images (1,000 resamples, fixed seed)."
VERSIONS = ("fgvlm", "transformers", "torch", "peft", "timm", "accelerate", "datasets")


@dataclasses.dataclass
class CardSpec:
    """What a source says about itself; ``render_model_card`` adds the results, cost, reproduction and files."""

    summary: str
    """The first paragraph: what the model is."""
    library_name: str
    pipeline_tag: str
    base_model: str | None
    """Hub id of the model this one derives from (None: not on the Hub, e.g. a tiny local model)."""
    license: str | None
    tags: list[str]
    datasets: list[str]
    recipe: list[str]
    """Markdown bullet lines (without the dash) of how it was trained."""
    usage: str
    """Markdown: how to load and run it."""


def hub_model_id(name: str | None) -> str | None:
    """The Hub id behind a model name: a registry preset's ``hub_id``, or the name itself when it is a hub id.

    A local folder, a tiny preset (built locally) or an unknown name gives None.
    """
    from fgvlm.models.loading import HUB_ID
    from fgvlm.registry import model_presets

    if not name:
        return None
    preset = model_presets().get(name)
    if isinstance(preset, dict):
        return preset.get("hub_id")
    if Path(name).expanduser().exists() or not HUB_ID.match(name):
        return None
    return name


def inherited_license(base: str | None, local: str | None = None) -> str | None:
    """The licence on the base model's card: a local folder's ``README.md``, the hub cache's copy, or (online) the
    Hub's; None when none of them can be read."""
    from huggingface_hub import metadata_load

    candidates: list[Path] = []
    if local and (Path(local).expanduser() / "README.md").is_file():
        candidates.append(Path(local).expanduser() / "README.md")
    if base:
        candidates += _hub_card(base)
    for path in candidates:
        try:
            license_ = (metadata_load(path) or {}).get("license")
        except (OSError, ValueError):
            continue
        if isinstance(license_, str) and license_:
            return license_
    return None


def _hub_card(hub_id: str) -> list[Path]:
    """The base model's README.md from the hub cache, else downloaded when the hub is reachable."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from fgvlm.models.loading import hub_offline

    cached = try_to_load_from_cache(hub_id, "README.md")
    if isinstance(cached, str):
        return [Path(cached)]
    if hub_offline():
        return []
    try:
        return [Path(hf_hub_download(hub_id, "README.md"))]
    except Exception:  # any hub or network failure leaves the licence unknown, never stops publishing
        return []


def run_results(run: RunInfo) -> dict[str, Any]:
    """The numbers and their setting from ``metrics.json`` (with dataset details from meta.json / config.yaml)."""
    metrics = run.metrics or {}
    described = run.meta.get("dataset") if isinstance(run.meta.get("dataset"), dict) else {}
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    ci = metrics.get("ci95") if isinstance(metrics.get("ci95"), list) and len(metrics["ci95"]) == 2 else None
    return {
        "dataset": metrics.get("dataset") or data.get("dataset"),
        "protocol": metrics.get("protocol") or data.get("protocol"),
        "split": metrics.get("split"),
        "classes": metrics.get("num_classes"),
        "shots": described.get("shots", options.get("shots")),
        "n": metrics.get("n"),
        "accuracy": metrics.get("accuracy"),
        "ci95": ci,
        "top5": metrics.get("top5_accuracy"),
        "macro_f1": metrics.get("macro_f1"),
    }


def _percent(value: float) -> float:
    return round(100 * float(value), 2)


def eval_results(results: dict[str, Any], dataset_id: str) -> list[Any]:
    """The run's numbers as ``huggingface_hub.EvalResult`` entries (one per metric), in percent."""
    from huggingface_hub import EvalResult

    setting = {
        "task_type": "image-classification",
        "task_name": "Fine-grained image classification",
        "dataset_type": dataset_id,
        "dataset_name": f"{results['dataset']} ({results['protocol']} protocol)",
        "dataset_config": results["protocol"],
        "dataset_split": results["split"],
        "dataset_args": {
            "protocol": results["protocol"],
            "classes": results["classes"],
            "shots": results["shots"] if results["shots"] is not None else "all",
            "n": results["n"],
        },
    }
    metrics = [("accuracy", "Top-1 accuracy (%)", results["accuracy"])]
    if results["ci95"] is not None:
        metrics += [
            ("accuracy_ci95_lower", "Top-1 accuracy, 95 % CI lower bound (%)", results["ci95"][0]),
            ("accuracy_ci95_upper", "Top-1 accuracy, 95 % CI upper bound (%)", results["ci95"][1]),
        ]
    metrics += [("top_5_accuracy", "Top-5 accuracy (%)", results["top5"]), ("f1", "Macro-F1 (%)", results["macro_f1"])]
    return [
        EvalResult(metric_type=kind, metric_name=name, metric_value=_percent(value), **setting)
        for kind, name, value in metrics
        if isinstance(value, (int, float))
    ]


def results_table(results: dict[str, Any]) -> list[str]:
    """The Results section's markdown table."""

    def pct(value: Any) -> str:
        return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "–"

    accuracy = pct(results["accuracy"])
    if results["ci95"] is not None:
        accuracy += f" ({100 * results['ci95'][0]:.2f}–{100 * results['ci95'][1]:.2f})"
    n = f"{results['n']:,}" if isinstance(results["n"], int) else "–"
    shots = results["shots"] if results["shots"] is not None else "all"
    return [
        "| dataset | protocol | split | classes | shots | n | top-1 accuracy (95 % CI) | top-5 | macro-F1 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {results['dataset']} | {results['protocol']} | {results['split']} | {results['classes']} | {shots} | {n} "
        f"| {accuracy} | {pct(results['top5'])} | {pct(results['macro_f1'])} |",
    ]


def cost_lines(run: RunInfo) -> list[str]:
    """Hardware and cost: the ``cost`` block of metrics.json when present, else what meta.json / done.json say."""
    cost = (run.metrics or {}).get("cost")
    if not isinstance(cost, dict):
        platform = run.meta.get("platform") if isinstance(run.meta.get("platform"), dict) else {}
        wall = (run.done or {}).get("wall_time_s")
        lines = [f"Hardware: {platform.get('machine', '?')} {platform.get('system', '')}, {platform.get('cpus')} CPUs"]
        return lines + ([f"Wall time: {wall:,.0f} s"] if isinstance(wall, (int, float)) else [])
    devices = cost.get("devices") or []
    lines = [f"Hardware: {', '.join(map(str, devices)) or cost.get('device_type', '?')} ({cost.get('device_type')})"]
    if isinstance(cost.get("wall_seconds"), (int, float)):
        hours = cost.get("device_hours")
        extra = f" ({hours:.4g} device-hours on {cost.get('device_count', 1)} device(s))" if hours is not None else ""
        lines.append(f"Wall time: {cost['wall_seconds']:,.0f} s{extra}")
    if isinstance(cost.get("images"), int):
        rate = cost.get("images_per_second")
        lines.append(f"Images: {cost['images']:,}" + (f" ({rate:,.1f} images/s)" if rate is not None else ""))
    tokens, rates = cost.get("tokens") or {}, cost.get("tokens_per_second") or {}
    if tokens:
        parts = [f"{k} {v:,}" + (f" ({rates[k]:,.0f}/s)" if k in rates else "") for k, v in tokens.items()]
        lines.append("Tokens: " + ", ".join(parts))
    memory = cost.get("peak_memory") or {}
    peaks = [f"{memory['rss_bytes'] / 2**30:.1f} GiB RSS"] if memory.get("rss_bytes") else []
    peaks += [f"GPU {b / 2**30:.1f} GiB" for b in memory.get("cuda_max_allocated_bytes") or []]
    if peaks:
        lines.append("Peak memory: " + ", ".join(peaks))
    if cost.get("flops") is not None:
        lines.append(f"FLOPs: {cost['flops']:.3g} ({cost.get('flops_rule', 'counted')})")
    return lines


def reproduce_lines(run: RunInfo, repo_id: str) -> list[str]:
    """The exact command that reruns the run from the uploaded config (``fgvlm.kinds.kind_argv``'s form)."""
    from fgvlm.kinds import KINDS

    versions = run.meta.get("versions") if isinstance(run.meta.get("versions"), dict) else {}
    kind = KINDS.get(run.kind)
    words = " ".join(kind.cli) if kind else str(run.meta.get("command", run.kind))
    name = repo_id.split("/")[-1]
    revision = run.meta.get("git_revision")
    lines = [
        "```bash",
        f"# fgvlm {versions.get('fgvlm')}" + (f", source revision {revision}" if revision else "") + " made this run",
        f"hf download {repo_id} fgvlm/config.yaml --local-dir {name}",
        f"fgvlm {words} --config {name}/fgvlm/config.yaml --out runs/{name}",
        "```",
        "",
        "The config is the run's resolved `config.yaml`: every option, so this command trains the same recipe on the "
        "same split protocol (append `--set data.root=DIR` where your copy of the data lives).",
    ]
    argv = run.meta.get("argv")
    if isinstance(argv, list) and argv:
        lines += ["", f"Originally run as: `fgvlm {' '.join(map(str, argv[1:]))}`"]
    return lines


def render_model_card(run: RunInfo, spec: CardSpec, repo_id: str, folder: Path) -> str:
    """The whole README.md: metadata + model-index (huggingface_hub's writer), then the sections."""
    from huggingface_hub import ModelCardData

    results = run_results(run)
    data = ModelCardData(
        base_model=spec.base_model,
        datasets=spec.datasets or None,
        library_name=spec.library_name,
        pipeline_tag=spec.pipeline_tag,
        license=spec.license,
        tags=spec.tags,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results(results, spec.datasets[0] if spec.datasets else str(results["dataset"])),
    )
    body = [f"# {repo_id.split('/')[-1]}", "", spec.summary, "", "## Results", "", *results_table(results), ""]
    body += [CI_NOTE, "", "## Training", "", *(f"- {line}" for line in spec.recipe)]
    body += ["- The full resolved config is `fgvlm/config.yaml`; the per-step log `fgvlm/train_log.jsonl`.", ""]
    if (folder / "fgvlm" / "training_curves.png").is_file():
        body += ["![Training curves](fgvlm/training_curves.png)", ""]
    body += ["## Hardware and cost", "", *(f"- {line}" for line in cost_lines(run)), ""]
    body += ["## How to use", "", spec.usage, "", "## Reproduce with fgvlm", "", *reproduce_lines(run, repo_id), ""]
    body += ["## Files", "", *files_table(folder), "", "## Framework versions", "", *versions_lines(run), ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def files_table(folder: Path) -> list[str]:
    from fgvlm.publish.staging import human_size, list_files

    rows = [f"| `{f['path']}` | {human_size(f['bytes'])} |" for f in list_files(folder) if f["path"] != "README.md"]
    return ["| file | size |", "| --- | ---: |", *rows]


def versions_lines(run: RunInfo) -> list[str]:
    versions = run.meta.get("versions") if isinstance(run.meta.get("versions"), dict) else {}
    return [f"- {name} {versions[name]}" for name in ("python", *VERSIONS) if versions.get(name)]


def recipe_lines(config: dict[str, Any], rows: tuple[tuple[str, str, Any], ...]) -> list[str]:
    """``label: value`` for each (dotted key, label, condition) row whose key is set in ``config`` and whose
    condition holds: None (always), ``(dotted key, value)`` or a function of the config."""

    def get(key: str) -> Any:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    lines = []
    for key, label, condition in rows:
        value = get(key)
        holds = condition(config) if callable(condition) else condition is None or get(condition[0]) == condition[1]
        if value is None or value == {} or not holds:
            continue
        lines.append(f"{label}: `{value}`")
    return lines
