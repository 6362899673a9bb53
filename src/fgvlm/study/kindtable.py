"""The runnable kinds a study may list, in the shape of contract B's ``fgvlm.kinds`` table.

Each kind names the CLI words that start it and its config class (``"module:Class"``, imported only when used).
This local table is replaced by ``fgvlm.kinds`` when that lands; the study code reaches it only through
``kind_names``, ``kind_config_class`` and ``kind_argv``.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from fgvlm.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    cli: tuple[str, ...]
    config: str
    run: str


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("eval", ("eval",), "fgvlm.eval.zeroshot:EvalConfig", "fgvlm.eval.zeroshot:evaluate"),
        Kind("head-train", ("head", "train"), "fgvlm.heads.config:HeadTrainConfig", "fgvlm.heads.pipeline:train_run"),
        Kind("cnn-train", ("cnn", "train"), "fgvlm.train.cnn_config:CNNTrainConfig", "fgvlm.train.cnn:train_cnn"),
    )
}


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown kind {name!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[name]


def kind_config_class(name: str) -> type:
    module, _, attr = _kind(name).config.partition(":")
    return getattr(importlib.import_module(module), attr)


def kind_argv(name: str, config_path: str | Path, out: str | Path) -> list[str]:
    return ["-m", "fgvlm", *_kind(name).cli, "--config", str(config_path), "--out", str(out)]
