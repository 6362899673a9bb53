"""Study files: validation before anything runs, config resolution, identities, planning (no run processes here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from fgvlm.cli import main
from fgvlm.config import ConfigError
from fgvlm.runs import config_hash, write_json
from fgvlm.study import load_study, plan_study
from fgvlm.study.record import finish_record, start_record
from fgvlm.study.runner import StudyRefusedError, check_refusals

REPO = Path(__file__).resolve().parents[1]
EVAL = {"data": {"dataset": "synthflowers"}, "model": {"name": "tiny-qwen3-vl"}, "mode": "rank", "limit": 4}


def write_study(tmp_path, runs, **top):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "runs": runs, **top}, sort_keys=False))
    return path


def test_cycle_fails_before_anything_runs(tmp_path):
    path = write_study(
        tmp_path,
        [
            {"id": "a", "kind": "eval", "needs": ["c"]},
            {"id": "b", "kind": "eval", "needs": ["a"]},
            {"id": "c", "kind": "eval", "needs": ["b"]},
        ],
    )
    with pytest.raises(ConfigError, match=r"the runs' needs form a cycle: 'a' needs 'c' needs 'b' needs 'a'"):
        load_study(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([{"id": "a", "kind": "eval", "needs": ["nope"]}], r"run 'a' needs unknown run\(s\) 'nope'"),
        ([{"id": "a", "kind": "eval"}, {"id": "a", "kind": "eval"}], r"run id 'a' is listed twice"),
        ([{"id": "a", "kind": "train-everything"}], r"run 'a': unknown kind 'train-everything'; known kinds: eval"),
        ([{"id": "a b", "kind": "eval"}], r"run id 'a b' must be"),
        ([{"id": "report", "kind": "eval"}], r"run id 'report' is taken by the study's own outputs"),
        ([{"id": "a", "kind": "eval", "colour": "red"}], r"unknown key\(s\) 'colour'"),
        ([{"id": "a", "kind": "eval", "set": {"modle.name": "x"}}], r"run 'a'.*unknown key\(s\) 'modle'"),
        (
            [{"id": "a", "kind": "eval"}, {"id": "b", "kind": "head-train", "set": {"model.name": "${runs.a.out}/m"}}],
            r"run 'b'.*refers to \$\{runs.a.out\} but 'a' is not in its needs",
        ),
    ],
)
def test_validation_names_the_mistake(tmp_path, runs, message):
    path = write_study(tmp_path, runs)
    with pytest.raises(ConfigError, match=message) as err:
        load_study(path, tmp_path / "out")
    assert str(path) in str(err.value)


def test_unknown_key_in_a_config_file_names_study_run_and_file(tmp_path):
    (tmp_path / "eval.yaml").write_text("mode: rank\nbatchsize: 4\n")
    path = write_study(tmp_path, [{"id": "zs", "kind": "eval", "config": "eval.yaml"}])
    with pytest.raises(ConfigError, match=r"study.yaml: run 'zs' \(config .*eval.yaml\).*unknown key\(s\) 'batchsize'"):
        load_study(path, tmp_path / "out")


def test_defaults_by_key_and_by_kind_then_file_then_set(tmp_path):
    (tmp_path / "cnn.yaml").write_text("arch: test_resnet\nepochs: 3\n")
    path = write_study(
        tmp_path,
        [
            {"id": "zs", "kind": "eval", "set": {"batch_size": 2}},
            {"id": "cnn", "kind": "cnn-train", "config": "cnn.yaml", "set": ["epochs=1"]},
        ],
        defaults={"data": {"dataset": "synthflowers", "protocol": "official"}, "limit": 5, "eval": {"batch_size": 3}},
    )
    study = load_study(path, tmp_path / "out", overrides=["*.seed=7"])
    zs, cnn = study.runs["zs"].config, study.runs["cnn"].config
    assert (zs.limit, zs.batch_size, zs.seed, zs.data.dataset) == (5, 2, 7, "synthflowers")
    assert (cnn.arch, cnn.epochs, cnn.seed, cnn.batch_size) == ("test_resnet", 1, 7, 32)  # no eval block, no limit
    bad = write_study(tmp_path, [{"id": "zs", "kind": "eval"}], defaults={"colour": "red"})
    with pytest.raises(ConfigError, match=r"defaults key\(s\) 'colour' match no run's config or kind"):
        load_study(bad, tmp_path / "out")


def test_identity_follows_config_and_upstream(tmp_path):
    runs = [
        {"id": "a", "kind": "eval", "set": EVAL},
        {"id": "b", "kind": "eval", "needs": ["a"], "set": EVAL},
        {"id": "c", "kind": "eval", "set": EVAL},
    ]
    path = write_study(tmp_path, runs)
    before = {k: r.identity for k, r in load_study(path, tmp_path / "out").runs.items()}
    after = {k: r.identity for k, r in load_study(path, tmp_path / "out", overrides=["a.limit=6"]).runs.items()}
    assert before["a"] != after["a"] and before["b"] != after["b"] and before["c"] == after["c"]
    assert before["b"] != before["c"]  # same config, but b stands on a


def test_swap_and_placeholders(tmp_path):
    path = write_study(
        tmp_path,
        [
            {"id": "a", "kind": "eval", "set": {"model.name": "qwen3-vl-4b"}},
            {"id": "h", "kind": "head-train", "needs": ["a"], "set": {"model.name": "${runs.a.out}/model"}},
        ],
    )
    study = load_study(path, tmp_path / "out", swaps=["qwen3-vl-4b=tiny-qwen3-vl"])
    assert study.runs["a"].config.model.name == "tiny-qwen3-vl"
    assert study.runs["h"].config.model.name == str((tmp_path / "out" / "a" / "model").resolve())


def test_plan_skip_resume_refuse_and_upstream(tmp_path):
    path = write_study(
        tmp_path, [{"id": "a", "kind": "eval", "set": EVAL}, {"id": "b", "kind": "eval", "needs": ["a"], "set": EVAL}]
    )
    study = load_study(path, tmp_path / "out")
    assert [s.action for s in plan_study(study)] == ["run", "run"]
    for run in study.runs.values():  # both complete, as a runner would leave them
        run.out.mkdir(parents=True)
        (run.out / "config.yaml").write_text(yaml.safe_dump(run.config_data))
        start_record(run.out, run.identity, run.upstream, [])
        (run.out / "metrics.json").write_text("{}")
        done = {"finished": "now", "wall_time_s": 1.0, "config_hash": config_hash(run.config)}
        write_json(run.out / "done.json", done)
        finish_record(run.out, 1.0)
    assert [(s.action, s.reason) for s in plan_study(study)] == [("skip", "complete"), ("skip", "complete")]
    (study.runs["b"].out / "done.json").unlink()
    (study.runs["b"].out / "predictions.jsonl").write_text('{"id": 0}\n{"id": 1}\n')
    assert plan_study(study)[1].line().split() == ["resume", "b", "partial:", "2", "predictions"]
    changed = load_study(path, tmp_path / "out", overrides=["a.limit=6"])
    steps = plan_study(changed)
    assert steps[0].action == "refuse" and "limit: 4 -> 6" in steps[0].reason
    assert steps[1].action == "blocked"
    with pytest.raises(StudyRefusedError, match=r"a: config changed: limit: 4 -> 6.*--rerun a"):
        check_refusals(steps)
    rerun = plan_study(changed, rerun=["a"])
    assert [(s.action, s.fresh) for s in rerun] == [("run", True), ("run", True)]
    assert rerun[1].reason.startswith("upstream changed: a")
    with pytest.raises(ConfigError, match=r"cannot run 'b' alone: it needs a \(run\)"):
        plan_study(changed, rerun=["a"], only="b")


def test_cli_dry_run_prints_the_plan_and_refusal(tmp_path, capsys):
    path = write_study(tmp_path, [{"id": "a", "kind": "eval", "set": EVAL}])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as code:
        main(["study", "run", str(path), "--out", str(out), "--dry-run"])
    assert code.value.code == 0
    assert "run         a" in capsys.readouterr().out
    (out / "a").mkdir(parents=True)
    (out / "a" / "config.yaml").write_text(yaml.safe_dump({**load_study(path, out).runs["a"].config_data, "limit": 9}))
    with pytest.raises(SystemExit) as code:
        main(["study", "run", str(path), "--out", str(out)])
    assert code.value.code == 2
    assert "refusing to change existing runs (a: config changed: limit: 9 -> 4)" in capsys.readouterr().err


STUDIES = REPO / "configs" / "studies"
TINY_TWINS = [
    "--swap=qwen3-vl-4b=tiny-qwen3-vl",
    "--swap=qwen3-vl-8b=tiny-qwen3-vl",
    "--swap=idefics2-8b=tiny-idefics2",
    "--swap=instructblip-flan-t5-xl=tiny-instructblip-t5",
    "--swap=resnet50=test_resnet",
]


@pytest.mark.parametrize("name", sorted(p.name for p in STUDIES.glob("*.yaml")))
def test_shipped_studies_resolve(tmp_path, name):
    study = load_study(STUDIES / name, tmp_path / "out")
    assert study.spec.reference in study.runs
    assert all(step.action in ("run", "unavailable") for step in plan_study(study))


def test_reference_study_on_tiny_twins_dry_runs(tmp_path, flowers_mini, capsys):
    path = STUDIES / "flowers102-reference.yaml"
    study = load_study(path, tmp_path / "out")
    published = {run.id: run.spec.published for run in study.runs.values() if run.spec.published is not None}
    assert published == {
        "zs-qwen3-vl-4b": 20.78,
        "zs-qwen3-vl-8b": 16.08,
        "zs-instructblip-flan-t5-xl": 21.18,
        "zs-idefics2-8b": 22.65,
        "resnet50": 93.24,
        "resnet50-mixup-cutmix": 90.59,
        "head-qwen3-vl-4b": 64.60,
        "sft-qwen3-vl-4b": 73.52,
        "sft-mixcut-qwen3-vl-4b": 66.27,
        "sft-head-qwen3-vl-4b": 95.19,
    }
    with_data = [run for run in study.runs.values() if hasattr(run.config, "data")]  # publish rows have none
    assert {run.spec.kind for run in study.runs.values()} - {run.spec.kind for run in with_data} == {"publish"}
    protocols = {run.id: run.config.data.protocol for run in with_data}
    coop = {run_id for run_id, protocol in protocols.items() if protocol == "coop"}
    assert set(protocols.values()) == {"swapped", "coop"}
    assert coop == {
        "coop4-zs-qwen3-vl-4b",
        "coop4-rank-qwen3-vl-4b",
        "coop4-sft-qwen3-vl-4b",
        "coop4-sft-rank-qwen3-vl-4b",
    }
    assert study.runs["coop4-sft-rank-qwen3-vl-4b"].config.objective == "rank"
    assert {(study.runs[i].config.data.shots, study.runs[i].config.data.shot_seed) for i in coop} == {(4, 1)}
    overrides = [f"*.data.root={flowers_mini}", "*.limit=4"]
    tiny = load_study(path, tmp_path / "out", overrides=overrides, swaps=[s.split("=", 1)[1] for s in TINY_TWINS])
    names = {getattr(run.config, "model", None) and run.config.model.name for run in tiny.runs.values()}
    sft_model = str(tmp_path / "out" / "sft-qwen3-vl-4b" / "model")  # the head on the fine-tuned model
    assert names - {None} == {"tiny-qwen3-vl", "tiny-idefics2", "tiny-instructblip-t5", sft_model}
    assert {run.config.arch for run in tiny.runs.values() if run.spec.kind == "cnn-train"} == {"test_resnet"}
    assert {run.config.data.root for run in tiny.runs.values() if hasattr(run.config, "data")} == {str(flowers_mini)}
    assert all(run.config.dry_run for run in tiny.runs.values() if run.spec.kind == "publish")
    args = ["study", "run", str(path), "--out", str(tmp_path / "out"), "--dry-run", *TINY_TWINS]
    with pytest.raises(SystemExit) as code:
        main([*args, *(f"--set={text}" for text in overrides)])
    assert code.value.code == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["run", run_id] for run_id in tiny.runs]


def test_launch_commands(tmp_path):
    from fgvlm.study.launch import launch_argv
    from fgvlm.study.spec import LaunchSpec, RunSpec

    tail = ["-m", "fgvlm", "head", "train", "--config", "C", "--out", "O"]
    spec = RunSpec(id="h", kind="head-train")
    assert launch_argv(spec, Path("C"), Path("O")) == [sys.executable, *tail]
    spec.launch = LaunchSpec(launcher="torchrun", nproc=4)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert launch_argv(spec, Path("C"), Path("O")) == [sys.executable, *torchrun, *tail]
    spec.launch = LaunchSpec(launcher="accelerate", nproc=2, args=["--config_file", "fsdp.yaml"])
    accelerate = ["-m", "accelerate.commands.launch", "--num_processes", "2", "--config_file", "fsdp.yaml"]
    assert launch_argv(spec, Path("C"), Path("O")) == [sys.executable, *accelerate, *tail]
    with pytest.raises(ConfigError, match="launch.launcher must be one of python, torchrun, accelerate"):
        LaunchSpec(launcher="mpirun")


def test_first_failure_stops_unless_keep_going(tmp_path, monkeypatch):
    from fgvlm.study import execute, runner

    def fake_argv(spec, config_path, out):  # a real process that fails for one run and succeeds for the others
        code = 3 if spec.id == "bad" else 0
        return [sys.executable, "-c", f"print('{spec.id} says hello'); raise SystemExit({code})"]

    monkeypatch.setattr(runner, "launch_argv", fake_argv)
    runs = [
        {"id": "bad", "kind": "eval", "set": EVAL},
        {"id": "after-bad", "kind": "eval", "needs": ["bad"], "set": EVAL},
        {"id": "other", "kind": "eval", "set": EVAL},
    ]
    study = load_study(write_study(tmp_path, runs), tmp_path / "out")
    lines = []
    outcome = execute(study, plan_study(study), echo=lines.append)
    assert outcome.failed == {"bad": 3} and outcome.done == []
    assert outcome.not_run == {"after-bad": "not started: bad failed", "other": "not started: bad failed"}
    assert "[bad] bad says hello" in lines
    assert "bad says hello" in (tmp_path / "out" / "bad" / "log.txt").read_text()
    assert json.loads((tmp_path / "out" / "bad" / "study.json").read_text())["finished"] is None

    outcome = execute(study, plan_study(study), keep_going=True, echo=lines.append)
    assert outcome.failed == {"bad": 3} and outcome.done == ["other"]
    assert outcome.not_run == {"after-bad": "skipped: needs bad"}


def test_results_list_only_finished_runs(tmp_path):
    # A run that wrote its metrics and then failed (no done.json, which is written last) is not a result.
    from fgvlm.study.results import finished_runs

    study = load_study(
        write_study(tmp_path, [{"id": "a", "kind": "eval"}, {"id": "b", "kind": "eval"}]), tmp_path / "o"
    )
    for run in study.runs.values():
        run.out.mkdir(parents=True)
        (run.out / "metrics.json").write_text("{}")
    (study.runs["b"].out / "done.json").write_text("{}")
    assert finished_runs(study) == [study.runs["b"].out]
