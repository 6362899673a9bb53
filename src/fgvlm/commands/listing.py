"""``fgvlm list datasets|models|tasks``: what is registered (reads data tables only; imports no model code)."""

from __future__ import annotations

import json
from enum import Enum

import typer


class What(str, Enum):
    datasets = "datasets"
    models = "models"
    tasks = "tasks"


def dataset_row(cls: type) -> dict[str, str]:
    """What a dataset class says about itself: object word, protocols, CoOp split file, offline, download."""
    return {
        "object word": cls.object_word,
        "protocols": ", ".join(cls.available_protocols()),
        "coop split file": cls.coop_split_file or ("dataset's own" if "coop" in cls.protocols else "-"),
        "offline": "yes" if cls.offline else "no",
        "download": "yes" if cls.downloadable else cls.files_from,
        "implementation": f"{cls.__module__}:{cls.__name__}",
    }


def command(
    what: What = typer.Argument(..., help="datasets, models or tasks"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """List registered datasets, model presets or prompt tasks.

    Examples:

      fgvlm list models

      fgvlm list datasets --json
    """
    from rich.console import Console
    from rich.table import Table

    from fgvlm import registry

    if what is What.datasets:
        rows = {name: dataset_row(registry.dataset_class(name)) for name in registry.DATASETS}
    elif what is What.models:
        rows = {k: v for k, v in registry.model_presets().items() if not k.startswith("_")}
    else:
        rows = {k: v for k, v in registry.prompt_tasks().items() if not k.startswith("_")}
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = sorted({key for row in rows.values() for key in row if not isinstance(row[key], (dict, list))})
    table = Table(title=f"fgvlm {what.value}")
    table.add_column("name", style="bold")
    for column in columns:
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(name, *[str(row.get(c, "")) for c in columns])
    Console().print(table)
