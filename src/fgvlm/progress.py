"""Progress of long work: rich bars for a terminal, and a small JSON file a study runner reads while the run goes.

A study runs each run as a child process whose output is not a terminal, so a rich bar there shows nothing until
the run ends. The runner sets ``FGVLM_PROGRESS_FILE`` (``RUN/progress.json``) for each child; every bar made with
``ReportingProgress`` (the Trainer's steps included: ``fgvlm.sft.trainer.TrainingProgress``) then rewrites that
file, atomically and at most once a second, with::

    {"stage": "eval", "done": 120, "total": 600, "rate": 3.2, "eta": 150.0, "updated_at": 1767000000.0, "pid": 4242}

``rate`` is units (images, steps) per second since the stage began in this process, ``eta`` the seconds left at
that rate (null while unknown), ``updated_at`` the Unix time of the write, ``pid`` the writing process. Without the
variable nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

PROGRESS_FILE_ENV = "FGVLM_PROGRESS_FILE"
MIN_INTERVAL_S = 1.0


class ProgressFile:
    """Writes one process's progress to ``path``: at most every ``min_interval`` s, always on a new stage or the end."""

    def __init__(self, path: str | Path, min_interval: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.min_interval = min_interval
        self.clock = clock
        self.stage: str | None = None
        self.began = 0.0
        self.done_at_start = 0.0
        self.last_done = 0.0
        self.last_write: float | None = None

    def report(self, stage: str, done: float, total: float | None) -> bool:
        """Record ``done`` of ``total`` in ``stage``; returns whether the file was rewritten."""
        now = self.clock()
        new_stage = stage != self.stage or done < self.last_done  # a bar restarted (next epoch) is a new stage too
        if new_stage:
            self.stage, self.began, self.done_at_start = stage, now, done
        self.last_done = done
        finished = total is not None and done >= total
        if not (new_stage or finished) and self.last_write is not None and now - self.last_write < self.min_interval:
            return False
        elapsed, progressed = now - self.began, done - self.done_at_start
        rate = progressed / elapsed if elapsed > 0 and progressed > 0 else None
        eta = (total - done) / rate if rate and total is not None else None
        state = {"stage": stage, "done": done, "total": total, "rate": rate, "eta": eta, "updated_at": now}
        state["pid"] = os.getpid()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state) + "\n")
        os.replace(temporary, self.path)
        self.last_write = now
        return True


_writers: dict[str, ProgressFile] = {}


def report_progress(stage: str, done: float, total: float | None) -> None:
    """Write this process's progress to ``$FGVLM_PROGRESS_FILE`` (a study runner's), if it is set."""
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return
    writer = _writers.setdefault(path, ProgressFile(path))
    with contextlib.suppress(OSError):  # a convenience: a full disk or a moved run never stops the work
        writer.report(stage, done, total)


def read_progress(path: Path) -> dict[str, Any] | None:
    """A run's last progress state, or None (no file yet, or unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class ReportingProgress(Progress):
    """``rich.progress.Progress`` that also reports its first unfinished task to a study runner (see the module).

    A task's ``description`` names the stage; an ``epoch`` field, if the task has one, is added to it.
    A disabled bar (other ranks, ``progress: false``) reports nothing.
    """

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report()

    def _report(self) -> None:
        if self.disable:
            return
        task = next((t for t in self.tasks if not t.finished), self.tasks[-1] if self.tasks else None)
        if task is None:
            return
        epoch = task.fields.get("epoch")
        stage = task.description if epoch is None else f"{task.description} epoch {epoch}"
        report_progress(stage, task.completed, task.total)


def track(
    sequence: Any, description: str, *, total: float | None = None, transient: bool = False, disable: bool = False
) -> Any:
    """``rich.progress.track`` with a ``ReportingProgress``."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with ReportingProgress(*columns, transient=transient, disable=disable) as bar:
        yield from bar.track(sequence, total=total, description=description)
