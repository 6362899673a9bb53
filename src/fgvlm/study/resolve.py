"""Resolve a study: every run's config through its kind's config class, and every run's identity.

A run's config is, lowest first: the study's ``defaults`` (generic keys, then the run kind's own block), the run's
``config`` file, its ``set`` overrides, then the command line's ``--set ID.key=value`` (``*.key=value`` for every run
whose config has ``key``) and ``--swap OLD=NEW`` (every string value equal to OLD becomes NEW: a whole study on tiny
twins of its models). Strings may hold ``${runs.<id>.out}`` (only for runs listed in ``needs``), ``${study.dir}``
(the study file's folder) and ``${study.out}``.

A run's identity hashes its resolved config with the identities of the runs it needs, so a change anywhere upstream
changes every identity downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from fgvlm.config import ConfigError, from_dict, load_yaml, parse_override, to_dict
from fgvlm.kinds import KINDS, kind_config_class
from fgvlm.study.spec import RunSpec, StudySpec, parse_study, topological_order

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclasses.dataclass
class ResolvedRun:
    """A run ready to plan: its spec, directory, resolved config and identity."""

    spec: RunSpec
    out: Path
    config: Any
    """The kind's config object."""
    config_data: dict[str, Any]
    """The same as plain data: what ``RUN/config.yaml`` holds."""
    identity: str
    upstream: dict[str, str]
    """Identity of each run in ``needs``."""
    missing: list[str]
    """Paths in ``requires`` that do not exist."""

    @property
    def id(self) -> str:
        return self.spec.id


@dataclasses.dataclass
class Study:
    spec: StudySpec
    path: Path
    out: Path
    runs: dict[str, ResolvedRun]
    """In an order where every run follows the runs it needs."""


def load_study(
    path: str | Path, out: str | Path, *, overrides: list[str] | None = None, swaps: list[str] | None = None
) -> Study:
    """Parse, check and resolve a whole study; raises ConfigError naming the file, run and key on any mistake."""
    path = Path(path).resolve()
    spec = parse_study(path)
    by_id = {run.id: run for run in spec.runs}
    resolver = _Resolver(spec, path, Path(out).resolve(), _parse_overrides(overrides or [], by_id, path))
    resolver.replacements = _parse_swaps(swaps or [])
    for run_id in topological_order(spec, path):
        resolver.resolve(by_id[run_id])
    unknown = sorted(set(spec.defaults) - resolver.known_default_keys)
    if unknown:
        raise ConfigError(f"{path}: defaults key(s) {', '.join(map(repr, unknown))} match no run's config or kind")
    return Study(spec=spec, path=path, out=resolver.out, runs=resolver.runs)


@dataclasses.dataclass
class _Resolver:
    """Resolves runs in dependency order, so each run sees the identities of the runs it needs."""

    spec: StudySpec
    path: Path
    out: Path
    targeted: dict[str, list[tuple[list[str], Any]]]
    replacements: dict[str, str] = dataclasses.field(default_factory=dict)
    runs: dict[str, ResolvedRun] = dataclasses.field(default_factory=dict)
    known_default_keys: set[str] = dataclasses.field(default_factory=lambda: set(KINDS))

    def resolve(self, run: RunSpec) -> None:
        cls = kind_config_class(run.kind)
        fields = {field.name for field in dataclasses.fields(cls)}
        self.known_default_keys |= fields
        where = f"{self.path}: run {run.id!r}"
        data = _defaults_for(self.spec.defaults, run.kind, fields)
        if run.config is not None:
            config_file = self.path.parent / run.config
            where += f" (config {config_file})"
            _deep_merge(data, load_yaml(config_file))
        for key, value in _run_sets(run, where):
            _set_path(data, key, value, where)
        everywhere = [(key, value) for key, value in self.targeted.get("*", []) if key[0] in fields]
        for key, value in self.targeted.get(run.id, []) + everywhere:
            _set_path(data, key, value, where)
        context = {"study.dir": str(self.path.parent), "study.out": str(self.out)}
        context.update({f"runs.{need}.out": str(self.out / need) for need in run.needs})
        data = _swap(_substitute(data, context, run, where), self.replacements)
        config = from_dict(cls, data, where=where)
        config_data = yaml.safe_load(yaml.safe_dump(to_dict(config), sort_keys=False))
        upstream = {need: self.runs[need].identity for need in run.needs}
        requires = [self.path.parent / _substitute(p, context, run, where) for p in run.requires]
        self.runs[run.id] = ResolvedRun(
            spec=run,
            out=self.out / run.id,
            config=config,
            config_data=config_data,
            identity=run_identity(run.kind, config_data, upstream),
            upstream=upstream,
            missing=[str(p) for p in requires if not p.exists()],
        )


def run_identity(kind: str, config_data: dict[str, Any], upstream: dict[str, str]) -> str:
    """Hash of the kind, the resolved config (without ``resume``) and the upstream runs' identities."""
    material = {
        "kind": kind,
        "config": {k: v for k, v in config_data.items() if k != "resume"},
        "upstream": dict(sorted(upstream.items())),
    }
    text = json.dumps(material, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _defaults_for(defaults: dict[str, Any], kind: str, fields: set[str]) -> dict[str, Any]:
    """Generic defaults for the keys this kind's config has, then the kind's own block on top."""
    data: dict[str, Any] = {}
    for key, value in defaults.items():
        if key not in KINDS and key in fields:
            _deep_merge(data, {key: value})
    kind_block = defaults.get(kind, {})
    if not isinstance(kind_block, dict):
        raise ConfigError(f"defaults.{kind}: expected a mapping of {kind} config keys, got {kind_block!r}")
    _deep_merge(data, kind_block)
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value
    return base


def _set_path(data: dict[str, Any], key: list[str], value: Any, where: str) -> None:
    node = data
    for part in key[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: set {'.'.join(key)}: {part!r} is not a mapping")
    node[key[-1]] = value


def _run_sets(run: RunSpec, where: str) -> list[tuple[list[str], Any]]:
    if isinstance(run.set, dict):
        return [(str(key).split("."), value) for key, value in run.set.items()]
    if isinstance(run.set, list):
        return [parse_override(str(text)) for text in run.set]
    raise ConfigError(f"{where}: set must be a mapping of dotted keys or a list of KEY=VALUE, got {run.set!r}")


def _parse_overrides(texts: list[str], runs: dict[str, RunSpec], path: Path) -> dict[str, list]:
    """``ID.key=value`` / ``*.key=value`` from the command line, grouped by target."""
    targeted: dict[str, list[tuple[list[str], Any]]] = {}
    for text in texts:
        (target, *key), value = parse_override(text)
        if not key:
            raise ConfigError(f"--set {text!r}: expected RUN_ID.key=value or *.key=value")
        if target != "*" and target not in runs:
            raise ConfigError(f"--set {text!r}: {path} has no run {target!r}; runs: {', '.join(runs)}")
        targeted.setdefault(target, []).append((key, value))
    return targeted


def _parse_swaps(texts: list[str]) -> dict[str, str]:
    swaps = {}
    for text in texts:
        old, sep, new = text.partition("=")
        if not sep or not old:
            raise ConfigError(f"--swap {text!r}: expected OLD=NEW, e.g. --swap qwen3-vl-4b=tiny-qwen3-vl")
        swaps[old] = new
    return swaps


def _swap(data: Any, replacements: dict[str, str]) -> Any:
    if isinstance(data, dict):
        return {key: _swap(value, replacements) for key, value in data.items()}
    if isinstance(data, list):
        return [_swap(value, replacements) for value in data]
    if isinstance(data, str):
        return replacements.get(data, data)
    return data


def _substitute(data: Any, context: dict[str, str], run: RunSpec, where: str) -> Any:
    """Fill ``${...}`` placeholders; a reference to a run not in ``needs`` is an error naming both runs."""
    if isinstance(data, dict):
        return {key: _substitute(value, context, run, where) for key, value in data.items()}
    if isinstance(data, list):
        return [_substitute(value, context, run, where) for value in data]
    if not isinstance(data, str):
        return data

    def fill(match: re.Match) -> str:
        name = match.group(1).strip()
        if name in context:
            return context[name]
        if name.startswith("runs.") and name.endswith(".out"):
            other = name[len("runs.") : -len(".out")]
            raise ConfigError(f"{where}: refers to ${{{name}}} but {other!r} is not in its needs ({run.needs})")
        raise ConfigError(f"{where}: unknown placeholder ${{{name}}}; use ${{runs.<id>.out}}, ${{study.dir}}")

    return PLACEHOLDER.sub(fill, data)
