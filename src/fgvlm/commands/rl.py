"""``fgvlm rl``: RL fine-tuning (GRPO) of a VLM, rewarded by fgvlm's answer matcher (``objective: rl``)."""

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
from fgvlm.sft.config import RL_LOSSES, THINKING
from fgvlm.sft.objectives.rewards import REWARDS

Thinking = Enum("Thinking", {name: name for name in THINKING}, type=str)
Loss = Enum("Loss", {name: name for name in RL_LOSSES}, type=str)
Reward = Enum("Reward", {name: name for name in REWARDS}, type=str)


def command(
    out: Path = out_option("Run directory (created; an interrupted run there resumes)."),
    model: str = typer.Option(None, "--model", "-m", help="An SFT run's RUN/model, a registry name or a hub id."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registry name (`fgvlm list datasets`)."),
    root: str = typer.Option(None, help="Folder holding the data (default: the dataset's own)."),
    protocol: str = protocol_option(),
    split_file: str = split_file_option(),
    task: str = typer.Option(None, help="open-qa, closed-qa or closed-negative-qa [default: open-qa]."),
    method: Method = typer.Option(None, help="lora or full [default: lora]."),
    group_size: int = typer.Option(None, "--group-size", "-g", help="Answers sampled per image [default: 8]."),
    temperature: float = typer.Option(None, help="Sampling temperature [default: 1.0]."),
    thinking: Thinking = typer.Option(None, help="off: answer straight away; on: <think>...</think> first."),
    reward: Reward = typer.Option(None, help="match (strict matcher) or lenient (aliases, fuzzy) [default: match]."),
    loss: Loss = typer.Option(None, help="grpo, dr-grpo or dapo (token-level) [default: grpo]."),
    kl: float = typer.Option(None, help="KL coefficient to the model with adapters disabled [default: 0]."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps [default: 200]."),
    lr: float = typer.Option(None, help="Learning rate (constant) [default: 1e-5]."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per device per step [default: 1]."),
    limit: int = limit_option(),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of RLConfig fields (see configs/rl/); flags and --set override it."),
    overrides: list[str] = set_option("rl.skip_equal_groups=true"),
) -> None:
    """RL fine-tuning (GRPO): sample G answers per image, reward each by the answer matcher, train on the group
    advantages. Writes the run contract of `fgvlm sft` (RUN/model, train_log.jsonl, tb/, metrics.json with rank and
    generate accuracy, done.json) plus RUN/rollouts.jsonl (what was sampled, what the matcher read, the reward).

    Examples:

      fgvlm rl --model RUN_SFT/model --dataset flowers102 --root DATA --task open-qa --method lora --group-size 8
      --max-steps 200 --out runs/rl

      fgvlm rl --config configs/rl/qwen3-vl-4b-flowers102.yaml --model RUN_SFT/model --root DATA -o runs/rl

      fgvlm rl --model tiny-qwen3-vl --dataset synthflowers --max-steps 20 --limit 16 --set rl.max_new_tokens=12
      -o runs/rl-tiny

      fgvlm rl --model RUN_SFT/model --dataset flowers102 --thinking on --reward lenient --loss dapo -o runs/rl-think
    """
    from fgvlm.sft.config import RLConfig

    flags = {
        "model.name": model,
        "data.dataset": dataset,
        "data.root": root,
        "data.protocol": protocol,
        "data.split_file": split_file,
        "task": task,
        "method": method.value if method else None,
        "rl.group_size": group_size,
        "rl.temperature": temperature,
        "rl.thinking": thinking.value if thinking else None,
        "rl.reward": reward.value if reward else None,
        "rl.loss": loss.value if loss else None,
        "rl.kl": kl,
        "train.max_steps": max_steps,
        "train.lr": lr,
        "train.per_device_batch_size": batch_size,
        "limit": limit,
    }
    cfg, metrics = fine_tune(RLConfig, config, flags, overrides, out, resume, "fgvlm rl", objective="rl")
    if metrics:
        typer.echo(
            f"rl ({cfg.method}, G={cfg.rl.group_size}, reward {cfg.rl.reward}) -> {out}/model; {metrics['split']} "
            f"accuracy {metrics['accuracy']:.4f} (rank), {metrics['generate_accuracy']:.4f} (generate) on "
            f"{metrics['n']} images"
        )
