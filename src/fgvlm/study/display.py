"""What a study runner shows while its runs go: a live view in a terminal, steady progress lines in a log.

Each run's process writes its progress to ``RUN/progress.json`` (``fgvlm.progress``); the runner reads those files.

- ``LiveDisplay`` (a terminal): one live line per running run (name, stage, done/total, rate, ETA, elapsed) above
  the finished runs' summaries; the runs' own output stays in their ``RUN/log.txt`` (a failed run's summary shows
  its last lines). When the study ends the summaries are printed in full.
- ``LineDisplay`` (a log, SLURM, a pipe): the runs' output lines, prefixed ``[id]``, as they come, and one progress
  line per running run every ``interval`` seconds and whenever it passes another 10 % (at most one every
  ``interval / 6`` seconds, so that a stage of a few seconds does not print ten lines).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvlm.progress import read_progress

TAIL_LINES = 5


@dataclasses.dataclass
class RunningRun:
    run_id: str
    progress_path: Path
    started: float
    tail: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    state: dict[str, Any] | None = None
    printed_at: float = 0.0
    printed: tuple[str, int] = ("", -1)
    """The stage and tenth of the last progress line printed."""


def duration(seconds: float | None) -> str:
    """'45s', '2m05s', '1h02m'; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def progress_text(state: dict[str, Any] | None) -> str:
    """'eval 120/600 (20%) · 3.20/s · ETA 2m30s' from a progress file's state ('' without one)."""
    if not state or not state.get("stage"):
        return ""
    done, total, rate = state.get("done"), state.get("total"), state.get("rate")
    text = f"{state['stage']} {_count(done)}"
    if isinstance(total, (int, float)) and total > 0 and isinstance(done, (int, float)):
        text += f"/{_count(total)} ({100 * done / total:.0f}%)"
    if isinstance(rate, (int, float)):
        text += f" · {rate:.2f}/s"
    if isinstance(state.get("eta"), (int, float)):
        text += f" · ETA {duration(state['eta'])}"
    return text


def tenth(state: dict[str, Any] | None) -> int:
    """Which tenth of its stage a run has reached (-1 without a total)."""
    if not state:
        return -1
    done, total = state.get("done"), state.get("total")
    if not isinstance(done, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
        return -1
    return min(10, int(10 * done / total))


class Display(abc.ABC):
    """The part both displays share: the running runs and their progress files (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.RLock()
        self.running: dict[str, RunningRun] = {}

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run_started(self, run_id: str, progress_path: Path, text: str) -> None:
        with self.lock:
            self.running[run_id] = RunningRun(run_id, progress_path, self.clock(), printed_at=self.clock())
        self.message(text)

    def run_line(self, run_id: str, text: str) -> None:
        with self.lock:
            if run_id in self.running:
                self.running[run_id].tail.append(text)

    def run_ended(self, run_id: str, text: str, *, failed: bool = False) -> None:
        with self.lock:
            run = self.running.pop(run_id, None)
        if failed and run is not None and run.tail:
            text += "".join(f"\n    {line}" for line in run.tail)
        self.message(text)

    @abc.abstractmethod
    def message(self, text: str) -> None:
        """Show one line (or a few) about the study: a run started, finished, failed, waits for a lock."""

    def poll(self) -> list[RunningRun]:
        """Read every running run's progress file; returns the running runs."""
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            run.state = read_progress(run.progress_path) or run.state
        return runs

    def refresh(self) -> None:
        self.poll()


class LineDisplay(Display):
    """For output that is not a terminal: every line printed once, in order (see the module)."""

    def __init__(self, echo: Callable[[str], None] = print, interval: float = 30.0, clock=time.monotonic):
        super().__init__(clock)
        self.echo = echo
        self.interval = interval

    def message(self, text: str) -> None:
        with self.lock:
            self.echo(text)

    def run_line(self, run_id: str, text: str) -> None:
        super().run_line(run_id, text)
        self.message(f"[{run_id}] {text}")

    def run_ended(self, run_id: str, text: str, *, failed: bool = False) -> None:
        super().run_ended(run_id, text)  # its lines were printed as they came

    def refresh(self) -> None:
        now = self.clock()
        for run in self.poll():
            if run.state is None:
                continue
            reached = (str(run.state.get("stage")), tenth(run.state))
            new_tenth = reached[0] != run.printed[0] or reached[1] > run.printed[1]
            since = now - run.printed_at
            if since < self.interval and not (new_tenth and since >= self.interval / 6):  # quick stages: few lines
                continue
            run.printed_at, run.printed = now, reached
            self.message(f"[{run.run_id}] progress: {progress_text(run.state)} · {duration(now - run.started)} in")


class LiveDisplay(Display):
    """For a terminal: a rich ``Live`` view, redrawn by ``refresh`` (see the module)."""

    def __init__(self, console: Any = None, labels: dict[str, str] | None = None, clock=time.monotonic):
        from rich.console import Console

        super().__init__(clock)
        self.console = console or Console()
        self.labels = labels or {}
        self.summaries: list[str] = []
        self.live: Any = None

    def __enter__(self) -> LiveDisplay:
        from rich.live import Live

        self.live = Live(self.render(), console=self.console, auto_refresh=False, transient=True)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)
        for summary in self.summaries:
            self.console.print(summary, markup=False, highlight=False)

    def run_started(self, run_id: str, progress_path: Path, text: str) -> None:
        with self.lock:
            self.running[run_id] = RunningRun(run_id, progress_path, self.clock())
        self.refresh()

    def message(self, text: str) -> None:
        with self.lock:
            self.summaries.append(text)
        self.refresh()

    def render(self) -> Any:
        """The running runs' table, then as many of the latest summaries as the terminal has room for."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = self.clock()
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for column in ("running", "stage", "progress", "rate", "ETA", "elapsed"):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        with self.lock:
            runs, summaries = list(self.running.values()), list(self.summaries)
        for run in runs:
            table.add_row(*self.row(run, now))
        room = max(3, self.console.size.height - len(runs) - 3)
        shown = [line for summary in summaries for line in summary.splitlines()][-room:]
        return Group(*([table] if runs else []), *(Text(line) for line in shown))

    def row(self, run: RunningRun, now: float) -> list[str]:
        name = run.run_id if run.run_id not in self.labels else f"{run.run_id} ({self.labels[run.run_id]})"
        state = run.state or {}
        if not state.get("stage"):
            return [name, "starting: " + (run.tail[-1] if run.tail else ""), "", "", "", duration(now - run.started)]
        done, total = state.get("done"), state.get("total")
        progress = _count(done) + (f"/{_count(total)}" if total else "")
        if isinstance(total, (int, float)) and total > 0 and isinstance(done, (int, float)):
            progress += f" ({100 * done / total:.0f}%)"
        rate = f"{state['rate']:.2f}/s" if isinstance(state.get("rate"), (int, float)) else ""
        eta = duration(state.get("eta")) if isinstance(state.get("eta"), (int, float)) else ""
        return [name, str(state["stage"]), progress, rate, eta, duration(now - run.started)]

    def refresh(self) -> None:
        self.poll()
        if self.live is not None:
            self.live.update(self.render(), refresh=True)
