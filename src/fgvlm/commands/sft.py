"""``fgvlm sft``: supervised fine-tuning of a VLM (LoRA or full) on instruction data built from a dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from fgvlm.commands.common import (
    Method,
    config_option,
    fine_tune,
    limit_option,
    out_option,
    protocol_option,
    resume_option,
    set_option,
    split_file_option,
)
from fgvlm.sft.objectives import objective_names

Objective = Enum("Objective", {name: name for name in objective_names()}, type=str)
"""The objectives of ``fgvlm.sft.objectives.OBJECTIVES`` (the table is the one list)."""


def command(
    out: Path = out_option("Run directory (created; an interrupted run there resumes)."),
    model: str = typer.Option(None, "--model", "-m", help="Registry name (`fgvlm list models`), hub id or folder."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registry name (`fgvlm list datasets`)."),
    root: str = typer.Option(None, help="Folder holding the data (default: the dataset's own)."),
    protocol: str = protocol_option(),
    split_file: str = split_file_option(),
    task: str = typer.Option(
        None,
        help="open-qa, closed-qa, closed-negative-qa; add -mixcut for MixUp/CutMix images (open-qa-mixcut) "
        "[default: open-qa].",
    ),
    mix: str = typer.Option(None, help="Task mixture instead of one task, e.g. open-qa=0.5,closed-qa=0.5."),
    method: Method = typer.Option(None, help="lora (adapters on the language model) or full [default: full]."),
    objective: Objective = typer.Option(
        None,
        help="generate (loss on the answer tokens), classify (linear head + cross-entropy) or rank (listwise "
        "softmax over the class-name scores of rank evaluation) [default: generate].",
    ),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps [default: 4000]."),
    lr: float = typer.Option(None, help="Peak learning rate [default: 2e-5]."),
    batch_size: int = typer.Option(None, "--batch-size", help="Samples per device per micro-step [default: 1]."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-steps per optimizer step [default: 1]."),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of SFTConfig fields (see configs/sft/); flags and --set override it."),
    overrides: list[str] = set_option("train.eval_every=100"),
) -> None:
    """Fine-tune a VLM; writes RUN/model (plain checkpoint), train_log.jsonl, tb/, metrics.json, done.json.

    Examples:

      fgvlm sft --config configs/sft/qwen3-vl-4b-flowers102.yaml --root DATA/flowers102 --out runs/sft-qwen3

      fgvlm sft --model tiny-qwen3-vl --dataset synthflowers --method lora --max-steps 50 --limit 40 -o runs/sft-tiny

      fgvlm sft --model qwen3-vl-4b --dataset flowers102 --task open-qa-mixcut --set mixcut.loss=dominant -o runs/mix

      fgvlm sft --model qwen3-vl-4b --dataset flowers102 --objective classify --method lora -o runs/sft-cls

      fgvlm sft --model qwen3-vl-4b --dataset flowers102 --objective rank --set rank.negatives=31 -o runs/sft-rank

      fgvlm sft --model qwen3-vl-4b -d flowers102 --root DATA/flowers102 --protocol coop --set data.shots=4
      --set data.shot_seed=1 -o runs/sft-coop-4shot

    Then: fgvlm eval --model RUN/model ...; fgvlm head train --model RUN/model ...; (classify) fgvlm predict
    --model RUN/model --head RUN img.jpg, fgvlm head eval --run RUN/head.
    """
    from fgvlm.prompts.instructions import parse_mix
    from fgvlm.sft.config import SFTConfig

    flags = {
        "model.name": model,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "data.split_file": split_file,
        "task": task,
        "mix": parse_mix(mix) if mix else None,
        "method": method.value if method else None,
        "objective": objective.value if objective else None,
        "train.max_steps": max_steps,
        "train.lr": lr,
        "train.per_device_batch_size": batch_size,
        "train.grad_accum": grad_accum,
        "limit": limit,
    }
    cfg, metrics = fine_tune(SFTConfig, config, flags, overrides, out, resume, "fgvlm sft")
    if metrics:
        top5 = metrics.get("top5_accuracy")
        typer.echo(
            f"sft {cfg.objective} ({cfg.method}) -> {out}/model; {metrics['split']} accuracy {metrics['accuracy']:.4f}"
            + (f" (top-5 {top5:.4f})" if top5 is not None else "")
            + f" on {metrics['n']} images"
        )
