"""``fgvlm study submit``: one SLURM job per pending run, chained by ``--dependency=afterok``.

Each job's script calls ``fgvlm study run STUDY --out OUT --only ID``: the job plans its one run again when it
starts (so a requeued job resumes), takes the run's lock and starts torchrun / accelerate itself from the run's
``launch`` block. GPUs, CPUs, time and memory come from the run's ``slurm`` block. Scripts are written to
``OUT/slurm/<id>.sbatch`` and the job ids to ``OUT/slurm/jobs.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fgvlm.config import ConfigError
from fgvlm.study.plan import EXECUTES, Step
from fgvlm.study.resolve import Study


@dataclasses.dataclass
class ClusterOptions:
    partition: str | None = None
    account: str | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    """``--set`` / ``--swap`` arguments passed on to every job's ``fgvlm study run``."""


def sbatch_script(study: Study, step: Step, options: ClusterOptions) -> str:
    """The text of one run's sbatch script."""
    run, slurm = step.run, step.run.spec.slurm
    logs = study.out / "slurm"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={study.spec.name}-{run.id}",
        f"#SBATCH --output={logs}/{run.id}-%j.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={slurm.cpus}",
        f"#SBATCH --time={slurm.time}",
    ]
    lines += [f"#SBATCH --gpus-per-node={slurm.gpus}"] if slurm.gpus else []
    lines += [f"#SBATCH --mem={slurm.mem}"] if slurm.mem else []
    lines += [f"#SBATCH --partition={options.partition}"] if options.partition else []
    lines += [f"#SBATCH --account={options.account}"] if options.account else []
    lines += [f"#SBATCH {extra}" for extra in slurm.extra]
    command = [sys.executable, "-m", "fgvlm", "study", "run", str(study.path), "--out", str(study.out)]
    command += ["--only", run.id, "--wait", *options.overrides]
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        " ".join(f"# {run.spec.name}: {step.action} {step.reason}".split()),  # one comment line, whatever the label
        "exec " + shlex.join(command),
    ]
    return "\n".join(lines) + "\n"


def submit_jobs(
    study: Study, steps: list[Step], options: ClusterOptions, *, dry_run: bool = False, echo: Callable = print
) -> dict[str, str]:
    """Write a script per pending step and submit them in order; returns {run id: job id} (empty on a dry run)."""
    logs = study.out / "slurm"
    logs.mkdir(parents=True, exist_ok=True)
    jobs: dict[str, str] = {}
    for step in steps:
        if step.action not in EXECUTES:
            echo(f"{step.line()}   (no job)")
            continue
        script = logs / f"{step.run.id}.sbatch"
        script.write_text(sbatch_script(study, step, options))
        parents = [jobs[need] for need in step.run.spec.needs if need in jobs]
        argv = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{':'.join(parents)}"] if parents else [])
        argv.append(str(script))
        if dry_run:
            echo(f"{step.line()}\n    would submit: {shlex.join(argv)}")
            jobs[step.run.id] = f"@{step.run.id}"  # stands for the job id of that run
            continue
        jobs[step.run.id] = _sbatch(argv)
        echo(f"{step.line()}\n    job {jobs[step.run.id]}: {shlex.join(argv)}")
    if not dry_run:
        (logs / "jobs.json").write_text(json.dumps(jobs, indent=2) + "\n")
        return jobs
    return {}


def _sbatch(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ConfigError("sbatch not found: `fgvlm study submit` needs a SLURM login node") from None
    if done.returncode != 0:
        raise ConfigError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise ConfigError(f"{shlex.join(argv)}: expected a job id, got {done.stdout.strip()!r}")
    return job_id
