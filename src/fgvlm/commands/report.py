"""``fgvlm report``: one self-contained HTML page (plus results.csv / results.md) from run or study directories."""

from __future__ import annotations

from pathlib import Path

import typer

from fgvlm.commands.common import out_option


def command(
    paths: list[str] = typer.Argument(..., help="Run directories, or study directories holding run directories."),
    out: Path = out_option("Folder to write report.html, results.csv and results.md."),
    detail: list[str] = typer.Option(
        None, "--detail", help="Also show this run (by id = folder name) in detail; repeatable. The best is shown."
    ),
    reference: str = typer.Option(
        None, "--reference", help="Run id the Δ column compares against (default: the first run with metrics)."
    ),
) -> None:
    """Write a report of finished (or unfinished) runs: results table, plots, confusions, galleries, configs.

    Reads only the run directories' files (and the dataset's images for thumbnails); never loads a model.

    Examples:

      fgvlm report runs/zs-rank runs/zs-generate runs/head --out reports/compare

      fgvlm report runs/study --detail zs-generate --reference zs-rank -o runs/study/report
    """
    from fgvlm.report.html import build_report

    result = build_report(paths, out, detail=detail or [], reference=reference)
    for problem in result.problems:
        typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{len(result.rows)} runs -> {result.html} ({result.size_bytes / 1e6:.2f} MB), {result.csv}, {result.markdown}"
    )
