"""``fgvlm export``: run results in other tools' formats (``lmms-eval``: lm-evaluation-harness / lmms-eval JSON)."""

from __future__ import annotations

from pathlib import Path

import typer

from fgvlm.commands.common import out_option

app = typer.Typer(help="Export run results in other tools' formats.", no_args_is_help=True)


@app.command("lmms-eval")
def lmms_eval(
    paths: list[str] = typer.Argument(..., help="Run directories, or study directories holding run directories."),
    out: Path = out_option("Output folder (one subfolder per model, as lmms-eval writes)."),
) -> None:
    """Write results_<date>.json and samples_<task>_<date>.jsonl in lm-evaluation-harness / lmms-eval's schema.

    Examples:

      fgvlm export lmms-eval runs/zs-rank runs/zs-generate --out exports/lmms

      fgvlm export lmms-eval runs/study -o exports/study
    """
    from fgvlm.report.export import export_lmms_eval

    for path in export_lmms_eval(paths, out):
        typer.echo(str(path))
