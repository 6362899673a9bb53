"""The files of a run directory, written so that a killed process never leaves half a file behind.

JSON files are replaced atomically (``write_json``: temp file + rename). JSONL files grow line by line
(``append_jsonl``, flushed and fsynced); a reader keeps complete lines only (``read_jsonl`` cuts a trailing partial
line, left by a writer killed mid-line, off the file). Shrinking a JSONL file -- a resumed run forgetting what it
logged after its last checkpoint, or the predictions of an unfinished batch -- goes through ``keep_jsonl`` /
``truncate_jsonl`` / ``keep_first_lines``, and a whole new content through ``rewrite_jsonl``: the one way each is
done, for every kind of run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline; a trailing partial line is truncated away (on disk too)."""
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end != len(raw):
        with path.open("r+b") as fh:
            fh.truncate(end)
    return raw[:end]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (``[]`` when absent): complete lines only (see ``_complete_lines``)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in _complete_lines(path).splitlines() if line.strip()]


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append one line per record, flushed and fsynced (a kill loses at most the line being written)."""
    with Path(path).open("a") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _replace_lines(path: Path, lines: Iterable[bytes]) -> None:
    """Replace ``path`` with ``lines`` (each ending in a newline) atomically: temp file, fsync, ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            for line in lines:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rewrite_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file with ``records`` atomically: a kill keeps the old file whole, never a mix."""
    _replace_lines(Path(path), (json.dumps(record, sort_keys=False).encode() + b"\n" for record in records))


def keep_jsonl(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Keep only the lines whose record passes ``keep`` (their bytes unchanged), atomically; returns those records.

    A missing file stays missing (``[]``); a trailing partial line is dropped.
    """
    path = Path(path)
    if not path.exists():
        return []
    kept_lines, kept = [], []
    for line in _complete_lines(path).splitlines(keepends=True):
        if line.strip() and keep(record := json.loads(line)):
            kept_lines.append(line)
            kept.append(record)
    _replace_lines(path, kept_lines)
    return kept


def truncate_jsonl(path: str | Path, max_step: int | float, key: str = "step") -> list[dict[str, Any]]:
    """Drop the lines whose ``key`` is beyond ``max_step`` (a resume from that step logs them again).

    The training logs' rule: ``train_log.jsonl`` of a run resumed from a step-``N`` (or epoch-``N``, with
    ``key="epoch"``) checkpoint keeps the lines up to ``N``.
    """
    return keep_jsonl(path, lambda record: record[key] <= max_step)


def keep_first_lines(path: str | Path, count: int) -> None:
    """Cut a JSONL file to its first ``count`` lines in place (kept bytes unchanged, so a resumed run's file ends
    byte-identical to an uninterrupted one's); a missing file is left missing."""
    path = Path(path)
    if not path.exists():
        return
    raw = path.read_bytes()
    end = 0
    for _ in range(count):
        end = raw.index(b"\n", end) + 1
    with path.open("r+b") as fh:
        fh.truncate(end)
