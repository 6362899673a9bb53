"""``fgvlm head train|eval``: classification heads / linear probes on a frozen VLM, trained on cached features."""

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

app = typer.Typer(
    help="Classification heads on frozen VLM features (feature cache, sweep, eval).", no_args_is_help=True
)


@app.command()
def train(
    out: Path = out_option("Run directory to write (head, metrics, predictions, logs)."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry name, hub id or local model dir (SFT run's model/); required on real datasets.",
    ),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset registry name (see `fgvlm list datasets`)."),
    root: str = typer.Option(None, help="Folder holding the data."),
    protocol: str = protocol_option(),
    split_file: str = split_file_option(),
    pooling: str = typer.Option(None, help="Feature pooling: mean (default), image-mean or last."),
    layer: int = typer.Option(None, help="Hidden-state layer (-1 = last)."),
    steps: int = typer.Option(None, help="Head training steps (default 2000)."),
    online: bool = typer.Option(None, "--online/--cached", help="Run the VLM on every batch (reference way; slow)."),
    sweep: bool = typer.Option(None, "--sweep/--no-sweep", help="Sweep pooling x layer x lr first, keep the best."),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML config (see configs/heads/)."),
    overrides: list[str] = set_option("lr=1e-3"),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Extract (or reuse cached) features, train a head, evaluate it on the test split.

    A partial run is trained again from step 0 (its features come back from the cache, so this is cheap).

    Examples:

      fgvlm head train --model tiny-qwen3-vl --dataset synthflowers --out runs/head-synth

      fgvlm head train --model qwen3-vl-4b --dataset flowers102 --root data/flowers102 --sweep --out runs/probe

      fgvlm head train --model runs/sft/model --dataset flowers102 --protocol swapped --out runs/sft-head

      fgvlm head train --model tiny-qwen3-vl --dataset synthflowers --set data.shots=4 --set data.classes=base
      --out runs/head-4shot-base

      torchrun --standalone --nproc_per_node 2 -m fgvlm head train -c configs/heads/synthflowers-tiny.yaml -o r
    """
    from fgvlm.commands.common import require_model
    from fgvlm.config import given_keys, resolve_config
    from fgvlm.heads.config import HeadTrainConfig
    from fgvlm.heads.pipeline import train_run

    flags = {
        "model.name": model,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "data.split_file": split_file,
        "pooling": pooling,
        "layer": layer,
        "steps": steps,
        "online": online,
        "sweep": sweep,
        "limit": limit,
    }
    cfg = resolve_config(HeadTrainConfig, config, flags, overrides)
    require_model(cfg, given_keys(config, flags, overrides), "fgvlm head train")
    metrics = train_run(cfg, out, resume=resume)
    if metrics is not None:
        report(metrics, out, as_json)


@app.command("eval")
def evaluate(
    run: Path = typer.Option(None, "--run", "-r", help="A `fgvlm head train` run directory."),
    split: str = typer.Option(None, help="Split to evaluate (train, val, test) [default: test]."),
    out: Path = out_option("Run directory for the results [default: RUN/eval-SPLIT].", required=False),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of HeadEvalConfig fields (head_run, split, limit)."),
    overrides: list[str] = set_option("split=val"),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Evaluate a trained head on a split: metrics.json, predictions.jsonl, confusion.json, done.json.

    Examples:

      fgvlm head eval --run runs/head-synth --split val
    """
    from fgvlm.commands.common import default_out
    from fgvlm.config import resolve_config
    from fgvlm.heads.config import HeadEvalConfig
    from fgvlm.heads.pipeline import eval_run

    flags = {"head_run": str(run) if run is not None else None, "split": split, "limit": limit}
    cfg = resolve_config(HeadEvalConfig, config, flags, overrides)
    target = default_out(out, Path(cfg.head_run), f"eval-{cfg.split}")
    metrics = eval_run(cfg, target, resume=resume)
    if metrics:
        report(metrics, target, as_json)


def report(metrics: dict, where: Path, as_json: bool) -> None:
    """One line (or one JSON object) with the headline numbers."""
    keys = ("accuracy", "top5_accuracy", "macro_f1", "n", "ci95", "split", "pooling", "layer", "training")
    summary = {k: metrics.get(k) for k in keys}
    if as_json:
        typer.echo(json.dumps({**summary, "out": str(where)}))
        return
    typer.echo(
        f"{summary['split']}: accuracy {100 * summary['accuracy']:.2f} % (top-5 {100 * summary['top5_accuracy']:.2f} %,"
        f" macro-F1 {summary['macro_f1']:.3f}, n={summary['n']}) -> {where}"
    )
