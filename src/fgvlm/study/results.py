"""The study's results table, in the reference study's form, and its HTML report.

Rows come from the report's ``fgvlm.report.tables`` (one ``ResultRow`` per run that has results: accuracy with its
95 % CI, the paired change vs the reference row, top-5, unmatched rate, n, protocol, wall time, images/s and GPU- or
CPU-hours, with the table's total cost below it); the study adds what only it knows: each row's label (its
``configuration``) and the reference study's published number (``reference_value``). ``OUT/results.csv`` and
``OUT/results.md`` hold them in study order; ``OUT/report/`` holds ``fgvlm report``'s page for the same runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fgvlm.report.protocols import protocol_label
from fgvlm.report.rundirs import load_runs
from fgvlm.report.tables import ResultRow, build_row, collect_rows, write_results_table
from fgvlm.runs import read_json, run_done, write_json
from fgvlm.study.resolve import Study

COLUMNS = ("configuration", "accuracy (95% CI)", "vs reference", "published", "n", "protocol", "top-5", "unmatched")


def finished_runs(study: Study) -> list[Path]:
    """Run directories of the study that finished (``done.json`` written last) and have results, in study order: a
    run that failed after writing its metrics is not a result, nor is a kind without results (audits, publishing)."""
    from fgvlm.kinds import get_kind

    finished = [run for run in study.runs.values() if run_done(run.out)]
    return [run.out for run in finished if get_kind(run.spec.kind).results]


def study_rows(study: Study) -> list[ResultRow]:
    """One row per run with results: the report's row, with the study's label and published number."""
    dirs = finished_runs(study)
    if not dirs:
        return []
    runs = load_runs(dirs)
    reference = study.spec.reference
    if reference is not None and any(run.run_id == reference for run in runs):
        rows = collect_rows(runs, reference)
    else:  # the reference row has no results yet: no comparison rather than a comparison with another row
        rows = [build_row(run) for run in runs]
    for row in rows:
        spec = study.runs[row.run_id].spec
        row.configuration = spec.label or row.configuration
        row.reference_value = None if spec.published is None else spec.published / 100
    return rows


def write_study_results(study: Study) -> tuple[list[ResultRow], Path, Path]:
    rows = study_rows(study)
    csv_path, md_path = write_results_table(rows, study.out)
    return rows, csv_path, md_path


def build_study_report(study: Study) -> Path | None:
    """``OUT/report/report.html`` for the study's finished runs (None when no run has results yet).

    The page is rebuilt only when what it shows may have changed (``report_inputs``): a study run again with every
    run complete reuses it, instead of drawing every figure again.
    """
    from fgvlm.report.html import build_report

    dirs = finished_runs(study)
    if not dirs:
        return None
    reference = study.spec.reference if study.spec.reference and study.runs[study.spec.reference].out in dirs else None
    specs = [run.spec for run in study.runs.values()]
    published = {spec.id: spec.published / 100 for spec in specs if spec.published is not None}
    labels = {spec.id: spec.label for spec in specs if spec.label}
    folder = study.out / "report"
    inputs = report_inputs(dirs, {"reference": reference, "published": published, "labels": labels})
    if (folder / "report.html").is_file() and (folder / INPUTS).is_file() and read_json(folder / INPUTS) == inputs:
        return folder / "report.html"
    html = build_report(dirs, folder, reference=reference, reference_values=published, labels=labels).html
    write_json(folder / INPUTS, inputs)
    return html


INPUTS = "inputs.json"
"""Beside the study's report.html: what it was built from (see ``report_inputs``)."""
RUN_INPUTS = ("config.yaml", "meta.json", "metrics.json", "done.json", "predictions.jsonl", "train_log.jsonl")


def report_inputs(dirs: list[Path], study_facts: dict[str, Any]) -> dict[str, Any]:
    """What a study's report shows depends on: each run's result files (size and modification time), the study's
    labels, published numbers and reference, and the report code itself (a newer fgvlm draws the page anew)."""
    import fgvlm.report

    files = {}
    for folder in dirs:
        for name in RUN_INPUTS:
            path = folder / name
            if path.is_file():
                stat = path.stat()
                files[str(path)] = [stat.st_size, stat.st_mtime_ns]
    code = hashlib.sha256()
    for path in sorted(Path(fgvlm.report.__file__).parent.rglob("*")):
        if path.suffix in (".py", ".jinja"):
            code.update(path.name.encode() + path.read_bytes())
    return {"files": files, "study": json.loads(json.dumps(study_facts)), "report_code": code.hexdigest()}


def format_row(row: ResultRow) -> list[str]:
    """Cells in percent: accuracy with its CI, the paired change in points, the published number."""

    def pct(value: float | None, signed: bool = False) -> str:
        return "" if value is None else (f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}")

    accuracy = pct(row.accuracy) + (f" ({pct(row.ci_low)}–{pct(row.ci_high)})" if row.ci_low is not None else "")
    change = "reference" if row.is_reference else pct(row.delta, signed=True)
    n = "" if row.n is None else f"{row.n:,}"
    protocol = protocol_label(row) if row.protocol else ""
    return [row.configuration, accuracy, change, pct(row.reference_value), n, protocol, pct(row.top5)] + [
        pct(row.unmatched_rate)
    ]


def print_table(rows: list[ResultRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from fgvlm.report.cost import cost_summary, hours_text, rate_text

    table = Table(title=title)
    for column in (*COLUMNS, "wall s", "images/s", "GPU/CPU hours"):
        table.add_column(column, justify="left" if column in ("configuration", "protocol") else "right")
    for row in rows:
        wall = "" if row.wall_time_s is None else f"{row.wall_time_s:.0f}"
        table.add_row(
            *format_row(row), wall, rate_text(row.images_per_second), hours_text(row.device_hours, row.device_type)
        )
    console = Console(width=180)
    console.print(table)
    if cost_summary(rows):
        console.print(cost_summary(rows), markup=False, highlight=False)
