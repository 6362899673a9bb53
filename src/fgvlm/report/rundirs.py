"""Reading run directories for reports: every file optional, every problem named, nothing loaded but files.

A run directory is a folder holding any of ``config.yaml``, ``meta.json``, ``metrics.json`` or ``done.json``; a
study directory is a folder whose subfolders are run directories (it may also hold the study's ``results.csv``).
A run is ``complete`` when it has its metrics and, for runs written since ``done.json`` exists, that marker;
otherwise it is shown as ``incomplete``. A missing or unreadable file never stops a report: the problem is kept in
``RunInfo.problems`` naming the file (and the line, for JSONL), and the report shows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgvlm.config import ConfigError

RUN_FILES = ("config.yaml", "meta.json", "metrics.json", "done.json")


class ReportError(ConfigError):
    """Report inputs that cannot be used at all (no run directory found, an unknown run id)."""


@dataclass
class RunInfo:
    """Everything a report needs from one run directory, read once."""

    path: Path
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    confusion: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    train_log: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """``complete``: metrics present and, for runs whose metrics carry the ``kind`` header (written since
        ``done.json`` exists), the ``done.json`` marker too; else ``incomplete``."""
        if self.metrics is None:
            return "incomplete"
        return "complete" if self.done is not None or "kind" not in self.metrics else "incomplete"

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def kind(self) -> str:
        """The run's kind: the metrics header's ``kind``, else derived from ``meta.json``'s command."""
        if self.metrics and self.metrics.get("kind"):
            return str(self.metrics["kind"])
        command = self.meta.get("command")
        return str(command).replace(" ", "-") if command else "unknown"

    def value(self, key: str, default: Any = None) -> Any:
        """A result attribute from the metrics header, else meta.json, else config.yaml."""
        for source in (self.metrics or {}, self.meta, self.config):
            if source.get(key) is not None:
                return source[key]
        return default


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


MOVED_ASIDE = re.compile(r"\.(old|replaced)-\d")
"""Runs a study's ``--rerun`` (``ID.old-<time>``) or ``--no-resume`` (``RUN.replaced-<time>``) moved aside: kept on
disk, left out when a study folder is expanded (name one directly to see it)."""


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories named directly, and the run directories inside study directories (one level down).

    A folder with its own meta.json / metrics.json / done.json is a run (its ``eval-*`` subfolders are not
    expanded); a folder whose subfolders are runs is a study, even if it holds a study-level config.yaml.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ReportError(f"{path}: no such directory")
        inside = sorted(p for p in path.iterdir() if is_run_dir(p) and not MOVED_ASIDE.search(p.name))
        produced = any((path / name).is_file() for name in RUN_FILES[1:])
        if produced or (is_run_dir(path) and not inside):
            found.append(path)
        elif inside:
            found.extend(inside)
        else:
            raise ReportError(
                f"{path}: neither a run directory (no {', '.join(RUN_FILES)}) nor a study directory "
                "(no subfolder holding them)"
            )
    return list(dict.fromkeys(p.resolve() for p in found))


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return None


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problems.append(f"{path.name}: not valid YAML ({str(err).splitlines()[0]})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: top level is a {type(data).__name__}, not a mapping")
        return {}
    return data


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Complete, valid lines; a bad line is skipped and named (file and line number)."""
    if not path.is_file():
        return []
    records = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path.name} line {number}: not valid JSON ({err.msg})")
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            problems.append(f"{path.name} line {number}: not a JSON object")
    return records


def _mapping(value: Any, name: str, problems: list[str]) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    problems.append(f"{name}: top level is a {type(value).__name__}, not an object")
    return None


def load_run(path: str | Path, run_id: str | None = None) -> RunInfo:
    """Read one run directory; never raises for a missing or malformed file (see ``RunInfo.problems``)."""
    path = Path(path)
    problems: list[str] = []
    run = RunInfo(path=path, run_id=run_id or path.name, problems=problems)
    run.config = _read_yaml(path / "config.yaml", problems)
    run.meta = _mapping(_read_json(path / "meta.json", problems), "meta.json", problems) or {}
    run.metrics = _mapping(_read_json(path / "metrics.json", problems), "metrics.json", problems)
    run.done = _mapping(_read_json(path / "done.json", problems), "done.json", problems)
    run.confusion = _mapping(_read_json(path / "confusion.json", problems), "confusion.json", problems)
    run.predictions = [p for p in _read_jsonl(path / "predictions.jsonl", problems) if "id" in p and "label" in p]
    run.train_log = _read_jsonl(path / "train_log.jsonl", problems)
    if run.metrics is not None and not isinstance(run.metrics.get("accuracy"), (int, float)):
        problems.append("metrics.json: no numeric 'accuracy'")
        run.metrics = None
    if run.metrics is None and not (path / "metrics.json").exists():
        problems.append("metrics.json: missing (the run has not finished)")
    return run


def unique_run_ids(paths: list[Path]) -> list[str]:
    """Folder names, prefixed with the parent folder's name where two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def load_runs(paths: list[str | Path]) -> list[RunInfo]:
    """Every run directory under ``paths`` (see ``find_run_dirs``), read with ``load_run``."""
    dirs = find_run_dirs(paths)
    return [load_run(p, run_id) for p, run_id in zip(dirs, unique_run_ids(dirs), strict=True)]
