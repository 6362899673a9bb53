"""Options and checks shared by every command that writes a run: one meaning per flag across the CLI.

``-o`` is ``--out`` (a Path) and ``-c`` is ``--config`` everywhere; ``--set KEY=VALUE`` (Python parameter
``overrides``), ``--resume/--no-resume`` (default: resume) and ``--limit N`` mean the same in every command.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from fgvlm.config import ConfigError
from fgvlm.sft.config import METHODS

Method = Enum("Method", {name: name for name in METHODS}, type=str)
"""``--method`` of the fine-tuning commands: the methods of ``fgvlm.sft.config.METHODS``."""

RESUME_HELP = (
    "Resume (default): skip a complete run with the same config, continue a partial one, refuse another config. "
    "--no-resume moves an existing run aside (OUT.replaced-TIME) and starts over."
)


PROTOCOL_HELP = (
    "Split protocol: the dataset's own (flowers102: official, trainval, swapped), coop (CoOp's split file in the "
    "data root) or split-file (with --split-file)."
)


def protocol_option(default: str | None = None) -> Any:
    return typer.Option(default, help=PROTOCOL_HELP)


def split_file_option() -> Any:
    return typer.Option(
        None,
        "--split-file",
        help="CoOp-format split file of --protocol split-file ({train|val|test: [[path, label, class name], ...]}).",
    )


def out_option(help_text: str, required: bool = True) -> Any:
    return typer.Option(... if required else None, "--out", "-o", help=help_text)


def config_option(help_text: str = "YAML config file (flags and --set override it).") -> Any:
    return typer.Option(None, "--config", "-c", help=help_text)


def set_option(example: str = "seed=1") -> Any:
    return typer.Option([], "--set", help=f"Override a config key as KEY=VALUE (e.g. {example}); repeatable.")


def resume_option() -> Any:
    return typer.Option(True, "--resume/--no-resume", help=RESUME_HELP)


def limit_option() -> Any:
    return typer.Option(None, "--limit", help="Only the first N images of each split (quick checks).")


def require_model(cfg: Any, given: set[str], command: str) -> None:
    """Refuse to fall back silently to the random tiny default model on a real dataset.

    Only on an offline demo dataset (its class's ``offline`` flag: drawn without files, chance-level answers
    expected) may a missing --model fall back to the tiny random default. ``given``: the keys set by the config
    file, flags or ``--set`` (``fgvlm.config.given_keys``).
    """
    from fgvlm.registry import DATASETS, dataset_class

    if "model.name" in given or dataset_class(cfg.data.dataset).offline:
        return
    offline = [name for name in DATASETS if dataset_class(name).offline]
    raise ConfigError(
        f"{command}: no model given for dataset {cfg.data.dataset!r}. Pass --model (a registry name from "
        f"`fgvlm list models`, a hub id or a folder) or set model.name in the config; the default "
        f"{cfg.model.name!r} is a random tiny model (chance-level answers), used without asking only on the "
        f"offline demo dataset{'s' if len(offline) > 1 else ''} {', '.join(offline)}."
    )


def fine_tune(
    config_class: type,
    config: Path | None,
    flags: dict[str, Any],
    overrides: list[str],
    out: Path,
    resume: bool,
    command: str,
    objective: str | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """``fgvlm sft`` / ``fgvlm rl``: resolve the config (file < flags < ``--set``), refuse a real dataset without
    a model (and, with ``objective``, a config of another objective), run ``run_sft``; (config, metrics, or None on
    ranks other than 0)."""
    from fgvlm.config import given_keys, resolve_config
    from fgvlm.distributed import is_main_process
    from fgvlm.sft.run import run_sft

    try:
        cfg = resolve_config(config_class, config, flags, overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if objective is not None and cfg.objective != objective:
        raise ConfigError(f"{command} trains objective {objective}; the config says objective {cfg.objective!r}")
    require_model(cfg, given_keys(config, flags, overrides), command)
    metrics = run_sft(cfg, out, resume=resume)
    return cfg, metrics if is_main_process() and metrics else None


def default_out(out: Path | None, run: Path, name: str) -> Path:
    """``--out`` when given, else ``RUN/name`` (evaluations of a trained run live inside it by default)."""
    return out if out is not None else run / name
