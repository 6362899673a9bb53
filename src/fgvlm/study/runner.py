"""Carry out a study's plan: each pending run as one locked subprocess, up to ``jobs`` at once, needs first.

Before anything runs, a plan that refuses any run stops the study with the differing keys named. A run starts as
soon as the runs it needs are finished and one of the ``jobs`` slots (and, with ``gpus_per_run``, enough free GPUs)
is free; independent runs never wait for each other. Each run then: takes its lock, checks its state again (another
runner may have finished it meanwhile), moves a stale or ``--rerun`` directory aside to ``RUN.old-<time>`` (never
deleted), writes ``RUN/config.yaml`` and ``RUN/study.json``, runs ``python -m fgvlm <kind> --config RUN/config.yaml
--out RUN`` with its share of the cores and devices (``fgvlm.study.resources``, stated in ``RUN/log.txt``) and marks
the record finished on success. The first failure stops new launches unless ``keep_going`` (runs already going
finish); dependants of a failed run are skipped and reported. SIGINT/SIGTERM reach every running child; the runner
waits for them and raises ``Interrupted``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from fgvlm.config import ConfigError, save_yaml
from fgvlm.study.display import Display, LineDisplay
from fgvlm.study.launch import Interrupted, SignalForwarder, launch_argv, run_process
from fgvlm.study.lock import RunLock
from fgvlm.study.plan import EXECUTES, Step, plan_run, refusals
from fgvlm.study.record import adopt_record, finish_record, read_record, start_record
from fgvlm.study.resolve import Study
from fgvlm.study.resources import Allocation, Resources, available_cores, visible_devices

PROGRESS_FILE = "progress.json"
POLL_S = 0.5


class StudyRefusedError(ConfigError):
    """A run directory holds a run made with another config."""


@dataclasses.dataclass
class Outcome:
    """What happened to each run: done (ran now), skipped (was complete), failed, not run (and why)."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    not_run: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall time of each run that ran now (finished or failed)."""
    wall_s: float = 0.0
    """Wall time of ``execute`` as a whole."""

    @property
    def ok(self) -> bool:
        return not self.failed


def check_refusals(steps: list[Step]) -> None:
    refused = refusals(steps)
    if refused:
        lines = "; ".join(f"{step.run.id}: {step.reason}" for step in refused)
        ids = " ".join(f"--rerun {step.run.id}" for step in refused)
        raise StudyRefusedError(f"refusing to change existing runs ({lines}); restore the study or pass {ids}")


def execute(
    study: Study,
    steps: list[Step],
    *,
    keep_going: bool = False,
    wait: bool = False,
    echo: Callable = print,
    jobs: int = 1,
    gpus_per_run: int = 0,
    display: Display | None = None,
) -> Outcome:
    """Run every step that needs running, up to ``jobs`` at once; return what happened (see the module)."""
    check_refusals(steps)
    if jobs < 1 or gpus_per_run < 0:
        raise ConfigError(f"--jobs must be at least 1 and --gpus-per-run at least 0, got {jobs} and {gpus_per_run}")
    executable = [step.run.spec for step in steps if step.action in EXECUTES]
    devices = visible_devices() if gpus_per_run and executable else None
    resources = Resources(available_cores(), min(jobs, max(1, len(executable))), devices, gpus_per_run)
    resources.check(executable)
    scheduler = _Scheduler(study, steps, jobs, keep_going, wait, resources, display or LineDisplay(echo))
    return scheduler.run()


def launch_order(steps: list[Step]) -> list[Step]:
    """Runs that others wait for first (most dependants, direct or not), then the study's order: a long chain such as
    fine-tuning and the head on its model starts early instead of after every independent row."""
    dependants: dict[str, set[str]] = {step.run.id: set() for step in steps}
    for step in reversed(steps):  # dependants come after their needs: their own sets are complete here
        for need in step.run.spec.needs:
            if need in dependants:
                dependants[need] |= {step.run.id} | dependants[step.run.id]
    position = {step.run.id: index for index, step in enumerate(steps)}
    return sorted(steps, key=lambda step: (-len(dependants[step.run.id]), position[step.run.id]))


class _Scheduler:
    """The main thread's loop: start ready runs in worker threads, collect the ended ones, refresh the display."""

    def __init__(self, study, steps, jobs, keep_going, wait, resources: Resources, display: Display):
        self.study, self.pending, self.jobs = study, launch_order(steps), jobs
        self.keep_going, self.wait, self.resources, self.display = keep_going, wait, resources, display
        self.running: dict[concurrent.futures.Future, tuple[Step, Allocation, float]] = {}
        self.outcome = Outcome()
        self.stopped_by: str | None = None
        self.error: BaseException | None = None
        self.signals = SignalForwarder()

    def run(self) -> Outcome:
        began = time.perf_counter()
        with self.display, self.signals, concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            while self.pending or self.running:
                self._launch_ready(pool)
                if self.pending and not self.running:  # cannot happen: Resources.check passed, needs come first
                    raise RuntimeError(f"no run can start: {', '.join(step.run.id for step in self.pending)}")
                ended, _ = concurrent.futures.wait(
                    list(self.running), timeout=POLL_S, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in ended:
                    self._collect(future)
                self.display.refresh()
        self.outcome.wall_s = time.perf_counter() - began
        if self.signals.received:
            raise Interrupted(self.signals.received[0])
        if self.error is not None:
            raise self.error
        return self.outcome

    def _launch_ready(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        """Settle every pending step that can be settled now, in launch order; start those that can start."""
        outcome = self.outcome
        for step in list(self.pending):
            run_id = step.run.id
            unsettled = [need for need in step.run.spec.needs if need in self._busy()]
            failed_needs = [need for need in step.run.spec.needs if need in outcome.failed or need in outcome.not_run]
            if self.signals.received:
                outcome.not_run[run_id] = "not started: interrupted"
            elif self.stopped_by is not None:
                outcome.not_run[run_id] = f"not started: {self.stopped_by} failed"
            elif step.action == "skip":
                if read_record(step.run.out) is None:
                    adopt_record(step.run.out, step.run.identity)
                outcome.skipped.append(run_id)
            elif step.action not in EXECUTES:
                outcome.not_run[run_id] = f"{step.action}: {step.reason}"
            elif failed_needs:
                outcome.not_run[run_id] = f"skipped: needs {', '.join(failed_needs)}"
            elif unsettled or len(self.running) >= self.jobs:
                continue
            else:
                allocation = self.resources.take(step.run.spec)
                if allocation is None:
                    continue
                future = pool.submit(self._execute_step, step, allocation)
                self.running[future] = (step, allocation, time.perf_counter())
            self.pending.remove(step)

    def _busy(self) -> set[str]:
        return {step.run.id for step in self.pending} | {step.run.id for step, _, _ in self.running.values()}

    def _collect(self, future: concurrent.futures.Future) -> None:
        step, allocation, started = self.running.pop(future)
        self.resources.give_back(allocation)
        run_id = step.run.id
        try:
            returncode = future.result()
        except Exception as error:  # a lock held elsewhere, a run that changed meanwhile: stop like a failure
            self.error = self.error or error
            self.stopped_by = self.stopped_by or run_id
            self.display.run_ended(run_id, f"[{run_id}] {error}", failed=True)
            return
        if returncode is None:
            self.outcome.skipped.append(run_id)
            return
        self.outcome.seconds[run_id] = time.perf_counter() - started
        if returncode == 0:
            self.outcome.done.append(run_id)
            self.display.run_ended(run_id, f"[{run_id}] finished in {self.outcome.seconds[run_id]:.1f} s")
        elif self.signals.received:
            self.outcome.not_run[run_id] = "interrupted: partial, the same command resumes it"
            self.display.run_ended(run_id, f"[{run_id}] interrupted (exit code {returncode}): partial")
        else:
            self.outcome.failed[run_id] = returncode
            log = step.run.out / "log.txt"
            self.display.run_ended(run_id, f"[{run_id}] failed (exit code {returncode}); its log: {log}", failed=True)
            if not self.keep_going:
                self.stopped_by = self.stopped_by or run_id

    def _execute_step(self, step: Step, allocation: Allocation) -> int | None:
        """In a worker thread: run one step under its lock; None if, once locked, the run turned out complete."""
        study, run, display = self.study, step.run, self.display
        lock_path = study.out / ".locks" / f"{run.id}.lock"
        cancelled = lambda: bool(self.signals.received)  # noqa: E731
        with RunLock(lock_path, wait=self.wait, echo=display.message, cancelled=cancelled) as lock:
            if not step.fresh:
                step = plan_run(run, {need: Step(study.runs[need], "skip") for need in run.spec.needs})
                check_refusals([step])
                if step.action == "skip":
                    display.message(f"[{run.id}] complete meanwhile (another runner); skipped")
                    return None
            if step.fresh and run.out.exists():
                display.message(f"[{run.id}] moved the old run aside to {move_aside(run.out)}")
            run.out.mkdir(parents=True, exist_ok=True)
            config_path = run.out / "config.yaml"
            save_yaml(run.config_data, config_path)
            argv = launch_argv(run.spec, config_path, run.out)
            start_record(run.out, run.identity, run.upstream, argv)
            progress = run.out / PROGRESS_FILE
            progress.unlink(missing_ok=True)  # a previous invocation's
            reason = f": {step.reason}" if step.reason else ""
            display.run_started(run.id, progress, f"[{run.id}] {step.action}{reason} ({allocation.describe()})")
            started = time.perf_counter()
            try:
                returncode = run_process(
                    argv,
                    run.out / "log.txt",
                    on_line=lambda line: display.run_line(run.id, line),
                    signals=self.signals,
                    env={**allocation.env(), "FGVLM_PROGRESS_FILE": str(progress)},
                    header=f"# resources: {allocation.describe()}\n",
                    keep_fds=(lock.fd,),
                )
            finally:
                progress.unlink(missing_ok=True)
            if returncode == 0:
                finish_record(run.out, time.perf_counter() - started)
            return returncode


def study_lines(outcome: Outcome) -> list[str]:
    """A short account of the whole study for the end of its output."""
    lines = [f"ran {len(outcome.done)}, skipped {len(outcome.skipped)} (complete), failed {len(outcome.failed)}"]
    lines += [f"  failed: {run_id} (exit code {code})" for run_id, code in outcome.failed.items()]
    lines += [f"  not run: {run_id}: {why}" for run_id, why in outcome.not_run.items()]
    return lines


def timing_line(outcome: Outcome, wall_s: float) -> str:
    """'wall time 95.2 s; the runs' own times sum to 170.4 s (9 runs)': what running them side by side saved."""
    total = sum(outcome.seconds.values())
    count = len(outcome.seconds)
    runs = f"{count} run{'s' if count != 1 else ''}"
    return f"wall time {wall_s:.1f} s; the runs' own times sum to {total:.1f} s ({runs})"


def move_aside(out: Path) -> Path:
    """Rename a run directory to ``<name>.old-<time>`` (a second move in the same second gets a counter)."""
    stem = f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, count = out.with_name(stem), 1
    while aside.exists():
        count += 1
        aside = out.with_name(f"{stem}-{count}")
    out.rename(aside)
    return aside
