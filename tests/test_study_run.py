"""Studies end to end: real run processes on a tiny model and a 1-epoch tiny CNN (skip, resume after SIGKILL,
refuse, upstream reruns, locks, SLURM submission with a fake sbatch)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fgvlm.cli import main
from fgvlm.study.lock import RunLock, RunLockedError
from fgvlm.study.resources import available_cores

CNN = {
    "data": {"dataset": "synthflowers", "options": {"num_classes": 4, "image_size": 32}},
    "arch": "test_resnet",
    "image_size": 32,
    "epochs": 1,
    "batch_size": 16,
    "num_workers": 0,
    "num_threads": 1,
    "progress": False,
}


@pytest.fixture
def tiny_eval(tiny_model_dir, use_tiny_cache):
    """An eval config on the session's tiny Qwen3-VL (a local folder: nothing to build in the run process)."""
    model = str(tiny_model_dir("qwen3-vl"))
    return lambda **kw: {"data": {"dataset": "synthflowers"}, "model": {"name": model}, "mode": "rank", **kw}


def write_study(tmp_path, runs, **top):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "mini", "runs": runs, **top}, sort_keys=False))
    return path


def study(*args):
    """``fgvlm study ...`` in this process; returns the exit code."""
    with pytest.raises(SystemExit) as code:
        main(["study", *map(str, args)])
    return code.value.code


def finished(out, run_id):
    return json.loads((out / run_id / "study.json").read_text())["finished"]


def test_mini_study_completes_skips_refuses_and_reruns_dependants(tmp_path, tiny_eval, capsys):
    path = write_study(
        tmp_path,
        [
            {"id": "zs", "kind": "eval", "set": tiny_eval(limit=4), "published": 20.78},
            {"id": "zs-after", "kind": "eval", "needs": ["zs"], "set": tiny_eval(limit=3)},
            {"id": "cnn", "kind": "cnn-train", "set": CNN, "label": "tiny CNN", "published": 93.24},
        ],
        reference="zs",
    )
    out = tmp_path / "out"
    assert study("run", path, "--out", out) == 0
    with (out / "results.csv").open() as fh:
        rows = {row["run_id"]: row for row in csv.DictReader(fh)}
    assert list(rows) == ["zs", "zs-after", "cnn"]
    assert rows["zs"]["n"] == "4" and rows["zs-after"]["n"] == "3" and rows["cnn"]["reference_value"] == "0.9324"
    assert rows["zs"]["is_reference"] == "True" and rows["zs-after"]["delta_n"] == "3"  # paired on shared images
    accuracy = json.loads((out / "cnn" / "metrics.json").read_text())["accuracy"]
    assert float(rows["cnn"]["accuracy"]) == pytest.approx(accuracy, abs=1e-5)
    assert "| cnn | tiny CNN |" in (out / "results.md").read_text()
    page = (out / "report" / "report.html").read_text()
    assert "<td>cnn-train · tiny CNN</td>" in page  # the study's label
    assert '<td class="num">93.2</td>' in page  # the published number on its row
    assert "rank on 4 images" in (out / "zs" / "log.txt").read_text()  # the run's own output, kept
    assert "[zs] open-qa / rank on 4 images" in capsys.readouterr().out  # and shown, prefixed
    stamps = {run_id: finished(out, run_id) for run_id in rows}
    drawn = (out / "report" / "report.html").stat().st_mtime_ns

    assert study("run", path, "--out", out) == 0  # everything complete: nothing starts
    printed = capsys.readouterr().out
    assert "ran 0, skipped 3 (complete), failed 0" in printed
    assert "wall time " in printed.splitlines()[-1] and "sum to 0.0 s (0 runs)" in printed.splitlines()[-1]
    assert {run_id: finished(out, run_id) for run_id in rows} == stamps
    assert (out / "report" / "report.html").stat().st_mtime_ns == drawn  # nothing changed: the page is kept

    assert study("run", path, "--out", out, "--set", "cnn.lr=0.2") == 2  # a changed --set is refused, by key
    assert "cnn: config changed: lr: 0.01 -> 0.2" in capsys.readouterr().err

    assert study("run", path, "--out", out, "--set", "zs.limit=5", "--rerun", "zs") == 0  # upstream changes
    printed = capsys.readouterr().out
    assert "upstream changed: zs" in printed and "ran 2, skipped 1" in printed
    assert finished(out, "cnn") == stamps["cnn"] and finished(out, "zs-after") != stamps["zs-after"]
    assert len(list(out.glob("zs.old-*"))) == 1 and len(list(out.glob("zs-after.old-*"))) == 1
    assert json.loads((out / "zs" / "metrics.json").read_text())["n"] == 5
    assert (out / "report" / "report.html").stat().st_mtime_ns != drawn  # new results: drawn again


def start_runner(path, out, log, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "fgvlm", "study", "run", str(path), "--out", str(out), *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def lines_in(path):
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def wait_until(runner, ready, log, what):
    deadline = time.monotonic() + 240
    while not ready():
        assert runner.poll() is None and time.monotonic() < deadline, f"waiting for {what}:\n{log.read_text()}"
        time.sleep(0.01)


def wait_for_lock(path):
    """Returns once nobody holds the run's lock: the run's own process has exited too."""
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.close(fd)


TIMING_COLUMNS = ("path", "wall_time_s", "images_per_second", "device_hours")
"""What differs between two runs of the same config: where they ran, and how long they took (the cost columns)."""


def results_without_paths(out):
    with (out / "results.csv").open() as fh:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(fh)]


def pause_when(runner, out, lines, log):
    """Stop each run's process (SIGSTOP) once its predictions reach ``lines[run]``: both runs are then surely going
    at once and mid-way, whatever the machine's load; returns their process ids (the progress files name them)."""
    pids = {}
    for run_id, count in lines.items():
        file = out / run_id / "predictions.jsonl"
        wait_until(runner, lambda file=file, count=count: lines_in(file) >= count, log, f"{run_id} going")
        pids[run_id] = json.loads((out / run_id / "progress.json").read_text())["pid"]
        os.killpg(pids[run_id], signal.SIGSTOP)
    return pids


def resume_processes(pids):
    for pid in pids.values():
        os.killpg(pid, signal.SIGCONT)


@pytest.mark.slow
def test_sigint_and_sigkill_while_two_runs_go_then_resume_equals_one_at_a_time(tmp_path, tiny_eval, capsys):
    limit = 64
    path = write_study(
        tmp_path,
        [
            {"id": "quick", "kind": "eval", "set": tiny_eval(limit=2)},  # finishes before the interruption
            {"id": "a", "kind": "eval", "needs": ["quick"], "set": tiny_eval(batch_size=1, limit=limit)},  # a line
            {"id": "b", "kind": "eval", "needs": ["quick"], "set": tiny_eval(batch_size=1, limit=limit, seed=1)},
        ],
    )
    out, log = tmp_path / "out", tmp_path / "runner.log"
    predictions = {run_id: out / run_id / "predictions.jsonl" for run_id in ("a", "b")}
    locks = {run_id: out / ".locks" / f"{run_id}.lock" for run_id in ("a", "b")}

    runner = start_runner(path, out, log, "--jobs", "2")  # Ctrl-C: the runner passes it on to both and stops
    pids = pause_when(runner, out, {"a": 3, "b": 3}, log)
    with pytest.raises(RunLockedError, match=rf"'b' is being written by pid {runner.pid} on "):
        RunLock(locks["b"]).__enter__()
    progress = json.loads((out / "a" / "progress.json").read_text())  # the live view's source
    assert progress["stage"] == "eval" and progress["total"] == limit and progress["done"] >= 1
    resume_processes(pids)
    os.kill(runner.pid, signal.SIGINT)
    assert runner.wait(timeout=120) == 130, log.read_text()
    assert "stopped by SIGINT: the interrupted runs are partial; the same command resumes them" in log.read_text()
    for lock in locks.values():
        wait_for_lock(lock)
    after_sigint = {run_id: lines_in(p) for run_id, p in predictions.items()}
    assert all(3 <= count < limit for count in after_sigint.values()), after_sigint
    quick_finished = finished(out, "quick")
    threads = max(1, available_cores() // 2)
    assert (
        f"# resources: {threads} thread{'s' if threads > 1 else ''} per process ({available_cores()} cores / 2 "
        in (out / "a" / "log.txt").read_text()
    )

    runner = start_runner(path, out, log, "--jobs", "2")  # a crash: the runner's whole process group is killed
    pids = pause_when(runner, out, {r: n + 2 for r, n in after_sigint.items()}, log)
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    resume_processes(pids)
    for lock in locks.values():
        wait_for_lock(lock)  # each run's process got SIGTERM from the kernel when its parent died
    after_sigkill = {run_id: lines_in(p) for run_id, p in predictions.items()}
    assert all(after_sigint[r] + 2 <= n < limit for r, n in after_sigkill.items()), after_sigkill

    assert study("run", path, "--out", out, "--dry-run") == 0
    planned = capsys.readouterr().out
    assert f"resume      a                        partial: {after_sigkill['a']} " in planned
    assert "skip        quick" in planned
    assert study("run", path, "--out", out, "--jobs", "2") == 0
    assert finished(out, "quick") == quick_finished  # nothing finished is redone
    assert not (out / "a" / "progress.json").exists()

    twin = tmp_path / "one-at-a-time"  # on half the cores: the same threads per run as with --jobs 2, same sums
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[: max(1, len(cores) // 2)])
    try:
        assert study("run", path, "--out", twin, "--jobs", "1") == 0
    finally:
        os.sched_setaffinity(0, cores)
    for run_id in ("quick", "a", "b"):
        assert (out / run_id / "predictions.jsonl").read_bytes() == (twin / run_id / "predictions.jsonl").read_bytes()
    assert results_without_paths(out) == results_without_paths(twin)


FAKE_SBATCH = """#!/bin/bash
echo "$@" >> "$SBATCH_LOG"
echo "$(( $(wc -l < "$SBATCH_LOG") + 100 ));testcluster"
"""


def test_submit_with_a_fake_sbatch_then_run_the_scripts(tmp_path, tiny_eval, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "sbatch.log"))
    slurm = {"gpus": 2, "cpus": 8, "time": "01:00:00", "mem": "32G", "extra": ["--constraint=a100"]}
    path = write_study(
        tmp_path,
        [
            {"id": "a", "kind": "eval", "set": tiny_eval(limit=2)},
            {"id": "b", "kind": "eval", "needs": ["a"], "set": tiny_eval(limit=2), "slurm": slurm},
        ],
    )
    out = tmp_path / "out"
    assert study("submit", path, "--out", out, "--partition", "gpu", "--dry-run") == 0
    assert "would submit: sbatch --parsable --dependency=afterok:@a" in capsys.readouterr().out
    assert not (tmp_path / "sbatch.log").exists()

    assert study("submit", path, "--out", out, "--partition", "gpu", "--account", "proj1") == 0
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert calls == [
        f"--parsable {out / 'slurm' / 'a.sbatch'}",
        f"--parsable --dependency=afterok:101 {out}/slurm/b.sbatch",
    ]
    assert json.loads((out / "slurm" / "jobs.json").read_text()) == {"a": "101", "b": "102"}
    script = (out / "slurm" / "b.sbatch").read_text()
    for line in ("--gpus-per-node=2", "--cpus-per-task=8", "--time=01:00:00", "--mem=32G", "--partition=gpu"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --account=proj1\n#SBATCH --constraint=a100\n" in script
    assert f"study run {path} --out {out} --only b --wait\n" in script

    for run_id in ("a", "b"):  # what the cluster would do, in dependency order
        job = subprocess.run(["bash", str(out / "slurm" / f"{run_id}.sbatch")], capture_output=True, text=True)
        assert job.returncode == 0, job.stdout + job.stderr
        assert (out / run_id / "metrics.json").is_file()
    capsys.readouterr()
    assert study("submit", path, "--out", out) == 0  # nothing pending: no job
    assert "submitted 0 job(s)" in capsys.readouterr().out
