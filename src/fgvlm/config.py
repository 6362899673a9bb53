"""Configs: plain dataclasses filled from YAML, with ``--set a.b=v`` overrides on top.

Every command's options are a dataclass. ``resolve_config`` merges, in order: the dataclass defaults, a YAML file,
the command-line flags, then ``--set`` overrides. Unknown keys are rejected with the key and the file named, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, flag or override that cannot be applied; the message names the key and its source."""


@dataclasses.dataclass
class DataConfig:
    """Which dataset, where it lives, and how it is split."""

    dataset: str = "synthflowers"
    """Registry name: flowers102, oxford-pets, fgvc-aircraft, food101, dtd, stanford-cars, cub200, synthflowers,
    imagefolder, hf (see ``fgvlm list datasets``)."""
    root: str | None = None
    """Folder holding the data (flowers102, imagefolder); None means the dataset's default location."""
    protocol: str = "official"
    """Split protocol: each dataset's own (flowers102: official, trainval, swapped), ``coop`` (CoOp's split file in
    the data root) or ``split-file`` (any CoOp-format file, given as ``split_file``)."""
    split_file: str | None = None
    """The CoOp-format split file of protocol ``split-file``: {train|val|test: [[path, label, class name], ...]}."""
    shots: int | None = None
    """k-shot: K images per class from the train split and min(K, 4) from val, drawn as CoOp/Dassl do; None = all.
    The test split is never sampled."""
    shot_seed: int = 1
    """Seed of the k-shot draw (CoOp reports seeds 1, 2 and 3)."""
    classes: str = "all"
    """Class subset: 'base' (the first ceil(n/2) labels), 'new' (the rest; both relabelled from 0) or 'all'."""
    on_bad_image: str = "error"
    """What to do with corrupt, truncated or non-image files: 'error' (name the file) or 'skip' (count it)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dataset-specific options, checked by the dataset itself (e.g. synthflowers: num_classes, image_size)."""

    def __post_init__(self) -> None:
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"data.shots must be >= 1 (or unset for every image), got {self.shots}")
        if self.classes not in ("all", "base", "new"):
            raise ConfigError(f"data.classes must be 'all', 'base' or 'new', got {self.classes!r}")
        if (self.protocol == "split-file") != (self.split_file is not None):
            raise ConfigError(
                "data.protocol split-file and data.split_file go together (--protocol split-file --split-file PATH); "
                f"got protocol {self.protocol!r}, split_file {self.split_file!r}"
            )


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and gently convert a YAML value to the annotated type (int -> float, str path -> str)."""
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where=where)
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if tp in (int, float, str, bool):
        if tp is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (named with their full dotted path)."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {listed}; known keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data (what ``config.yaml`` in a run directory holds)."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=v`` into (["a", "b"], parsed v); the value is read as YAML so numbers and lists work."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def _set_path(data: dict[str, Any], path: list[str], value: Any, source: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(path)}: {part!r} is not a mapping")
        node = child
    node[path[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def resolve_config(
    cls: type[T],
    config_path: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> T:
    """Defaults < YAML file < command-line flags (dotted keys, None = not given) < ``--set`` overrides."""
    data: dict[str, Any] = {}
    source = "config"
    if config_path is not None:
        data = load_yaml(config_path)
        source = str(config_path)
        from_dict(cls, data, where=source)  # unknown keys are reported against the file that holds them
    for key, value in (flags or {}).items():
        if value is not None:
            _set_path(data, key.split("."), value, "command-line flag")
    for text in overrides or []:
        path, value = parse_override(text)
        _set_path(data, path, value, f"--set {text}")
    where = source if not overrides else f"{source} (+ --set)"
    return from_dict(cls, data, where=where)


def save_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write YAML atomically (temp file + rename): an interrupted write never leaves a truncated config behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def given_keys(
    config_path: str | Path | None = None, flags: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> set[str]:
    """Dotted keys that a YAML file, a command-line flag (not None) or a ``--set`` sets: a choice, not a default."""
    keys = set(_flatten(load_yaml(config_path))) if config_path is not None else set()
    keys |= {key for key, value in (flags or {}).items() if value is not None}
    for text in overrides or []:
        path, value = parse_override(text)
        keys |= set(_flatten({".".join(path): value}))
    return keys


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts (``resume`` ignored), as 'key: saved -> now'.

    Used to refuse resuming a run directory with a different config (``fgvlm.runs.run_status``); ``resume`` is
    ignored so that run directories written when it was a config key still compare equal.
    """
    a, b = _flatten(saved), _flatten(yaml.safe_load(yaml.safe_dump(current)))
    keys = sorted((set(a) | set(b)) - {"resume"})
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
