"""``fgvlm models tiny|info``: build tiny offline models of any VLM family, and show what a model name resolves to."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Build tiny offline models and inspect model names.", no_args_is_help=True)


@app.command()
def tiny(
    family: str = typer.Option(
        None, "--family", "-f", help="qwen3-vl, qwen2.5-vl, idefics2, smolvlm, instructblip-t5 or instructblip."
    ),
    like: str = typer.Option(
        None,
        "--like",
        help="A folder of a real checkpoint's hub files (config, tokenizer, processor; no weights): build a shrunken "
        "random model with its real tokenizer and processor instead of a family's tiny recipe.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the model into (created if missing)."),
    seed: int = typer.Option(0, help="Weight seed: the same seed gives byte-identical weights."),
    size: str = typer.Option("tiny", help="tiny (~0.3-0.5 M params, for tests) or small (~27 M, qwen3-vl only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Build a randomly initialised model of a VLM family, loadable like a hub checkpoint.

    With --family the folder holds safetensors weights, a locally trained tokenizer with the family's special tokens
    and chat template, and the family's real processor. With --like DIR it holds a shrunken copy of the checkpoint
    whose hub files are in DIR (fewer, narrower layers; the same vocabulary, special-token ids and vision patch/merge
    geometry) with DIR's real tokenizer, processor, chat template and generation config. Load either with
    `--model DIR` in any fgvlm command, or with AutoProcessor + AutoModelForImageTextToText.

    Examples:

      fgvlm models tiny --family qwen3-vl --out models/tiny-qwen3-vl

      fgvlm models tiny --family qwen3-vl --size small --seed 1 --out models/small-qwen3-vl

      fgvlm models tiny --like ../shared/data/hub-configs/Qwen__Qwen3-VL-4B-Instruct --out models/like-qwen3-vl-4b

      fgvlm eval --model models/tiny-qwen3-vl --dataset synthflowers --out runs/zs-tiny
    """
    from fgvlm.config import ConfigError
    from fgvlm.models.tiny import build_like_model, build_tiny_model, read_marker
    from fgvlm.runs import fingerprint_path

    if (family is None) == (like is None):
        raise ConfigError("give exactly one of --family (a tiny recipe) or --like DIR (a real checkpoint's hub files)")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: a tiny model would overwrite what is there; choose a new folder")
    if like is not None:
        path = build_like_model(like, out, seed=seed)
    else:
        path = build_tiny_model(family, out, seed=seed, size=size)
    summary = {**(read_marker(path) or {}), "path": str(path), "fingerprint": fingerprint_path(path)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    what = f"like {summary['like']}" if like is not None else f"{size} {family}"
    typer.echo(f"built {what} model (seed {seed}, {summary['num_parameters']:,} params) in {path}")
    typer.echo(f"fingerprint: {summary['fingerprint']}")


@app.command()
def info(
    model: str = typer.Argument(..., help="Registry name (see `fgvlm list models`), hub id or local folder."),
    family: str = typer.Option(None, help="Family override when the config does not tell."),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    trust_remote_code: bool = typer.Option(False, help="Allow code shipped with the checkpoint to run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Load a model and show where it came from: hub id + revision or local path + fingerprint, family, size.

    Tiny registry names (tiny-qwen3-vl, ...) are built into the cache ($FGVLM_CACHE or ~/.cache/fgvlm) on first use.

    Examples:

      fgvlm models info tiny-qwen3-vl

      fgvlm models info models/tiny-qwen3-vl --json
    """
    from rich.console import Console
    from rich.table import Table

    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_model

    cfg = ModelConfig(name=model, family=family, revision=revision, trust_remote_code=trust_remote_code)
    console = Console(stderr=True)
    with console.status(f"loading {model} ..."):
        _, _, details = load_model(cfg)
    if as_json:
        typer.echo(json.dumps(details))
        return
    table = Table(title=f"model {model}", show_header=False)
    for key, value in details.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
