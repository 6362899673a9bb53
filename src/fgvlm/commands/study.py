"""``fgvlm study run|submit``: a whole table of runs from one YAML, resumable, on one machine or a SLURM cluster."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Run a study (a YAML list of runs) here, or submit it to SLURM.", no_args_is_help=True)

OUT_HELP = "Study directory: one run directory per run id, results.csv, results.md."
SET_HELP = "Override a run's config: RUN_ID.key=value, or *.key=value for every run that has the key."
SWAP_HELP = "Replace every config value equal to OLD by NEW, e.g. qwen3-vl-4b=tiny-qwen3-vl."
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
) -> int:
    """Run every pending run of a study in order; skip complete ones, resume partial ones, refuse changed ones.

    Examples:

      fgvlm study run configs/studies/demo.yaml --out runs/demo

      fgvlm study run configs/studies/flowers102-reference.yaml --out runs/ref --dry-run

      fgvlm study run configs/studies/demo.yaml --out runs/demo --rerun cnn --set cnn.epochs=40

      fgvlm study run configs/studies/flowers102-reference.yaml --out runs/tiny --swap qwen3-vl-4b=tiny-qwen3-vl
    """
    from fgvlm.study.launch import Interrupted
    from fgvlm.study.plan import plan_study
    from fgvlm.study.resolve import load_study
    from fgvlm.study.runner import check_refusals, execute, study_lines

    loaded = load_study(study, out, overrides=overrides, swaps=swaps)
    steps = plan_study(loaded, rerun=rerun, only=only)
    typer.echo(f"study {loaded.spec.name}: {len(loaded.runs)} runs -> {loaded.out}")
    for step in steps:
        typer.echo("  " + step.line())
    if dry_run:
        check_refusals(steps)
        return 0
    try:
        outcome = execute(loaded, steps, keep_going=keep_going, wait=wait, echo=lambda line: typer.echo(line))
    except Interrupted as stop:
        typer.echo(f"stopped by {stop}: the interrupted run is partial; the same command resumes it", err=True)
        return 128 + stop.signum
    for line in study_lines(outcome):
        typer.echo(line)
    if only is None:
        _write_results(loaded)
    return 0 if outcome.ok else 1


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
