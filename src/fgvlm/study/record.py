"""What a study knows about each of its run directories beyond the run's own state: ``RUN/study.json``.

The run's own state (absent, partial with progress, complete by its ``done.json``, conflicting with the differing
keys) is ``fgvlm.runs.run_status``. ``RUN/study.json`` adds the run's study identity, the identity and completion
time of each run it needs, when it started and when it finished (null until the run's process exits with success).
A dependant whose recorded upstream differs from the upstream now on disk (changed config, or rerun) is stale and
runs again.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from fgvlm.runs import read_json, write_json

RECORD = "study.json"


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
