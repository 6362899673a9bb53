"""``fgvlm study run|submit``: a whole table of runs from one YAML, resumable, on one machine or a SLURM cluster."""

from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(help="Run a study (a YAML list of runs) here, or submit it to SLURM.", no_args_is_help=True)

OUT_HELP = "Study directory: one run directory per run id, results.csv, results.md."
SET_HELP = "Override a run's config: RUN_ID.key=value, or *.key=value for every run that has the key."
SWAP_HELP = "Replace every config value equal to OLD by NEW, e.g. qwen3-vl-4b=tiny-qwen3-vl."
JOBS_HELP = "Run up to N runs at once (those whose needs are finished); each gets cores/N threads."
GPUS_HELP = (
    "Give each run its own K of the visible GPUs (CUDA_VISIBLE_DEVICES); a run with launch.nproc P gets max(K, P). "
    "0: every run sees every GPU."
)
PROGRESS_HELP = "When the output is not a terminal: a progress line per running run every this many seconds."
RERUN_HELP = "Run this run again: its directory is moved aside to ID.old-TIME (never deleted)."


@app.command()
def run(
    study: Path = typer.Argument(..., help="Study YAML (see configs/studies/)."),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what each run would do, run nothing."),
    rerun: list[str] = typer.Option([], "--rerun", help=RERUN_HELP),
    only: str = typer.Option(None, "--only", help="Run this one run (its needs must be complete); for cluster jobs."),
    keep_going: bool = typer.Option(
        False, "--keep-going", help="After a failure, go on with runs that do not need it."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for a run another process is writing instead of failing."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    swaps: list[str] = typer.Option([], "--swap", help=SWAP_HELP),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help=JOBS_HELP),
    gpus_per_run: int = typer.Option(0, "--gpus-per-run", min=0, help=GPUS_HELP),
    progress_every: float = typer.Option(30.0, "--progress-every", min=0.1, help=PROGRESS_HELP),
) -> int:
    """Run every pending run of a study, needs first; skip complete ones, resume partial ones, refuse changed ones.

    With --jobs N up to N runs go at once (each with its share of the cores; with --gpus-per-run K, its own GPUs).
    In a terminal one live line per running run shows its stage, progress, rate and ETA; in a log a progress line
    per run is printed every --progress-every seconds and at each 10 %. Each run's full output is in RUN/log.txt.

    Examples:

      fgvlm study run configs/studies/demo.yaml --out runs/demo

      fgvlm study run configs/studies/demo.yaml --out runs/demo --jobs 2

      fgvlm study run configs/studies/flowers102-reference.yaml --out runs/ref --jobs 4 --gpus-per-run 2

      fgvlm study run configs/studies/flowers102-reference.yaml --out runs/ref --dry-run

      fgvlm study run configs/studies/demo.yaml --out runs/demo --rerun cnn --set cnn.epochs=40

      fgvlm study run configs/studies/flowers102-reference.yaml --out runs/tiny --swap qwen3-vl-4b=tiny-qwen3-vl
    """
    from fgvlm.study.launch import Interrupted
    from fgvlm.study.plan import plan_study
    from fgvlm.study.resolve import load_study
    from fgvlm.study.runner import check_refusals, execute, study_lines, timing_line

    began = time.perf_counter()
    loaded = load_study(study, out, overrides=overrides, swaps=swaps)
    steps = plan_study(loaded, rerun=rerun, only=only)
    typer.echo(f"study {loaded.spec.name}: {len(loaded.runs)} runs -> {loaded.out}")
    for step in steps:
        typer.echo("  " + step.line())
    if dry_run:
        check_refusals(steps)
        return 0
    display = _display(loaded, progress_every)
    try:
        outcome = execute(
            loaded, steps, keep_going=keep_going, wait=wait, jobs=jobs, gpus_per_run=gpus_per_run, display=display
        )
    except Interrupted as stop:
        typer.echo(f"stopped by {stop}: the interrupted runs are partial; the same command resumes them", err=True)
        return 128 + stop.signum
    for line in study_lines(outcome):
        typer.echo(line)
    if only is None:
        _write_results(loaded)
    typer.echo(timing_line(outcome, time.perf_counter() - began))
    return 0 if outcome.ok else 1


def _display(loaded, interval: float):
    """A live view in a terminal, progress lines every ``interval`` seconds otherwise."""
    from rich.console import Console

    from fgvlm.study.display import LineDisplay, LiveDisplay

    console = Console()
    if console.is_terminal:
        labels = {run_id: run.spec.label for run_id, run in loaded.runs.items() if run.spec.label}
        return LiveDisplay(console, labels=labels)
    return LineDisplay(lambda line: typer.echo(line), interval=interval)


def _write_results(loaded) -> None:
    from fgvlm.study.results import build_study_report, print_table, write_study_results

    rows, csv_path, md_path = write_study_results(loaded)
    print_table(rows, title=f"{loaded.spec.name}: test accuracy (%)")
    typer.echo(f"results: {md_path} and {csv_path}")
    report = build_study_report(loaded)
    if report is not None:
        typer.echo(f"report: {report}")


@app.command()
def submit(
    study: Path = typer.Argument(..., help="Study YAML (see configs/studies/)."),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    partition: str = typer.Option(None, "--partition", "-p", help="SLURM partition of every job."),
    account: str = typer.Option(None, "--account", "-A", help="SLURM account of every job."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the sbatch scripts and print, submit nothing."),
    rerun: list[str] = typer.Option([], "--rerun", help=RERUN_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    swaps: list[str] = typer.Option([], "--swap", help=SWAP_HELP),
) -> None:
    """Submit one SLURM job per pending run, each after the jobs of the runs it needs (afterok).

    Each job runs `fgvlm study run STUDY --out OUT --only ID`, which starts torchrun itself and resumes when the job
    is requeued. Resources per run come from its `slurm:` block (gpus, cpus, time, mem, extra).

    Examples:

      fgvlm study submit configs/studies/flowers102-reference.yaml --out /scratch/ref --partition gpu --dry-run

      fgvlm study submit configs/studies/flowers102-reference.yaml --out /scratch/ref -p gpu -A proj123
    """
    from fgvlm.study.plan import plan_study
    from fgvlm.study.resolve import load_study
    from fgvlm.study.runner import check_refusals, move_aside
    from fgvlm.study.slurm import ClusterOptions, submit_jobs

    loaded = load_study(study, out, overrides=overrides, swaps=swaps)
    steps = plan_study(loaded, rerun=rerun)
    check_refusals(steps)
    if not dry_run:  # a requeued job must resume, not move its run aside again: move aside now, once
        for step in steps:
            if step.fresh and step.run.out.exists():
                typer.echo(f"moved {step.run.id} aside to {move_aside(step.run.out)}")
    forwarded = [f"--set={text}" for text in overrides] + [f"--swap={text}" for text in swaps]
    options = ClusterOptions(partition=partition, account=account, overrides=forwarded)
    jobs = submit_jobs(loaded, steps, options, dry_run=dry_run, echo=typer.echo)
    typer.echo(f"submitted {len(jobs)} job(s); scripts in {loaded.out / 'slurm'}" if not dry_run else "dry run")
