"""``fgvlm data info|download|audit``: inspect, fetch and check datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fgvlm.commands.common import (
    config_option,
    limit_option,
    out_option,
    protocol_option,
    resume_option,
    set_option,
    split_file_option,
)

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
    protocol: str = protocol_option("official"),
    split_file: str = split_file_option(),
    shots: int = typer.Option(None, "--shots", help="k-shot: K images per class from train, min(K, 4) from val."),
    shot_seed: int = typer.Option(1, "--shot-seed", help="Seed of the k-shot draw (CoOp: 1, 2, 3)."),
    classes: str = typer.Option("all", "--classes", help="Class subset: all, base (first half) or new (the rest)."),
    option: list[str] = typer.Option([], "--option", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Classes, images per split and per class, for a protocol: check it before spending GPU time on it.

    The JSON holds the split sizes, the number of classes, per-class min/median/max and every class's count
    (``class_counts``), and with --shots the chosen ids.

    Examples:

      fgvlm data info --dataset flowers102 --root ../shared/data/flowers102-mini --json

      fgvlm data info --dataset flowers102 --root ../shared/data/flowers102-meta --protocol swapped

      fgvlm data info -d flowers102 --root ~/data/flowers102 --protocol coop --shots 4 --shot-seed 1 --classes base

      fgvlm data info -d oxford-pets --root ~/data --protocol split-file --split-file my_split.json

      fgvlm data info --dataset synthflowers --option num_classes=8 --shots 4 --classes new
    """
    from fgvlm.data import create_dataset

    ds = create_dataset(
        dataset=dataset,
        root=root,
        protocol=protocol,
        split_file=split_file,
        shots=shots,
        shot_seed=shot_seed,
        classes=classes,
        options=parse_options(option),
    )
    sizes = ds.split_sizes()
    per_class = {split: ds.per_class_counts(split) for split in sizes}
    if as_json:
        described = ds.describe()
        summary = {
            "dataset": ds.name,
            **ds.protocol_header(),
            "num_classes": ds.num_classes,
            "splits": sizes,
            "root": str(ds.root) if ds.root else None,
            "per_class": per_class,
            "class_counts": {split: ds.class_counts(split) for split in sizes},
            "selected_ids": described.get("selected_ids"),
            "class_labels": described.get("class_labels"),
            "split_file": described.get("split_file"),
        }
        typer.echo(json.dumps(summary))
        return
    print_info(ds, sizes, per_class)


def print_info(ds, sizes: dict[str, int], per_class: dict[str, dict]) -> None:
    """The split table, every class's count per split (in label order), the root and the protocol's description."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{ds.name} — protocol {ds.protocol_label()}: {ds.num_classes} classes")
    for column in ("split", "images", "per class min", "median", "max"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, n in sizes.items():
        c = per_class[split]
        table.add_row(split, str(n), str(c["min"]), str(c["median"]), str(c["max"]))
    counts = Table(title="images per class")
    counts.add_column("class")
    for split in sizes:
        counts.add_column(split, justify="right")
    by_split = {split: ds.class_counts(split) for split in sizes}
    for name in ds.class_names:
        counts.add_row(name, *[str(by_split[split][name]) for split in sizes])
    console = Console()
    console.print(table)
    console.print(counts)
    console.print(f"root: {ds.root}\n{ds.protocol_description()}")


@app.command()
def download(
    dataset: str = typer.Argument(..., help="Dataset to fetch (see `fgvlm list datasets`)."),
    root: str = typer.Option(None, help=ROOT_HELP),
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="Mirror to fetch from (default: the official server; flowers102 also reads $FGVLM_FLOWERS102_URL).",
    ),
) -> None:
    """Fetch a dataset's official files, check their md5 and extract them safely; say where CoOp's split file goes.

    Files already in place with the right md5 are not fetched again, and the images are not re-extracted once a
    complete extraction is recorded, so a second run downloads nothing. Datasets that cannot be downloaded
    (stanford-cars: the official URL is dead; cub200) say where to get the files. CoOp's split files are published
    on a file-sharing drive, not on the datasets' servers: the command says where to get them and where to put them.

    Examples:

      fgvlm data download flowers102 --root ~/data/flowers102

      fgvlm data download flowers102 --root ~/data/flowers102 --base-url http://mirror.local/flowers102/

      fgvlm data download oxford-pets --root ~/data
    """
    from fgvlm.data.base import DatasetError
    from fgvlm.registry import dataset_class

    cls = dataset_class(dataset)
    try:
        summary = cls.download(root, base_url)
    except DatasetError as err:
        if cls.coop_split_file is None:
            raise
        raise DatasetError(f"{err} {coop_split_hint(cls, root)}") from None
    fetched = ", ".join(summary["downloaded"]) or "nothing"
    typer.echo(
        f"{dataset}: downloaded {fetched}; already complete: {', '.join(summary['skipped']) or 'nothing'}; "
        f"images {'extracted' if summary['extracted'] else 'already extracted'} in {summary['root']}"
    )
    if cls.coop_split_file is not None:
        typer.echo(coop_split_hint(cls, root))


def coop_split_hint(cls, root: str | None) -> str:
    """Where the dataset's CoOp split file is published and where ``--protocol coop`` looks for it."""
    from fgvlm.data.base import DatasetError
    from fgvlm.data.protocols import coop_file_help

    try:
        folder = cls(root=root).dataset_folder()
    except DatasetError:  # the files are not all there yet: name the folder the dataset's docs give
        folder = Path(root or "ROOT") / getattr(cls, "folder", "")
    return coop_file_help(cls, folder) + " (needed only for --protocol coop)."


@app.command()
def audit(
    dataset: str = typer.Option(None, "--dataset", "-d", help=DATASET_HELP),
    root: str = typer.Option(None, help=ROOT_HELP),
    protocol: str = protocol_option(),
    option: list[str] = typer.Option([], "--option", help=SET_HELP),
    out: Path = out_option("Run directory: audit.json, duplicates.png, config.yaml, meta.json, done.json."),
    threshold: int = typer.Option(
        None, help="Near duplicate if the 64-bit hashes differ in at most this many bits (default 5)."
    ),
    hash_name: str = typer.Option(None, "--hash", help="Perceptual hash: dhash (default), phash or ahash."),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file with audit settings (AuditConfig)."),
    overrides: list[str] = set_option("max_sheet_pairs=100"),
) -> None:
    """Near-duplicate and byte-identical images within and across splits, label conflicts, unreadable files.

    Every image is opened (whatever on_bad_image says); bad files are reported, not fatal. Writes audit.json and a
    contact sheet duplicates.png of the flagged pairs.

    Examples:

      fgvlm data audit --dataset flowers102 --root ../shared/data/flowers102-mini --out runs/audit-mini

      fgvlm data audit -d flowers102 --root ~/data/flowers102 --out runs/audit --threshold 6 --hash phash
    """
    from rich.console import Console
    from rich.table import Table

    from fgvlm.config import resolve_config
    from fgvlm.data.audit import AUDIT_FILE, AuditConfig, run_audit

    flags = {
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "threshold": threshold,
        "hash": hash_name,
        "data.options": parse_options(option) or None,
        "limit": limit,
    }
    cfg = resolve_config(AuditConfig, config, flags, overrides)
    summary = run_audit(cfg, out, resume=resume)["summary"]
    table = Table(title=f"audit of {cfg.data.dataset} ({cfg.data.protocol}), {cfg.hash} <= {cfg.threshold} bits")
    table.add_column("check")
    table.add_column("count", justify="right")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
    typer.echo(f"details: {out / AUDIT_FILE}, contact sheet: {out / 'duplicates.png'}")
