"""Decide, for each run of a resolved study, what a runner will do with it (``--dry-run`` prints this).

- ``skip``: complete, same identity, made from the upstream runs now on disk;
- ``resume``: partial with the same config (the same command runs again and continues);
- ``run``: absent, or ``--rerun`` (the old directory is moved aside), or stale because a run it needs changed or
  will run again (the old directory is moved aside);
- ``refuse``: the directory holds this run with another config; the differing keys are named and nothing runs
  until the study is changed back or ``--rerun ID`` is given;
- ``blocked``: needs a refused run; ``unavailable``: a path in ``requires`` is missing (or a needed run is).
"""

from __future__ import annotations

import dataclasses

from fgvlm.config import ConfigError
from fgvlm.runs import run_status
from fgvlm.study.record import read_record, stale_upstream
from fgvlm.study.resolve import ResolvedRun, Study

EXECUTES = ("run", "resume")


@dataclasses.dataclass
class Step:
    run: ResolvedRun
    action: str
    reason: str = ""
    fresh: bool = False
    """Move an existing directory aside before running."""

    def line(self) -> str:
        return f"{self.action:<11} {self.run.id:<24} {self.reason}".rstrip()


def plan_study(study: Study, *, rerun: tuple[str, ...] | list[str] = (), only: str | None = None) -> list[Step]:
    """One step per run, in dependency order; with ``only``, the step of that run alone (its needs must be done)."""
    for run_id in [*rerun, *([only] if only else [])]:
        if run_id not in study.runs:
            raise ConfigError(f"{study.path}: no run {run_id!r}; runs: {', '.join(study.runs)}")
    steps: dict[str, Step] = {}
    for run in study.runs.values():
        steps[run.id] = plan_run(run, steps, rerun=run.id in rerun)
    if only is None:
        return list(steps.values())
    pending = [need for need in study.runs[only].spec.needs if steps[need].action != "skip"]
    if pending and steps[only].action in EXECUTES:
        states = ", ".join(f"{need} ({steps[need].action})" for need in pending)
        raise ConfigError(f"cannot run {only!r} alone: it needs {states}, not complete yet")
    return [steps[only]]


def plan_run(run: ResolvedRun, steps: dict[str, Step], *, rerun: bool = False) -> Step:
    """The step for one run, given the steps already planned for the runs it needs."""
    if run.missing:
        return Step(run, "unavailable", f"missing {run.missing[0]}")
    needs = [steps[need] for need in run.spec.needs]
    for need in needs:
        if need.action in ("unavailable", "refuse", "blocked"):
            action = "unavailable" if need.action == "unavailable" else "blocked"
            return Step(run, action, f"needs {need.run.id} ({need.action})")
    status = run_status(run.out, run.config)
    exists = status.state != "absent"
    if rerun:
        return Step(run, "run", "--rerun: the old directory is moved aside" if exists else "", fresh=exists)
    if status.state == "conflicting":
        return Step(run, "refuse", "config changed: " + "; ".join(status.differences))
    changed = [need.run.id for need in needs if need.action in EXECUTES]
    changed += [need for need in stale_upstream(run.out, run.upstream) if need not in changed]
    if exists and changed:
        return Step(run, "run", f"upstream changed: {', '.join(changed)} (the old directory is moved aside)", True)
    if status.state == "complete":
        return _complete(run)
    if status.state == "partial":
        return Step(run, "resume", f"partial: {status.progress}" if status.progress else "partial")
    return Step(run, "run")


def _complete(run: ResolvedRun) -> Step:
    record = read_record(run.out)
    if record is None:  # made by hand with the same config and no upstream: the runner adopts it
        return Step(run, "skip", "complete (made outside the study)")
    if record.get("finished") is None:
        return Step(run, "resume", "its process did not report success")
    return Step(run, "skip", "complete")


def refusals(steps: list[Step]) -> list[Step]:
    return [step for step in steps if step.action == "refuse"]
