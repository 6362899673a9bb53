"""``fgvlm cnn train|eval``: fine-tune a timm CNN (ResNet-50 by default) and evaluate its checkpoints."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="CNN baselines: fine-tune any timm classifier, with or without MixUp/CutMix.", no_args_is_help=True
)


def _print_summary(metrics: dict, where: str) -> None:
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
    out: str = typer.Option(..., "--out", "-o", help="Run directory for checkpoints, logs and metrics."),
    arch: str = typer.Option(None, help="timm architecture (default resnet50; test_resnet for quick CPU runs)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset registry name (default synthflowers)."),
    root: str = typer.Option(None, help="Dataset folder (flowers102: the official layout)."),
    protocol: str = typer.Option(None, help="Split protocol (flowers102: official, trainval, swapped)."),
    epochs: int = typer.Option(None, help="Epochs to train."),
    mixup: bool = typer.Option(None, "--mixup/--no-mixup", help="MixUp on each batch."),
    cutmix: bool = typer.Option(None, "--cutmix/--no-cutmix", help="CutMix on each batch."),
    pretrained: str = typer.Option(None, help="Initial weights: hub, none, or a local .safetensors file."),
    config: str = typer.Option(None, "--config", "-c", help="YAML config (see configs/cnn/)."),
    set_: list[str] = typer.Option([], "--set", help="Override any config key: KEY=VALUE (e.g. lr=0.02)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint (with its config unchanged)."
    ),
) -> None:
    """Fine-tune a timm classifier; writes checkpoints, train_log.jsonl, tb/, metrics.json and predictions.jsonl.

    Examples:

      fgvlm cnn train --config configs/cnn/test-resnet-synthflowers.yaml --out runs/cnn-demo

      fgvlm cnn train --config configs/cnn/resnet50-flowers102.yaml --root data/flowers102 --out runs/r50

      fgvlm cnn train --arch resnet50 --dataset flowers102 --protocol swapped --pretrained hub --mixup --cutmix
      --out runs/r50-mix

      torchrun --standalone --nproc_per_node 2 -m fgvlm cnn train --config ... --out runs/ddp
    """
    from pathlib import Path

    from fgvlm.config import resolve_config
    from fgvlm.train.cnn import CNNTrainConfig, train_cnn

    if resume and config is None and (Path(out) / "config.yaml").is_file():
        config = str(Path(out) / "config.yaml")  # a resumed run keeps its own config; a changed one is refused
    flags = {
        "arch": arch,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "epochs": epochs,
        "mixup": mixup,
        "cutmix": cutmix,
        "pretrained": pretrained,
    }
    cfg = resolve_config(CNNTrainConfig, config, flags, set_)
    metrics = train_cnn(cfg, out, resume=resume)
    _print_summary(metrics, out)


@app.command("eval")
def evaluate(
    run: str = typer.Option(..., "--run", "-r", help="Run directory written by `fgvlm cnn train`."),
    split: str = typer.Option("test", help="Split to evaluate."),
    checkpoint: str = typer.Option("best", help="best (highest validation top-1) or last."),
    out: str = typer.Option(None, "--out", "-o", help="Where to write results (default RUN/eval-SPLIT-CHECKPOINT)."),
) -> None:
    """Evaluate a trained run's checkpoint on a split: metrics.json, predictions.jsonl, confusion.json.

    Examples:

      fgvlm cnn eval --run runs/cnn-demo

      fgvlm cnn eval --run runs/r50 --split val --checkpoint last
    """
    from pathlib import Path

    from fgvlm.train.cnn import evaluate_run

    target = out or str(Path(run) / f"eval-{split}-{checkpoint}")
    metrics = evaluate_run(run, split=split, checkpoint=checkpoint, out=target)
    _print_summary(metrics, target)


if __name__ == "__main__":  # `python -m fgvlm.commands.cnn` / `torchrun -m fgvlm.commands.cnn` before CLI wiring
    app()
