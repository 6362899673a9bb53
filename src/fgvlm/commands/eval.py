"""``fgvlm eval``: zero-shot evaluation of a VLM on a dataset split (generate + parse, or class-name ranking)."""

from __future__ import annotations

from enum import Enum
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


class Mode(str, Enum):
    generate = "generate"
    rank = "rank"


class Score(str, Enum):
    sum = "sum"
    mean = "mean"
    prior = "prior"


def command(
    out: Path = out_option("Run directory (created; an interrupted run there resumes)."),
    model: str = typer.Option(
        None, "--model", "-m", help="Registry name (`fgvlm list models`), hub id or folder; required on real datasets."
    ),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registry name (`fgvlm list datasets`)."),
    root: str = typer.Option(None, help="Folder holding the data (default: the dataset's own)."),
    protocol: str = protocol_option(),
    split_file: str = split_file_option(),
    split: str = typer.Option(None, help="Split to evaluate [default: test]."),
    mode: Mode = typer.Option(
        None, help="generate (answer + parse) or rank (class-name log-likelihood) [default: generate]."
    ),
    task: str = typer.Option(None, help="Prompt task (`fgvlm list tasks`) [default: open-qa]."),
    batch_size: int = typer.Option(None, help="Images per request [default: 8]."),
    limit: int = limit_option(),
    score: Score = typer.Option(None, help="Rank mode: score that picks the answer [default: mean, per token]."),
    max_new_tokens: int = typer.Option(None, help="Generate mode: answer length limit [default: 32]."),
    seed: int = typer.Option(None, help="Seed of every random prompt choice [default: 0]."),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of EvalConfig fields (flags and --set override it)."),
    overrides: list[str] = set_option("task_options.num_options=10"),
) -> None:
    """Zero-shot evaluation: writes config.yaml, meta.json, predictions.jsonl, metrics.json, confusion.json, done.json.

    Examples:

      fgvlm eval --model tiny-qwen3-vl --dataset flowers102 --root ../shared/data/flowers102-mini --limit 20 -o runs/zs

      fgvlm eval --model qwen3-vl-4b --dataset flowers102 --mode rank --out runs/qwen3-rank

      fgvlm eval --model qwen3-vl-4b --dataset flowers102 --task closed-qa --set task_options.num_options=5
      --set task_options.distractors=hard --out runs/closed5

      torchrun --standalone --nproc_per_node 2 -m fgvlm eval --model tiny-qwen3-vl --dataset flowers102 --out runs/dp

      fgvlm eval --model qwen3-vl-4b -d flowers102 --root DATA/flowers102 --protocol coop --set data.classes=new
      --mode rank --out runs/coop-new
    """
    from fgvlm.commands.common import require_model
    from fgvlm.config import given_keys, resolve_config
    from fgvlm.distributed import is_main_process
    from fgvlm.eval.zeroshot import EvalConfig, evaluate

    flags = {
        "model.name": model,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "data.split_file": split_file,
        "split": split,
        "mode": mode.value if mode else None,
        "task": task,
        "batch_size": batch_size,
        "limit": limit,
        "score": score.value if score else None,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    cfg = resolve_config(EvalConfig, config, flags, overrides)
    require_model(cfg, given_keys(config, flags, overrides), "fgvlm eval")
    metrics = evaluate(cfg, out, resume=resume)
    if is_main_process():
        top5 = metrics["top5_accuracy"]
        speed = metrics["images_per_s"]
        typer.echo(
            f"{cfg.task} / {cfg.mode} on {metrics['n']} images: accuracy {metrics['accuracy']:.4f} "
            f"(lenient {metrics['accuracy_lenient']:.4f}"
            + (f", top-5 {top5:.4f}" if top5 is not None else "")
            + f", unmatched {metrics['n_unmatched']})"
            + (f", {speed:.2f} images/s" if speed else "")
            + f" -> {out}"
        )
