"""``fgvlm predict``: top-5 class names with probabilities for your own images (trained head or zero-shot)."""

from __future__ import annotations

import dataclasses
import json

import typer


def command(
    images: list[str] = typer.Argument(..., help="Image files (jpg, png, ...)."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry name, hub id or local model dir; default with --head: the head's backbone, else tiny-qwen3-vl.",
    ),
    head: str = typer.Option(None, "--head", help="A `fgvlm head train` run directory; without it, zero-shot ranking."),
    dataset: str = typer.Option("flowers102", "--dataset", "-d", help="Class names for zero-shot ranking."),
    root: str = typer.Option(None, help="Dataset folder, when its class names come from the data (imagefolder)."),
    top: int = typer.Option(5, "--top", "-k", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Name the flowers (or other classes) in your images, with probabilities.

    Examples:

      fgvlm predict --model qwen3-vl-4b --head runs/probe my_flower.jpg

      fgvlm predict --model tiny-qwen3-vl photo1.jpg photo2.png --json

      fgvlm predict --model qwen3-vl-4b --dataset imagefolder --root data/birds bird.jpg
    """
    from fgvlm.heads.predict import predict_images
    from fgvlm.models.base import ModelConfig

    class_names, model_cfg = None, ModelConfig(name=model) if model else ModelConfig()
    if head is not None:
        from fgvlm.config import from_dict
        from fgvlm.heads.model import load_head

        _, info = load_head(head)
        # the head's recorded backbone settings (dtype, pixel bounds, ...); --model replaces only the name
        model_cfg = from_dict(ModelConfig, info["model_config"], where=f"{head}/head.json model_config")
        if model is not None:
            model_cfg = dataclasses.replace(model_cfg, name=model)
    else:
        from fgvlm.data import create_dataset

        class_names = create_dataset(dataset=dataset, root=root).prompt_names
    from fgvlm.models.loading import create_backend

    backend = create_backend(model_cfg)
    if head is not None:
        from fgvlm.heads.pipeline import check_backbone

        check_backbone(backend, model_cfg, info)
    for prediction in predict_images(backend, images, head, class_names, dataset, top):
        if as_json:
            typer.echo(json.dumps(prediction.to_dict()))
            continue
        typer.echo(f"{prediction.image} ({prediction.method})")
        for rank, (name, prob) in enumerate(prediction.top, 1):
            typer.echo(f"  {rank}. {name:<40} {100 * prob:6.2f} %")
