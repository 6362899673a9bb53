"""``fgvlm cnn train|eval``: fine-tune a timm CNN (ResNet-50 by default) and evaluate its checkpoints."""

from __future__ import annotations

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
    help="CNN baselines: fine-tune any timm classifier, with or without MixUp/CutMix.", no_args_is_help=True
)


def _print_summary(metrics: dict, where: Path) -> None:
    if not metrics:  # DDP ranks other than 0 write and print nothing
        return
    top5 = metrics.get("top5_accuracy")
    typer.echo(
        f"{metrics['split']}: accuracy {metrics['accuracy']:.4f}"
        + (f", top-5 {top5:.4f}" if top5 is not None else "")
        + f", macro-F1 {metrics['macro_f1']:.4f} (n={metrics['n']}, checkpoint {metrics['checkpoint']})"
        + f" -> {where}"
    )


@app.command()
def train(
    out: Path = out_option("Run directory for checkpoints, logs and metrics."),
    arch: str = typer.Option(None, help="timm architecture (default resnet50; test_resnet for quick CPU runs)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset registry name (default synthflowers)."),
    root: str = typer.Option(None, help="Dataset folder (flowers102: the official layout)."),
    protocol: str = protocol_option(),
    split_file: str = split_file_option(),
    epochs: int = typer.Option(None, help="Epochs to train."),
    mixup: bool = typer.Option(None, "--mixup/--no-mixup", help="MixUp on each batch."),
    cutmix: bool = typer.Option(None, "--cutmix/--no-cutmix", help="CutMix on each batch."),
    pretrained: str = typer.Option(None, help="Initial weights: hub, none, or a local .safetensors file."),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML config (see configs/cnn/)."),
    overrides: list[str] = set_option("lr=0.02"),
) -> None:
    """Fine-tune a timm classifier: checkpoints, train_log.jsonl, tb/, metrics.json, predictions.jsonl, done.json.

    A partial run continues from its last checkpoint (the result equals an uninterrupted run).

    Examples:

      fgvlm cnn train --config configs/cnn/test-resnet-synthflowers.yaml --out runs/cnn-demo

      fgvlm cnn train --config configs/cnn/resnet50-flowers102.yaml --root data/flowers102 --out runs/r50

      fgvlm cnn train --arch resnet50 --dataset oxford-pets --root DATA --protocol coop --set data.shots=16 -o runs/p16

      fgvlm cnn train --arch resnet50 --dataset flowers102 --protocol swapped --pretrained hub --mixup --cutmix
      --out runs/r50-mix

      fgvlm cnn train --config runs/r50/config.yaml --out runs/r50   (continue an interrupted run)

      torchrun --standalone --nproc_per_node 2 -m fgvlm cnn train --config ... --out runs/ddp
    """
    from fgvlm.config import resolve_config
    from fgvlm.train.cnn import CNNTrainConfig, train_cnn

    flags = {
        "arch": arch,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "data.split_file": split_file,
        "epochs": epochs,
        "mixup": mixup,
        "cutmix": cutmix,
        "pretrained": pretrained,
        "limit": limit,
    }
    cfg = resolve_config(CNNTrainConfig, config, flags, overrides)
    metrics = train_cnn(cfg, out, resume=resume)
    _print_summary(metrics, out)


@app.command("eval")
def evaluate(
    run: Path = typer.Option(None, "--run", "-r", help="Run directory written by `fgvlm cnn train`."),
    split: str = typer.Option(None, help="Split to evaluate [default: test]."),
    checkpoint: str = typer.Option(None, help="best (highest validation accuracy) or last [default: best]."),
    out: Path = out_option("Run directory for the results [default: RUN/eval-SPLIT-CHECKPOINT].", required=False),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of CNNEvalConfig fields (run, split, checkpoint, limit)."),
    overrides: list[str] = set_option("checkpoint=last"),
) -> None:
    """Evaluate a trained run's checkpoint on a split: metrics.json, predictions.jsonl, confusion.json, done.json.

    Examples:

      fgvlm cnn eval --run runs/cnn-demo

      fgvlm cnn eval --run runs/r50 --split val --checkpoint last
    """
    from fgvlm.commands.common import default_out
    from fgvlm.config import resolve_config
    from fgvlm.train.cnn import CNNEvalConfig, evaluate_run

    flags = {"run": str(run) if run is not None else None, "split": split, "checkpoint": checkpoint, "limit": limit}
    cfg = resolve_config(CNNEvalConfig, config, flags, overrides)
    target = default_out(out, Path(cfg.run), f"eval-{cfg.split}-{cfg.checkpoint}")
    metrics = evaluate_run(cfg, target, resume=resume)
    _print_summary(metrics, target)
