"""``fgvlm study run --jobs N``: runs side by side with their share of cores and GPUs, failures, signals, and the
runner's live view (progress files, interval lines, the terminal table). Run processes are real but tiny Python
scripts standing in for ``python -m fgvlm <kind>``, so each test takes a second or two."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import pytest
import yaml

from fgvlm.config import ConfigError
from fgvlm.progress import PROGRESS_FILE_ENV, ProgressFile, ReportingProgress, read_progress
from fgvlm.study import execute, load_study, plan_study, runner
from fgvlm.study.display import LineDisplay, LiveDisplay, progress_text
from fgvlm.study.launch import Interrupted
from fgvlm.study.resources import Resources, available_cores
from fgvlm.study.spec import LaunchSpec, RunSpec

EVAL = {"data": {"dataset": "synthflowers"}, "model": {"name": "tiny-qwen3-vl"}}

CHILD = """
import json, os, sys, time
spec = json.loads(sys.argv[1])
events = spec["events"]

def marked(suffix):
    return {name[: -len(suffix)] for name in os.listdir(events) if name.endswith(suffix)}

open(os.path.join(events, spec["id"] + ".started"), "w").close()  # marked first: of two starting together, the
ended = marked(".ended")  # later to look sees the other one running
running = marked(".started") - ended - {spec["id"]}
record = {"id": spec["id"], "ended_before": sorted(ended), "running_with": sorted(running),
          "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
print(spec["id"], "threads", os.environ["OMP_NUM_THREADS"], "devices", record["devices"], flush=True)
deadline = time.monotonic() + 60  # an event that never comes fails the run (exit 9) instead of hanging the test
while not all(os.path.exists(os.path.join(events, name)) for name in spec["wait_for"]):
    if time.monotonic() > deadline:
        raise SystemExit(9)
    time.sleep(0.01)
with open(spec["log"], "a") as fh:
    fh.write(json.dumps(record) + "\\n")
open(os.path.join(events, spec["id"] + ".ended"), "w").close()
raise SystemExit(spec["code"])
"""


def fake_runs(monkeypatch, tmp_path, wait_for=None, codes=None):
    """Each run's process marks ``<id>.started`` in an events folder, waits until the marker files
    ``wait_for[id]`` exist (``"b.started"``, ``"bad.ended"``), then marks ``<id>.ended`` and exits with
    ``codes[id]`` (default 0). What the runs did together is read from these events, not from clocks: each run
    records the runs that had ended before it started, the runs it found running, and its CUDA_VISIBLE_DEVICES.
    Two runs that wait for each other's start can only finish if they run side by side."""
    events, log = tmp_path / "events", tmp_path / "runs.jsonl"
    events.mkdir()

    def fake_argv(spec, config_path, out):
        child = {"id": spec.id, "events": str(events), "log": str(log), "code": (codes or {}).get(spec.id, 0)}
        child["wait_for"] = (wait_for or {}).get(spec.id, [])
        return [sys.executable, "-c", CHILD, json.dumps(child)]

    monkeypatch.setattr(runner, "launch_argv", fake_argv)
    return lambda: {record["id"]: record for record in map(json.loads, log.read_text().splitlines())}


def make_study(tmp_path, runs):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "jobs", "runs": runs}, sort_keys=False))
    return load_study(path, tmp_path / "out")


def test_independent_runs_go_together_and_a_dependant_waits_for_its_need(tmp_path, monkeypatch):
    runs_of = fake_runs(monkeypatch, tmp_path, wait_for={"a": ["b.started"], "b": ["a.started"]})
    runs = [
        {"id": "a", "kind": "eval", "set": EVAL},
        {"id": "b", "kind": "eval", "set": EVAL},
        {"id": "c", "kind": "eval", "needs": ["a"], "set": EVAL},
    ]
    study = make_study(tmp_path, runs)
    lines = []
    outcome = execute(study, plan_study(study), jobs=2, echo=lines.append)
    assert sorted(outcome.done) == ["a", "b", "c"] and outcome.ok
    got = runs_of()  # a and b each waited for the other's start: they finished, so they ran side by side
    assert "a" in got["c"]["ended_before"]  # a dependant starts once its need is finished
    assert set(outcome.seconds) == {"a", "b", "c"}  # each run's own time is recorded (the overlap is the speed-up)
    threads = max(1, available_cores() // 2)
    assert f"[a] a threads {threads} devices None" in lines  # the child saw its share of the cores
    log = (tmp_path / "out" / "a" / "log.txt").read_text()
    plural = "s" if threads > 1 else ""
    assert f"# resources: {threads} thread{plural} per process ({available_cores()} cores / 2 " in log
    timing = runner.timing_line(outcome, outcome.wall_s)
    assert timing.startswith(f"wall time {outcome.wall_s:.1f} s; the runs' own times sum to ") and "(3 runs)" in timing


def test_gpus_per_run_hands_out_disjoint_devices(tmp_path, monkeypatch):
    runs_of = fake_runs(monkeypatch, tmp_path, wait_for={"wide": ["x.started"], "x": ["wide.started"]})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    runs = [
        {"id": "wide", "kind": "eval", "set": EVAL, "launch": {"nproc": 2}},  # two processes: two GPUs
        {"id": "x", "kind": "eval", "set": EVAL},
        {"id": "y", "kind": "eval", "set": EVAL},
    ]
    study = make_study(tmp_path, runs)
    outcome = execute(study, plan_study(study), jobs=3, gpus_per_run=1, echo=lambda line: None)
    assert sorted(outcome.done) == ["wide", "x", "y"]
    got = runs_of()  # wide and x waited for each other's start: side by side
    assert got["wide"]["devices"] == "3,5" and got["x"]["devices"] == "7"
    assert {"wide", "x"} & set(got["y"]["ended_before"])  # y waited for a free GPU
    for run in got.values():  # two runs overlap when one starts while the other runs: never on the same GPU
        for other in run["running_with"]:
            assert not set(run["devices"].split(",")) & set(got[other]["devices"].split(",")), (run, got[other])

    too_wide = make_study(tmp_path, [{"id": "big", "kind": "eval", "set": EVAL, "launch": {"nproc": 4}}])
    with pytest.raises(ConfigError, match=r"run 'big' needs 4 GPUs .* only 3 are visible: 3,5,7"):
        execute(too_wide, plan_study(too_wide), gpus_per_run=1, echo=lambda line: None)


def test_resources_share_cores_and_devices_by_hand():
    wide, one = RunSpec(id="w", kind="eval", launch=LaunchSpec(nproc=2)), RunSpec(id="o", kind="eval")
    cpu = Resources(cores=8, concurrent=2)
    assert cpu.take(one).threads == 4 and cpu.take(wide).threads == 2  # 8 cores / 2 runs / 2 processes
    assert cpu.take(one).env() == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4"}
    gpus = Resources(cores=2, concurrent=4, devices=["0", "1", "2"], gpus_per_run=1)
    assert gpus.take(one).threads == 1  # never 0
    first = gpus.take(wide)
    assert first.devices == ["1", "2"] and gpus.take(one) is None  # "0" went to the first `one`
    gpus.give_back(first)
    assert gpus.free == ["1", "2"] and gpus.take(wide).env()["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert Resources(cores=2, concurrent=1, devices=["0"], gpus_per_run=0).take(wide).devices is None


def test_first_failure_stops_new_launches_but_running_ones_finish(tmp_path, monkeypatch):
    fake_runs(monkeypatch, tmp_path, wait_for={"long": ["bad.ended"]}, codes={"bad": 3})  # long outlives bad
    runs = [
        {"id": "bad", "kind": "eval", "set": EVAL},
        {"id": "long", "kind": "eval", "set": EVAL},
        {"id": "later", "kind": "eval", "set": EVAL},
        {"id": "after-bad", "kind": "eval", "needs": ["bad"], "set": EVAL},
    ]
    study = make_study(tmp_path, runs)
    lines = []
    outcome = execute(study, plan_study(study), jobs=2, echo=lines.append)
    assert outcome.failed == {"bad": 3} and outcome.done == ["long"]  # already going: it finished
    assert outcome.not_run == {"later": "not started: bad failed", "after-bad": "not started: bad failed"}
    assert any(line.startswith("[bad] failed (exit code 3); its log: ") for line in lines)

    outcome = execute(study, plan_study(study), jobs=2, keep_going=True, echo=lines.append)
    assert outcome.failed == {"bad": 3} and sorted(outcome.done) == ["later", "long"]  # (no done.json: partial)
    assert outcome.not_run == {"after-bad": "skipped: needs bad"}


TRAPPING_CHILD = """
import signal, sys, time
def stop(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    raise SystemExit(1)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
time.sleep(60)
"""


def test_sigterm_reaches_every_running_child(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "launch_argv", lambda spec, config, out: [sys.executable, "-c", TRAPPING_CHILD])
    runs = [{"id": run_id, "kind": "eval", "set": EVAL} for run_id in ("a", "b", "c")]
    study = make_study(tmp_path, runs)
    lines = []

    def terminate_when_both_started():
        deadline = time.monotonic() + 60
        while sum(line.endswith("] started") for line in lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # to this process, whose main thread runs the study

    threading.Thread(target=terminate_when_both_started, daemon=True).start()
    with pytest.raises(Interrupted, match="SIGTERM"):
        execute(study, plan_study(study), jobs=2, echo=lines.append)
    for run_id in ("a", "b"):  # each child got the signal (it exits on it rather than sleeping its 60 s out)
        assert "got SIGTERM" in (tmp_path / "out" / run_id / "log.txt").read_text()
        assert json.loads((tmp_path / "out" / run_id / "study.json").read_text())["finished"] is None
    assert not (tmp_path / "out" / "c").exists()  # never started


def test_progress_file_rate_eta_and_throttle_by_hand(tmp_path):
    now = [100.0]
    path = tmp_path / "progress.json"
    writer = ProgressFile(path, min_interval=1.0, clock=lambda: now[0])
    assert writer.report("eval", 10, 110)  # a new stage: written at once, no rate yet
    assert read_progress(path) | {"pid": 0} == {
        "stage": "eval",
        "done": 10,
        "total": 110,
        "rate": None,
        "eta": None,
        "updated_at": 100.0,
        "pid": 0,
    }
    now[0] = 100.5
    assert not writer.report("eval", 15, 110)  # within a second of the last write
    now[0] = 104.0
    assert writer.report("eval", 30, 110)
    state = read_progress(path)
    assert state["rate"] == pytest.approx(5.0) and state["eta"] == pytest.approx(16.0)  # 20 in 4 s; 80 left
    now[0] = 104.1
    assert writer.report("eval", 110, 110)  # the end is always written
    assert writer.report("train", 0, 5)  # and so is a new stage
    assert read_progress(path)["stage"] == "train" and read_progress(path)["pid"] == os.getpid()
    assert read_progress(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"stage": "ev')
    assert read_progress(tmp_path / "torn.json") is None


def test_progress_bars_and_trainer_steps_report_to_the_runner_file(tmp_path, monkeypatch):
    from transformers import TrainerControl, TrainerState

    from fgvlm.sft.trainer import TrainingProgress

    path = tmp_path / "progress.json"
    with ReportingProgress() as bar:  # without the variable nothing is written
        bar.add_task("eval", total=4)
        bar.advance(0)
    assert not path.exists()
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(path))
    with ReportingProgress(disable=True) as bar:  # a disabled bar (another rank) reports nothing
        bar.update(bar.add_task("eval", total=4), advance=1)
    assert not path.exists()
    with ReportingProgress() as bar:
        task = bar.add_task("train", total=40, epoch="2/3")
        bar.update(task, advance=3)
    assert {k: read_progress(path)[k] for k in ("stage", "done", "total")} == {
        "stage": "train epoch 2/3",
        "done": 3,
        "total": 40,
    }
    callback, state = TrainingProgress(), TrainerState(global_step=5, max_steps=50)  # fine-tuning's bar
    callback.on_train_begin(None, state, TrainerControl())  # the callback reads the state only
    state.global_step = 7
    callback.on_step_end(None, state, TrainerControl())
    callback.on_train_end(None, state, TrainerControl())
    assert {k: read_progress(path)[k] for k in ("stage", "done", "total")} == {"stage": "train", "done": 7, "total": 50}


def write_state(path, **state):
    path.write_text(json.dumps({"updated_at": 0, **state}))


def test_line_display_prints_progress_every_interval_and_each_tenth(tmp_path):
    now = [0.0]
    printed = []
    display = LineDisplay(printed.append, interval=30, clock=lambda: now[0])
    progress = tmp_path / "progress.json"
    display.run_started("zs", progress, "[zs] run")
    display.run_line("zs", "loading")
    display.refresh()  # no progress file yet: nothing more
    assert printed == ["[zs] run", "[zs] loading"]
    for at, done in ((2, 4), (6, 5), (7, 8), (12, 10), (14, 20), (45, 21)):
        now[0] = at
        write_state(progress, stage="eval", done=done, total=100, rate=2.5, eta=(100 - done) / 2.5)
        display.refresh()
    assert printed[2:] == [  # a tenth or a new stage at most every 5 s (30 / 6), else every 30 s
        "[zs] progress: eval 5/100 (5%) · 2.50/s · ETA 38s · 6s in",
        "[zs] progress: eval 10/100 (10%) · 2.50/s · ETA 36s · 12s in",
        "[zs] progress: eval 21/100 (21%) · 2.50/s · ETA 32s · 45s in",
    ]
    display.run_ended("zs", "[zs] failed (exit code 1)", failed=True)  # its lines were printed already
    assert printed[-1] == "[zs] failed (exit code 1)" and not display.running


def test_runs_others_wait_for_start_first(tmp_path):
    runs = [
        {"id": "x", "kind": "eval", "set": EVAL},  # no dependants
        {"id": "y", "kind": "eval", "set": EVAL},
        {"id": "a", "kind": "eval", "set": EVAL},  # two, one of them through c
        {"id": "c", "kind": "eval", "needs": ["a"], "set": EVAL},  # one
        {"id": "d", "kind": "eval", "needs": ["c"], "set": EVAL},
    ]
    steps = plan_study(make_study(tmp_path, runs))
    assert [step.run.id for step in runner.launch_order(steps)] == ["a", "c", "x", "y", "d"]


def test_live_display_shows_one_line_per_running_run_above_the_summaries(tmp_path):
    from rich.console import Console

    now = [0.0]
    console = Console(file=io.StringIO(), width=120, height=30, force_terminal=True, color_system=None)
    display = LiveDisplay(console, labels={"sft": "tiny SFT"}, clock=lambda: now[0])
    with display:
        display.run_started("zs", tmp_path / "zs.json", "[zs] run")
        display.run_started("sft", tmp_path / "sft.json", "[sft] run")
        display.run_line("sft", "Loading weights")
        write_state(tmp_path / "zs.json", stage="eval", done=12, total=48, rate=3.0, eta=12.0)
        now[0] = 65.0
        display.message("[cnn] finished in 12.0 s")
        display.poll()
        screen = Console(file=io.StringIO(), width=120, color_system=None)
        screen.print(display.render())
        lines = screen.file.getvalue().splitlines()
        zs = next(i for i, line in enumerate(lines) if line.startswith("zs "))
        assert lines[zs].split() == ["zs", "eval", "12/48", "(25%)", "3.00/s", "12s", "1m05s"]
        assert "sft (tiny SFT)" in lines[zs + 1] and "starting: Loading weights" in lines[zs + 1]
        assert lines.index("[cnn] finished in 12.0 s") > zs + 1  # the summaries below the live lines
        display.run_ended("zs", "[zs] failed (exit code 2); its log: zs/log.txt", failed=True)
        display.run_ended("sft", "[sft] finished in 70.0 s")
    printed = console.file.getvalue()  # when the study ends, every summary stays on screen
    assert "[cnn] finished in 12.0 s\n[zs] failed (exit code 2); its log: zs/log.txt\n[sft] finished in" in printed
    assert progress_text({"stage": "train", "done": 3, "total": None, "rate": None}) == "train 3"
