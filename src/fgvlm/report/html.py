"""``build_report``: run directories -> one self-contained ``report.html`` (plus ``results.csv`` / ``results.md``).

The page is rendered from ``templates/report.html.jinja`` with autoescaping on, so text from results (answers,
class names, config values) can never become markup; figures and thumbnails are embedded as data URIs, and the
page has no script and loads nothing from the network.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fgvlm.report import figures
from fgvlm.report.cost import cost_summary, hours_text, rate_text
from fgvlm.report.detail import RunDetail, build_detail
from fgvlm.report.protocols import group_rows, harmonic_means
from fgvlm.report.rundirs import ReportError, RunInfo, load_runs
from fgvlm.report.tables import ResultRow, collect_rows, write_results_table

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ReportResult:
    """Where the report went and what it found."""

    html: Path
    csv: Path
    markdown: Path
    rows: list[ResultRow]
    problems: list[str]
    size_bytes: int


def percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = percent
    env.filters["spct"] = lambda v: percent(v, signed=True)
    env.filters["rate"] = rate_text
    env.globals["hours"] = hours_text
    return env


def provenance(runs: list[RunInfo]) -> dict[str, Any]:
    """Who made the report and the runs: versions, git revisions, machines, datasets with split sizes."""
    from importlib import metadata

    from fgvlm.runs import git_revision

    def distinct(values: list[Any]) -> list[str]:
        return sorted({str(v) for v in values if v})

    datasets = {}
    for run in runs:
        described = run.meta.get("dataset")
        if isinstance(described, dict) and described.get("dataset"):
            key = tuple(str(described.get(k)) for k in ("dataset", "protocol", "root", "shots", "shot_seed", "classes"))
            datasets[key] = described
    machines = [
        f"{(r.meta.get('platform') or {}).get('machine')} ({(r.meta.get('platform') or {}).get('cpus')} CPUs)"
        for r in runs
        if isinstance(r.meta.get("platform"), dict)
    ]
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "fgvlm_version": metadata.version("fgvlm") if _installed("fgvlm") else "source",
        "git_revision": git_revision() or "unknown",
        "machine": f"{platform.node()} · {platform.machine()} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()}",
        "run_versions": distinct([(r.meta.get("versions") or {}).get("fgvlm") for r in runs]),
        "run_revisions": distinct([r.meta.get("git_revision") for r in runs]),
        "run_machines": distinct(machines),
        "run_dates": distinct([r.meta.get("created") for r in runs]),
        "datasets": list(datasets.values()),
    }


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def _config_text(run: RunInfo) -> str:
    if not run.config:
        return "(no config.yaml)"
    return yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)


def _details(runs: list[RunInfo], rows: list[ResultRow], detail: list[str]) -> list[RunDetail]:
    """The best complete run (highest accuracy), then the runs asked for by id."""
    by_id = {r.run_id: (r, row) for r, row in zip(runs, rows, strict=True)}
    unknown = [d for d in detail if d not in by_id]
    if unknown:
        raise ReportError(f"--detail {', '.join(unknown)}: no such run; runs: {', '.join(by_id)}")
    scored = [(row.accuracy, r.run_id) for r, row in by_id.values() if row.accuracy is not None and r.predictions]
    chosen = [max(scored)[1]] if scored else []
    chosen += [d for d in detail if d not in chosen]
    return [build_detail(by_id[d][0], by_id[d][1].split) for d in chosen if by_id[d][0].predictions]


def build_report(
    paths: list[str | Path],
    out_dir: str | Path,
    *,
    detail: list[str] | None = None,
    reference: str | None = None,
    reference_values: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
) -> ReportResult:
    """Read the run (or study) directories in ``paths`` and write ``out_dir/report.html`` and the results tables.

    ``detail``: run ids shown in detail besides the best run; ``reference``: the run id deltas compare against;
    ``reference_values``: the reference study's accuracy per run id (see ``collect_rows``); ``labels``: a
    configuration label per run id (a study's ``label``s) in place of the one derived from the run's config.
    """
    runs = load_runs(paths)
    rows = collect_rows(runs, reference, reference_values)
    for row in rows:
        row.configuration = (labels or {}).get(row.run_id, row.configuration)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = write_results_table(rows, out)
    best_detail = _details(runs, rows, detail or [])
    context = {
        "title": f"fgvlm report: {len(runs)} run{'s' if len(runs) != 1 else ''}",
        "provenance": provenance(runs),
        "rows": rows,
        "cost_summary": cost_summary(rows),
        "groups": group_rows(rows),
        "harmonic": harmonic_means(rows),
        "bars": figures.accuracy_bars(rows),
        "curves": [{"run_id": r.run_id, "image": figures.training_curves(r.train_log)} for r in runs if r.train_log],
        "details": best_detail,
        "runs": [{"run_id": r.run_id, "path": str(r.path), "config": _config_text(r), "state": r.state} for r in runs],
        "problems": [f"{r.run_id}: {p}" for r in runs for p in r.problems],
    }
    html = _environment().get_template("report.html.jinja").render(**context)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return ReportResult(path, csv_path, md_path, rows, context["problems"], path.stat().st_size)
