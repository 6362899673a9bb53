"""Carry out a study's plan: each pending run as one locked subprocess, in dependency order.

Before anything runs, a plan that refuses any run stops the study with the differing keys named. Each run then:
takes its lock, checks its state again (another runner may have finished it meanwhile), moves a stale or ``--rerun``
directory aside to ``RUN.old-<time>`` (never deleted), writes ``RUN/config.yaml`` and ``RUN/study.json``, runs
``python -m fgvlm <kind> --config RUN/config.yaml --out RUN`` and marks the record finished on success. The first
failure stops the study unless ``keep_going``; dependants of a failed run are skipped and reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from fgvlm.config import ConfigError, save_yaml
from fgvlm.study.launch import launch_argv, run_process
from fgvlm.study.lock import RunLock
from fgvlm.study.plan import EXECUTES, Step, plan_run, refusals
from fgvlm.study.record import adopt_record, finish_record, read_record, start_record
from fgvlm.study.resolve import Study


class StudyRefusedError(ConfigError):
    """A run directory holds a run made with another config."""


@dataclasses.dataclass
class Outcome:
    """What happened to each run: done (ran now), skipped (was complete), failed, not run (and why)."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    not_run: dict[str, str] = dataclasses.field(default_factory=dict)

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
    study: Study, steps: list[Step], *, keep_going: bool = False, wait: bool = False, echo: Callable = print
) -> Outcome:
    """Run every step that needs running; return what happened (a failure stops the rest unless keep_going)."""
    check_refusals(steps)
    outcome = Outcome()
    stopped_by: str | None = None
    for step in steps:
        run_id = step.run.id
        failed_needs = [need for need in step.run.spec.needs if need in outcome.failed or need in outcome.not_run]
        if stopped_by is not None:
            outcome.not_run[run_id] = f"not started: {stopped_by} failed"
        elif step.action == "skip":
            if read_record(step.run.out) is None:
                adopt_record(step.run.out, step.run.identity)
            outcome.skipped.append(run_id)
        elif step.action not in EXECUTES:
            outcome.not_run[run_id] = f"{step.action}: {step.reason}"
        elif failed_needs:
            outcome.not_run[run_id] = f"skipped: needs {', '.join(failed_needs)}"
        else:
            returncode = _execute_step(study, step, wait=wait, echo=echo)
            if returncode is None:
                outcome.skipped.append(run_id)
            elif returncode == 0:
                outcome.done.append(run_id)
            else:
                outcome.failed[run_id] = returncode
                echo(f"[{run_id}] failed (exit code {returncode}); its log: {step.run.out / 'log.txt'}")
                if not keep_going:
                    stopped_by = run_id
    return outcome


def _execute_step(study: Study, step: Step, *, wait: bool, echo: Callable) -> int | None:
    """Run one step under its lock; None if, once locked, the run turned out complete already."""
    run = step.run
    with RunLock(study.out / ".locks" / f"{run.id}.lock", wait=wait, echo=echo) as lock:
        if not step.fresh:
            step = plan_run(run, {need: Step(study.runs[need], "skip") for need in run.spec.needs})
            check_refusals([step])
            if step.action == "skip":
                echo(f"[{run.id}] complete meanwhile (another runner); skipped")
                return None
        if step.fresh and run.out.exists():
            echo(f"[{run.id}] moved the old run aside to {move_aside(run.out)}")
        run.out.mkdir(parents=True, exist_ok=True)
        config_path = run.out / "config.yaml"
        save_yaml(run.config_data, config_path)
        argv = launch_argv(run.spec, config_path, run.out)
        start_record(run.out, run.identity, run.upstream, argv)
        echo(f"[{run.id}] {step.action}{': ' + step.reason if step.reason else ''}")
        started = time.perf_counter()
        returncode = run_process(argv, run.out / "log.txt", prefix=f"[{run.id}] ", echo=echo, keep_fds=(lock.fd,))
        if returncode == 0:
            finish_record(run.out, time.perf_counter() - started)
            echo(f"[{run.id}] finished in {time.perf_counter() - started:.1f} s")
        return returncode


def study_lines(outcome: Outcome) -> list[str]:
    """A short account of the whole study for the end of its output."""
    lines = [f"ran {len(outcome.done)}, skipped {len(outcome.skipped)} (complete), failed {len(outcome.failed)}"]
    lines += [f"  failed: {run_id} (exit code {code})" for run_id, code in outcome.failed.items()]
    lines += [f"  not run: {run_id}: {why}" for run_id, why in outcome.not_run.items()]
    return lines


def move_aside(out: Path) -> Path:
    """Rename a run directory to ``<name>.old-<time>`` (a second move in the same second gets a counter)."""
    stem = f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, count = out.with_name(stem), 1
    while aside.exists():
        count += 1
        aside = out.with_name(f"{stem}-{count}")
    out.rename(aside)
    return aside
