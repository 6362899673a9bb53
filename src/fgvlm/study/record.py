"""What a study knows about each of its run directories: ``RUN/study.json`` and the run's own status.

``RUN/study.json`` records the run's identity, the identity and completion time of each run it needs, when it started
and when it finished (null until the run's process exits with success). A dependant whose recorded upstream differs
from the upstream now on disk (changed config, or rerun) is stale and runs again.

``run_status`` gives the run directory's own state for a resolved config: absent, partial (with progress),
complete, or conflicting (with the differing keys). It follows contract B's ``fgvlm.runs.run_status``, which
replaces it when that lands.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import yaml

from fgvlm.config import config_differences, to_dict
from fgvlm.runs import read_json, write_json

RECORD = "study.json"


@dataclasses.dataclass
class RunStatus:
    state: str
    """absent | partial | complete | conflicting"""
    differences: list[str] = dataclasses.field(default_factory=list)
    progress: str | None = None


def run_status(out: Path, cfg: Any) -> RunStatus:
    """The state of run directory ``out`` for config ``cfg`` (a run is complete once its metrics are written)."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return RunStatus("absent")
    differences = config_differences(yaml.safe_load(saved.read_text()) or {}, to_dict(cfg))
    if differences:
        return RunStatus("conflicting", differences=differences)
    if (out / "metrics.json").is_file():
        return RunStatus("complete")
    predictions = out / "predictions.jsonl"
    done = predictions.read_bytes().count(b"\n") if predictions.is_file() else 0
    return RunStatus("partial", progress=f"{done:,} predictions" if done else None)


def read_record(out: Path) -> dict[str, Any] | None:
    path = out / RECORD
    return read_json(path) if path.is_file() else None


def finished(out: Path) -> str | None:
    """When the study last saw this run finish (None if never)."""
    record = read_record(out)
    return record.get("finished") if record else None


def start_record(out: Path, identity: str, upstream: dict[str, str], argv: list[str]) -> None:
    upstream_now = {
        need: {"identity": ident, "finished": finished(out.parent / need)} for need, ident in upstream.items()
    }
    write_json(
        out / RECORD,
        {
            "identity": identity,
            "upstream": upstream_now,
            "argv": argv,
            "started": _now(),
            "finished": None,
            "wall_time_s": None,
        },
    )


def finish_record(out: Path, wall_time_s: float | None) -> None:
    record = read_record(out) or {}
    record.update(finished=_now(), wall_time_s=None if wall_time_s is None else round(wall_time_s, 3))
    write_json(out / RECORD, record)


def adopt_record(out: Path, identity: str) -> None:
    """Record a complete run made outside the study (same config, no upstream) as this study's."""
    write_json(out / RECORD, {"identity": identity, "upstream": {}, "adopted": _now(), "finished": _now()})


def stale_upstream(out: Path, upstream: dict[str, str]) -> list[str]:
    """Runs among ``upstream`` whose identity or completion differs from what this run was made from."""
    record = read_record(out)
    if not upstream:
        return []
    if record is None:
        return sorted(upstream)
    seen = record.get("upstream") or {}
    stale = []
    for need, identity in upstream.items():
        entry = seen.get(need) or {}
        if entry.get("identity") != identity or entry.get("finished") != finished(out.parent / need):
            stale.append(need)
    return stale


def _now() -> str:
    """Microseconds, so that a rerun within the same second still reads as a different completion."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
