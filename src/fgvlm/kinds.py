"""The table of runnable kinds: every command that writes a run directory, its config class and its run function.

A kind is data: its CLI words (``("head", "train")``), its config dataclass and its run function as lazy
``"module:name"`` strings (importing this module imports no torch). Every run function has the one signature
``run(cfg, out: Path, *, resume: bool = True) -> dict`` (the metrics), and every kind's command accepts
``--config FILE --out DIR --resume/--no-resume --set K=V --limit N``, so a study runner starts any run as
``python -m fgvlm <cli...> --config RUN/config.yaml --out RUN`` (``kind_argv``) and it is reproduced exactly.

Shipped configs: ``configs/<folder>/*.yaml`` belong to the kind whose ``configs`` names that folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvlm.registry import import_object, unknown_name


@dataclass(frozen=True)
class Kind:
    """One runnable kind: name, CLI words, config class and run function (``"module:name"``)."""

    name: str
    cli: tuple[str, ...]
    config: str
    run: str
    configs: str | None = None
    """Folder under ``configs/`` whose YAML files are configs of this kind (None: none shipped)."""
    results: bool = True
    """Its runs write ``metrics.json`` (a row of a study's results table); False for audits and publishing."""


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("eval", ("eval",), "fgvlm.eval.zeroshot:EvalConfig", "fgvlm.eval.zeroshot:evaluate", "eval"),
        Kind(
            "head-train",
            ("head", "train"),
            "fgvlm.heads.config:HeadTrainConfig",
            "fgvlm.heads.pipeline:train_run",
            "heads",
        ),
        Kind("head-eval", ("head", "eval"), "fgvlm.heads.config:HeadEvalConfig", "fgvlm.heads.pipeline:eval_run"),
        Kind(
            "cnn-train", ("cnn", "train"), "fgvlm.train.cnn_config:CNNTrainConfig", "fgvlm.train.cnn:train_cnn", "cnn"
        ),
        Kind("cnn-eval", ("cnn", "eval"), "fgvlm.train.cnn_config:CNNEvalConfig", "fgvlm.train.cnn:evaluate_run"),
        Kind(
            "data-audit", ("data", "audit"), "fgvlm.data.audit:AuditConfig", "fgvlm.data.audit:run_audit", results=False
        ),
        Kind("sft", ("sft",), "fgvlm.sft.config:SFTConfig", "fgvlm.sft.run:run_sft", "sft"),
        Kind(
            "publish",
            ("publish",),
            "fgvlm.publish.config:PublishConfig",
            "fgvlm.publish.run:publish_run",
            results=False,
        ),
    )
}


TOOL_CONFIG_FOLDERS: tuple[str, ...] = ("accelerate",)
"""Folders under ``configs/`` holding other tools' configs, not fgvlm kinds (``accelerate launch --config_file``;
their own test is ``tests/test_accelerate_configs.py``)."""


def get_kind(name: str) -> Kind:
    """The kind called ``name``; an unknown name lists the close ones."""
    if name not in KINDS:
        raise unknown_name("run kind", name, list(KINDS))
    return KINDS[name]


def kind_config_class(name: str) -> type:
    """The config dataclass of a kind (imported on use)."""
    return import_object(get_kind(name).config)


def kind_run_function(name: str) -> Any:
    """The run function of a kind: ``run(cfg, out, *, resume=True) -> metrics`` (imported on use)."""
    return import_object(get_kind(name).run)


def kind_argv(name: str, config_path: str | Path, out: str | Path) -> list[str]:
    """The arguments after the Python executable that rerun a kind: ``-m fgvlm <cli...> --config C --out O``."""
    return ["-m", "fgvlm", *get_kind(name).cli, "--config", str(config_path), "--out", str(out)]


def kind_for_configs_folder(folder: str) -> Kind:
    """The kind whose shipped configs live in ``configs/<folder>/``."""
    for kind in KINDS.values():
        if kind.configs == folder:
            return kind
    raise unknown_name("configs folder", folder, [k.configs for k in KINDS.values() if k.configs])
