"""The study's results table, in the reference study's form: ``OUT/results.csv`` and ``OUT/results.md``.

One row per run (in the study's order) that has ``metrics.json``: configuration, accuracy (%), change vs the
reference row (points), the reference study's published number, n, split protocol, 95 % CI, top-5, unmatched rate
and wall time. Runs without results yet appear with empty cells, so a partial study still shows its shape.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fgvlm.study.record import read_record
from fgvlm.study.resolve import Study

COLUMNS = (
    "configuration",
    "accuracy",
    "vs reference",
    "published",
    "n",
    "protocol",
    "95% CI",
    "top-5",
    "unmatched",
    "wall time (s)",
)


def collect_rows(study: Study) -> list[dict[str, Any]]:
    """One plain row per run (numbers in percent, None where unknown)."""
    metrics = {run_id: _metrics(run.out) for run_id, run in study.runs.items()}
    reference = metrics.get(study.spec.reference) if study.spec.reference else None
    rows = []
    for run_id, run in study.runs.items():
        m = metrics[run_id]
        record = read_record(run.out) or {}
        accuracy = _pct(m.get("accuracy"))
        ref = _pct(reference.get("accuracy")) if reference else None
        n = m.get("n")
        ci = m.get("ci95") or [None, None]
        rows.append(
            {
                "id": run_id,
                "configuration": run.spec.name,
                "accuracy": accuracy,
                "vs reference": None if accuracy is None or ref is None else accuracy - ref,
                "published": run.spec.published,
                "n": n,
                "protocol": m.get("protocol") or (run.config_data.get("data") or {}).get("protocol"),
                "95% CI": None if ci[0] is None else [_pct(ci[0]), _pct(ci[1])],
                "top-5": _pct(m.get("top5_accuracy")),
                "unmatched": _pct(m["n_unmatched"] / n) if n and m.get("n_unmatched") is not None else None,
                "wall time (s)": record.get("wall_time_s"),
            }
        )
    return rows


def write_results_table(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Write ``results.csv`` (plain numbers) and ``results.md`` (formatted) under ``out``."""
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *COLUMNS[:6], "ci95_lo", "ci95_hi", *COLUMNS[7:]])
        for row in rows:
            ci = row["95% CI"] or [None, None]
            values = [row["id"], *(row[c] for c in COLUMNS[:6]), *ci, *(row[c] for c in COLUMNS[7:])]
            writer.writerow(["" if v is None else (round(v, 4) if isinstance(v, float) else v) for v in values])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(format_row(row)) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def format_row(row: dict[str, Any]) -> list[str]:
    """The row's cells as text: percentages with two decimals, signed change, CI as lo-hi."""
    ci = row["95% CI"]
    cells = {
        "accuracy": _fmt(row["accuracy"]),
        "vs reference": "" if row["vs reference"] is None else f"{row['vs reference']:+.2f}",
        "published": _fmt(row["published"]),
        "n": "" if row["n"] is None else f"{row['n']:,}",
        "protocol": row["protocol"] or "",
        "95% CI": "" if ci is None else f"{ci[0]:.1f}–{ci[1]:.1f}",
        "top-5": _fmt(row["top-5"]),
        "unmatched": _fmt(row["unmatched"], 1),
        "wall time (s)": "" if row["wall time (s)"] is None else f"{row['wall time (s)']:.0f}",
    }
    return [row["configuration"], *(cells[c] for c in COLUMNS[1:])]


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("configuration", "protocol") else "right")
    for row in rows:
        table.add_row(*format_row(row))
    Console(width=160).print(table)


def _metrics(out: Path) -> dict[str, Any]:
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
