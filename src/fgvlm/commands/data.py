"""``fgvlm data info|download|audit``: inspect, fetch and check datasets."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Inspect, download and audit datasets.", no_args_is_help=True)

DATASET_HELP = "Registry name (see `fgvlm list datasets`)."
ROOT_HELP = "Folder holding the data (default: the dataset's own, e.g. ~/.cache/fgvlm/data/flowers102)."
SET_HELP = "Dataset option as KEY=VALUE (e.g. num_classes=12); repeatable."


def parse_options(items: list[str]) -> dict:
    """``--option k=v`` pairs -> dict (values read as YAML, so numbers stay numbers)."""
    from fgvlm.config import parse_override

    out = {}
    for item in items:
        path, value = parse_override(item)
        out[".".join(path)] = value
    return out


@app.command()
def info(
    dataset: str = typer.Option(..., "--dataset", "-d", help=DATASET_HELP),
    root: str = typer.Option(None, help=ROOT_HELP),
    protocol: str = typer.Option("official", help="Split protocol (flowers102: official, trainval, swapped)."),
    option: list[str] = typer.Option([], "--option", "-o", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Classes, images per split and per-class min/median/max.

    Examples:

      fgvlm data info --dataset flowers102 --root ../shared/data/flowers102-mini --json

      fgvlm data info --dataset flowers102 --root ../shared/data/flowers102-meta --protocol swapped

      fgvlm data info --dataset synthflowers -o num_classes=8
    """
    from fgvlm.data import create_dataset

    ds = create_dataset(dataset=dataset, root=root, protocol=protocol, options=parse_options(option))
    sizes = ds.split_sizes()
    per_class = {split: ds.per_class_counts(split) for split in sizes}
    if as_json:
        summary = {"dataset": ds.name, "protocol": ds.protocol, "num_classes": ds.num_classes, "splits": sizes,
                   "root": str(ds.root) if ds.root else None, "per_class": per_class}
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{ds.name} — protocol {ds.protocol}: {ds.num_classes} classes")
    for column in ("split", "images", "per class min", "median", "max"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, n in sizes.items():
        c = per_class[split]
        table.add_row(split, str(n), str(c["min"]), str(c["median"]), str(c["max"]))
    console = Console()
    console.print(table)
    console.print(f"root: {ds.root}\n{ds.protocol_docs.get(ds.protocol, '')}")
