"""One results row per run: the table of the HTML report and the study's ``results.csv`` / ``results.md``.

``collect_rows(run_dirs)`` builds the rows (the report and ``fgvlm study run`` share it) and
``write_results_table(rows, out_dir)`` writes both files. Row fields (``ResultRow``), in CSV column order:

- ``run_id``: the run folder's name (parent/name where two share a name); ``path``: the run directory;
- ``state``: ``complete``, or ``incomplete`` (no metrics yet, or no ``done.json`` marker);
- ``kind`` (eval, head-train, cnn-train, sft, ...) and ``configuration``: a short description (model, mode, task,
  architecture, pooling) of what differs between runs;
- ``dataset``, ``protocol``, ``split``;
- ``accuracy`` with its 95 % bootstrap interval ``ci_low``/``ci_high`` and ``accuracy_stderr`` (bootstrap standard
  error; empty for runs written before it was recorded);
- ``chance``: accuracy of a uniform guess among the answer choices;
- ``delta``: accuracy minus the reference row's on the images both evaluated, ``delta_low``/``delta_high`` its paired
  bootstrap 95 % interval and ``delta_n`` the number of shared images (empty on the reference row itself);
- ``reference_value``: the reference study's published number for this configuration: a ``reference`` value the run
  records (in metrics.json, meta.json or config.yaml: a number, or a mapping with ``accuracy``), else the caller's
  ``reference_values[run_id]``;
- ``top5``, ``macro_f1``, ``unmatched_rate`` (answers matching no class / n), ``n`` (images);
- ``wall_time_s``: ``done.json``'s wall time, else the metrics header's ``seconds``;
- ``is_reference``: whether this row is the one the deltas compare against;
- ``shots``, ``shot_seed``, ``classes``: the protocol's k-shot training set and class subset (empty: every image,
  all classes); ``setup``: the run's derived description (``configuration`` may be a study's label instead);
- ``images_per_second``, ``device_hours`` and ``device_type`` (``cuda``, ``cpu``): from the run's ``cost`` block
  (``fgvlm.report.cost``; empty for runs without one).

Rows of different protocols are grouped under their own headings in ``results.md`` and a model with both a base
and a new run gets its harmonic mean (``fgvlm.report.protocols``). A paired difference is computed only between runs
that evaluated the same images and classes (``evaluated_data``).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvlm.report.cost import cost_summary, hours_text, rate_text, row_cost
from fgvlm.report.protocols import protocol_fields
from fgvlm.report.rundirs import ReportError, RunInfo, load_run, load_runs
from fgvlm.report.stats import chance_level, correct_by_id, paired_bootstrap


@dataclass
class ResultRow:
    """One run's line in the results table; see the module docstring for each field."""

    run_id: str
    path: str
    state: str
    kind: str
    configuration: str
    dataset: str | None = None
    protocol: str | None = None
    split: str | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    accuracy_stderr: float | None = None
    chance: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    delta_n: int | None = None
    reference_value: float | None = None
    top5: float | None = None
    macro_f1: float | None = None
    unmatched_rate: float | None = None
    n: int | None = None
    wall_time_s: float | None = None
    is_reference: bool = False
    shots: int | None = None
    shot_seed: int | None = None
    classes: str | None = None
    setup: str = ""
    images_per_second: float | None = None
    device_hours: float | None = None
    device_type: str | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_name(run: RunInfo) -> str | None:
    """The model's registry name or path: the metrics header's, meta.json's model entry, or config.yaml's."""
    header = (run.metrics or {}).get("model")
    if isinstance(header, str):
        return header
    for source in (run.meta.get("model"), run.config.get("model")):
        if isinstance(source, dict) and source.get("name"):
            return str(source["name"])
        if isinstance(source, str):
            return source
    return None


def describe_model(name: str | None, depth: int = 0) -> str | None:
    """A model as a reader knows it: its registry name, or, for a model another run wrote (``RUN/model``), what
    made it, e.g. 'sft of tiny-qwen3-vl (objective classify)' rather than the folder's path."""
    if name is None or depth > 3:
        return name
    maker = Path(name).parent
    if not (maker / "config.yaml").is_file() or not (maker / "meta.json").is_file():
        return name
    made_by = load_run(maker)
    objective = made_by.value("objective")
    base = describe_model(model_name(made_by), depth + 1)
    return f"{made_by.kind} of {base}" + (f" (objective {objective})" if objective else "")


def describe_run(run: RunInfo) -> str:
    """What distinguishes this run, e.g. 'tiny-qwen3-vl · rank · open-qa' or 'test_resnet · pretrained none'."""
    metrics = run.metrics or {}
    cnn = run.kind.startswith("cnn")
    parts = [None if cnn else describe_model(model_name(run)), run.value("arch")]
    parts += [run.value("mode") if run.kind == "eval" else None, run.value("task")]
    objective = run.value("objective")
    parts += [None if objective is None else f"objective {objective}"]
    if run.kind.startswith("head"):
        layer = run.value("layer")
        parts += [metrics.get("pooling") or run.config.get("pooling"), None if layer is None else f"layer {layer}"]
    if cnn:
        pretrained = metrics.get("pretrained")
        parts += [None if pretrained is None else f"pretrained {pretrained}"]
        parts += [name for name in ("mixup", "cutmix") if run.config.get(name)]
    options = run.config.get("task_options")
    parts += [f"{k}={v}" for k, v in sorted(options.items())] if isinstance(options, dict) else []
    return " · ".join(str(p) for p in parts if p not in (None, ""))


def reference_value(run: RunInfo) -> float | None:
    """The reference study's number recorded with the run (``reference``: a number or ``{accuracy: ...}``)."""
    value = run.value("reference")
    if isinstance(value, dict):
        value = value.get("accuracy")
    return _number(value)


def _wall_time(run: RunInfo) -> float | None:
    if run.done and _number(run.done.get("wall_time_s")) is not None:
        return float(run.done["wall_time_s"])
    return _number((run.metrics or {}).get("seconds"))


def build_row(run: RunInfo) -> ResultRow:
    """The row of one run, without the comparison to the reference (``collect_rows`` adds it)."""
    metrics = run.metrics or {}
    ci = metrics.get("ci95") if isinstance(metrics.get("ci95"), list) and len(metrics["ci95"]) == 2 else [None, None]
    n = metrics.get("n") if isinstance(metrics.get("n"), int) else None
    unmatched = metrics.get("n_unmatched")
    dataset = run.value("dataset")
    return ResultRow(
        run_id=run.run_id,
        path=str(run.path),
        state=run.state,
        kind=run.kind,
        configuration=describe_run(run),
        dataset=dataset.get("dataset") if isinstance(dataset, dict) else dataset,
        protocol=run.value("protocol") if isinstance(run.value("protocol"), str) else None,
        split=_split(run),
        accuracy=_number(metrics.get("accuracy")),
        ci_low=_number(ci[0]),
        ci_high=_number(ci[1]),
        accuracy_stderr=_number(metrics.get("accuracy_stderr")),
        chance=chance_level(run),
        reference_value=reference_value(run),
        top5=_number(metrics.get("top5_accuracy")),
        macro_f1=_number(metrics.get("macro_f1")),
        unmatched_rate=unmatched / n if isinstance(unmatched, int) and n else None,
        n=n,
        wall_time_s=_wall_time(run),
        setup=describe_run(run),
        **protocol_fields(run),
        **row_cost(run.metrics),
    )


def _split(run: RunInfo) -> str | None:
    for value in ((run.metrics or {}).get("split"), run.meta.get("split"), run.config.get("eval_split")):
        if isinstance(value, str):
            return value
    return run.config.get("split") if isinstance(run.config.get("split"), str) else None


def _data(run: RunInfo) -> Any:
    """What decides which image an id names: meta.json's dataset description (name, root, protocol, generator
    settings) without its bad-image bookkeeping, else config.yaml's data section."""
    described = run.meta.get("dataset")
    if isinstance(described, dict):
        ignored = ("on_bad_image", "skipped", "skipped_images", "splits", "protocol_description")
        return {k: v for k, v in described.items() if k not in ignored}
    data = run.config.get("data")
    return {k: v for k, v in data.items() if k != "on_bad_image"} if isinstance(data, dict) else None


SAMPLED_ONLY = ("shots", "shot_seed", "selected_ids")
"""Protocol entries that choose train/val images only: the test split is never sampled."""


def evaluated_data(run: RunInfo, split: str | None) -> Any:
    """What decides which images and classes a run evaluated: ``_data`` without the k-shot draw when the split is
    test (never sampled), so a zero-shot run and a 4-shot fine-tuned run on the same test split compare; protocol
    entries at their defaults (all classes, no k-shot) are left out, as runs written before them lack them."""
    data = _data(run)
    if not isinstance(data, dict):
        return data
    dropped = SAMPLED_ONLY if split == "test" else ()
    defaults = {"shots": None, "shot_seed": None, "classes": "all"}
    return {k: v for k, v in data.items() if k not in dropped and not (k in defaults and defaults[k] == v)}


def pick_reference(runs: list[RunInfo], reference: str | None = None) -> RunInfo | None:
    """The run the deltas compare against: ``reference`` (a run id), else the first run with metrics."""
    if reference is not None:
        for run in runs:
            if run.run_id == reference:
                return run
        raise ReportError(f"--reference {reference!r}: no such run; runs: {', '.join(r.run_id for r in runs)}")
    return next((r for r in runs if r.metrics is not None), None)


def collect_rows(
    run_dirs: list[str | Path] | list[RunInfo],
    reference: str | None = None,
    reference_values: dict[str, float] | None = None,
) -> list[ResultRow]:
    """One ``ResultRow`` per run directory (study directories are expanded), deltas against ``reference``.

    ``reference_values`` (run id -> the reference study's accuracy, a fraction) fills ``reference_value`` for runs
    that do not record one themselves; a study runner passes the numbers of its study definition here.

    Deltas are computed only between runs on the same data (dataset, root, protocol, options) and split, over the
    image ids both predicted.
    """
    if run_dirs and all(isinstance(r, RunInfo) for r in run_dirs):
        runs: list[RunInfo] = list(run_dirs)  # type: ignore[arg-type]
    else:
        runs = load_runs(list(run_dirs))  # type: ignore[arg-type]
    rows = [build_row(run) for run in runs]
    for row in rows:
        if row.reference_value is None and reference_values and row.run_id in reference_values:
            row.reference_value = float(reference_values[row.run_id])
    ref = pick_reference(runs, reference)
    if ref is None:
        return rows
    ref_row = rows[runs.index(ref)]
    ref_row.is_reference = True
    ref_correct = correct_by_id(ref)
    for run, row in zip(runs, rows, strict=True):
        same_split = (row.dataset, row.split) == (ref_row.dataset, ref_row.split)
        same_images = same_split and evaluated_data(run, row.split) == evaluated_data(ref, ref_row.split)
        if run is ref or run.metrics is None or not same_images:
            continue
        paired = paired_bootstrap(correct_by_id(run), ref_correct)
        if paired is not None:
            row.delta, row.delta_low, row.delta_high, row.delta_n = paired.difference, paired.low, paired.high, paired.n
    return rows


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def markdown_table(rows: list[ResultRow]) -> str:
    """The results as a Markdown table (percentages, one decimal)."""
    header = "| run | configuration | accuracy % (95 % CI) | chance % | Δ vs ref (95 % CI) | reference % | top-5 % "
    header += "| macro-F1 | unmatched % | n | wall s | images/s | GPU/CPU hours |"
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        ci = f" ({_percent(r.ci_low)}–{_percent(r.ci_high)})" if r.ci_low is not None else ""
        if r.is_reference:
            delta = "reference"
        elif r.delta is not None:
            delta = f"{_percent(r.delta, True)} ({_percent(r.delta_low, True)}, {_percent(r.delta_high, True)})"
        else:
            delta = "–"
        cells = [
            r.run_id + ("" if r.state == "complete" else f" ({r.state})"),
            r.configuration,
            _percent(r.accuracy) + ci,
            _percent(r.chance),
            delta,
            _percent(r.reference_value),
            _percent(r.top5),
            f"{r.macro_f1:.3f}" if r.macro_f1 is not None else "–",
            _percent(r.unmatched_rate),
            str(r.n) if r.n is not None else "–",
            f"{r.wall_time_s:.0f}" if r.wall_time_s is not None else "–",
            rate_text(r.images_per_second),
            hours_text(r.device_hours, r.device_type),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_table(rows: list[ResultRow], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` (every field, raw numbers) and ``results.md`` (a readable table) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in dataclasses.fields(ResultRow)]
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in rows:
            writer.writerow([_format(getattr(row, name)) for name in names])
    md_path.write_text(results_markdown(rows))
    return csv_path, md_path


def results_markdown(rows: list[ResultRow]) -> str:
    """``results.md``: the table (one section per protocol when rows differ in protocol), then the base-to-new
    harmonic means when a model has both."""
    from fgvlm.report.protocols import harmonic_means, markdown_groups, markdown_harmonic

    text = markdown_groups(rows, markdown_table)
    extra = markdown_harmonic(harmonic_means(rows))
    cost = cost_summary(rows)  # the whole table's, below every section
    return text + ("\n" + extra if extra else "") + (f"\n{cost}\n" if cost else "")
