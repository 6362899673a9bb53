"""Run directories: atomic JSON, JSONL that survives a killed writer, fingerprints, meta.json contents; the run
lifecycle (absent / partial / complete / conflicting, done.json last), the results header, the training-log schema,
and the kinds table (every kind reruns from its own config.yaml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fgvlm.config import ConfigError, DataConfig
from fgvlm.kinds import KINDS, kind_argv, kind_config_class, kind_run_function
from fgvlm.registry import UnknownNameError
from fgvlm.runs import (
    HEADER_KEYS,
    TRAIN_LOG_KEYS,
    RunConflictError,
    RunDir,
    TrainLogger,
    config_hash,
    fingerprint_path,
    finish_run,
    limit_split,
    run_status,
    start_run,
    write_results,
)


def test_meta_and_config_are_written(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(DataConfig(dataset="flowers102", protocol="swapped"))
    meta = run.write_meta(command="test", seed=5, dataset={"dataset": "x"}, model={"name": "m"})
    assert "protocol: swapped" in (run / "config.yaml").read_text()
    saved = json.loads((run / "meta.json").read_text())
    assert saved == json.loads(json.dumps(meta, default=str))
    assert saved["seed"] == 5 and saved["versions"]["torch"] and saved["versions"]["python"]
    assert not list(run.path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_jsonl_drops_partial_last_line(tmp_path):
    run = RunDir(tmp_path)
    run.append_jsonl("p.jsonl", [{"id": "1"}, {"id": "2"}])
    with (run / "p.jsonl").open("a") as fh:
        fh.write('{"id": "3", "la')  # a writer killed mid-line
    assert run.read_jsonl("p.jsonl") == [{"id": "1"}, {"id": "2"}]
    run.append_jsonl("p.jsonl", [{"id": "3"}])
    assert (run / "p.jsonl").read_text() == '{"id": "1"}\n{"id": "2"}\n{"id": "3"}\n'
    assert run.read_jsonl("missing.jsonl") == []


def test_fingerprint_changes_with_content_and_names(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 100)
    first = fingerprint_path(tmp_path / "m")
    assert first == fingerprint_path(tmp_path / "m") and first.startswith("sha256:")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 99 + b"\1")
    assert fingerprint_path(tmp_path / "m") != first
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 100)
    assert fingerprint_path(tmp_path / "m") == first
    (tmp_path / "m" / "w.bin").rename(tmp_path / "m" / "v.bin")
    assert fingerprint_path(tmp_path / "m") != first


# -- the run lifecycle ------------------------------------------------------------------------------------------------
def job(**changes) -> DataConfig:
    return DataConfig(**{"dataset": "synthflowers", **changes})


def test_run_status_absent_partial_complete_conflicting(tmp_path):
    out = tmp_path / "run"
    assert run_status(out, job()).state == "absent"
    out.mkdir()
    assert run_status(out, job()).state == "absent"  # an empty folder is not a run yet
    run = start_run(out, job(), resume=True)
    assert run_status(out, job()).state == "partial" and run_status(out, job()).progress is None
    run.append_jsonl("predictions.jsonl", [{"id": "a"}, {"id": "b"}])
    run.write_json("meta.json", {"images": 7})
    assert run_status(out, job()).progress == "2 of 7 predictions"
    conflict = run_status(out, job(protocol="swapped"))
    assert conflict.state == "conflicting" and conflict.differences == ["protocol: 'official' -> 'swapped'"]
    done = finish_run(run, started=run.started - 2.0)
    assert set(done) == {"finished", "wall_time_s", "config_hash"} and done["wall_time_s"] >= 2.0
    assert done["config_hash"] == config_hash(job()) != config_hash(job(protocol="swapped"))
    assert run_status(out, job()).state == "complete"
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    status = run_status(stray, job())
    assert status.state == "conflicting" and "config.yaml" in status.differences[0]


def test_a_run_written_before_a_key_was_added_is_still_complete(tmp_path):
    """A finished run whose config.yaml predates a key (here data.shots, data.classes, ...) reads that key as its
    default: it is complete, not conflicting; a key it does hold with another value still conflicts."""
    import yaml

    from fgvlm.eval.zeroshot import EvalConfig

    cfg = EvalConfig(data=DataConfig(dataset="synthflowers"))
    out = tmp_path / "old"
    run = start_run(out, cfg)
    finish_run(run)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("shots", "shot_seed", "classes", "split_file"):
        saved["data"].pop(key)  # what a run written before the protocols issue holds
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (out / "done.json").write_text(json.dumps({"config_hash": config_hash(saved)}))
    assert run_status(out, cfg).state == "complete"
    changed = EvalConfig(data=DataConfig(dataset="synthflowers", classes="base"))
    status = run_status(out, changed)
    assert status.state == "conflicting" and status.differences == ["data.classes: 'all' -> 'base'"]
    saved["mode"] = "generate" if cfg.mode == "rank" else "rank"
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert run_status(out, cfg).state == "conflicting"


def test_start_run_skips_refuses_and_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    run = start_run(out, job(), resume=True)
    write_results(run, HEADER, {"accuracy": 0.5})
    finish_run(run)
    again = start_run(out, job())
    assert again.complete and again.read_results()["accuracy"] == 0.5
    assert "already complete" in capsys.readouterr().err
    with pytest.raises(RunConflictError, match=r"Differing keys: root: None -> 'x'.*--no-resume") as err:
        start_run(out, job(root="x"))
    assert isinstance(err.value, ConfigError)
    fresh = start_run(out, job(root="x"), resume=False)
    (moved,) = tmp_path.glob("run.replaced-*")
    assert json.loads((moved / "metrics.json").read_text())["accuracy"] == 0.5  # kept aside, not deleted
    assert not fresh.complete and sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert "root: x" in (out / "config.yaml").read_text()


HEADER = {
    "kind": "eval",
    "dataset": "d",
    "protocol": "p",
    "shots": 4,
    "shot_seed": 1,
    "classes": "base",
    "split": "test",
    "model": "m",
    "num_classes": 3,
    "seconds": 1,
}


def test_write_results_puts_the_fixed_header_first(tmp_path):
    written = write_results(tmp_path, dict(reversed(HEADER.items())), {"accuracy": 1.0, "split": "ignored", "n": 2})
    assert list(written) == [*HEADER_KEYS, "accuracy", "n"] and written["split"] == "test"
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    with pytest.raises(ValueError, match=r"missing \['seconds'\]"):
        write_results(tmp_path, {k: v for k, v in HEADER.items() if k != "seconds"}, {})


def test_train_logger_writes_the_shared_schema(tmp_path):
    logger = TrainLogger(RunDir(tmp_path))
    logger.log(10, epoch=0.5, train_loss=1.25, lr=0.1, grad_norm=3.0)
    logger.log(20, val_accuracy=0.75, val_top5=1.0, val_loss=0.5)
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [list(r) for r in lines] == [[*TRAIN_LOG_KEYS, "grad_norm"], list(TRAIN_LOG_KEYS)]
    assert lines[0]["val_accuracy"] is None and lines[1]["train_loss"] is None and lines[1]["val_top5"] == 1.0
    logger.clear()
    assert not (tmp_path / "train_log.jsonl").exists()
    assert TrainLogger(RunDir(tmp_path), enabled=False).log(1, lr=0.1)["lr"] == 0.1
    assert not (tmp_path / "train_log.jsonl").exists()


def test_limit_split_keeps_the_first_items():
    from fgvlm.data import create_dataset

    split = create_dataset(dataset="synthflowers", options={"num_classes": 3}).split("test")
    capped = limit_split(split, 4)
    assert capped.ids == split.ids[:4] and capped.name == "test" and capped[0].label == split[0].label
    assert limit_split(split, None) is split and limit_split(split, 10_000) is split


# -- the kinds table --------------------------------------------------------------------------------------------------
def test_every_kind_has_a_config_class_and_a_run_function_of_one_signature():
    import dataclasses
    import inspect

    assert {"eval", "head-train", "head-eval", "cnn-train", "cnn-eval", "data-audit"} <= set(KINDS)
    for name, kind in KINDS.items():
        assert dataclasses.is_dataclass(kind_config_class(name)), name
        params = inspect.signature(kind_run_function(name)).parameters
        first, second = list(params)[:2]
        assert params["out"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and second == "out", name
        assert params["resume"].kind is inspect.Parameter.KEYWORD_ONLY and params["resume"].default is True, name
        assert kind_argv(name, "R/config.yaml", "R") == ["-m", "fgvlm", *kind.cli, "--config", "R/config.yaml",
                                                         "--out", "R"]  # fmt: skip
        assert first == "cfg", name
    with pytest.raises(UnknownNameError, match="head-train"):
        kind_config_class("head-trian")


def test_every_kind_is_a_cli_command_with_the_shared_options(capsys):
    from fgvlm.cli import main

    for kind in KINDS.values():
        with pytest.raises(SystemExit):
            main([*kind.cli, "--help"])
        text = capsys.readouterr().out
        for option in ("--config", "--out", "--resume", "--no-resume", "--set", "--limit"):
            assert option in text, (kind.name, option)


def test_eval_rerun_from_its_config_reproduces_the_run(tmp_path, flowers_mini):
    """`python -m fgvlm eval --config RUN/config.yaml --out OTHER` gives the same predictions and metrics."""
    first = tmp_path / "first"
    argv = ["eval", "--model", "dummy", "--dataset", "flowers102", "--root", str(flowers_mini), "--limit", "5",
            "--task", "closed-qa", "--set", "task_options.num_options=4", "-o", str(first)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "fgvlm", *argv], check=True, capture_output=True, env=env)
    again = tmp_path / "again"
    subprocess.run([sys.executable, *kind_argv("eval", first / "config.yaml", again)], check=True, env=env)
    assert (again / "predictions.jsonl").read_bytes() == (first / "predictions.jsonl").read_bytes()
    assert (again / "config.yaml").read_bytes() == (first / "config.yaml").read_bytes()
    assert strip_timing(again) == strip_timing(first)
    assert (again / "done.json").is_file()


def test_cnn_train_rerun_from_its_config_reproduces_the_run(tmp_path):
    """The same for `fgvlm cnn train` (in-process CLI, a tiny test_resnet for one epoch)."""
    from fgvlm.cli import main

    config = tmp_path / "cnn.yaml"
    config.write_text(
        "data: {dataset: synthflowers, options: {num_classes: 3, image_size: 32, images_per_class: [8, 4, 4]}}\n"
        "arch: test_resnet\nimage_size: 32\nepochs: 1\nbatch_size: 8\nnum_workers: 0\nnum_threads: 1\n"
        "progress: false\n"
    )
    first = tmp_path / "first"
    with pytest.raises(SystemExit) as exit_:
        main(["cnn", "train", "--config", str(config), "--limit", "16", "--out", str(first)])
    assert exit_.value.code == 0
    again = tmp_path / "again"
    with pytest.raises(SystemExit) as exit_:
        main(kind_argv("cnn-train", first / "config.yaml", again)[2:])
    assert exit_.value.code == 0
    assert (again / "predictions.jsonl").read_bytes() == (first / "predictions.jsonl").read_bytes()
    assert strip_timing(again) == strip_timing(first) and strip_timing(first)["n"] == 12  # 3 classes x 4
    assert "limit: 16" in (first / "config.yaml").read_text()


TIMING = {"seconds", "images_per_s", "train_images_per_s", "best"}


def strip_timing(run) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_fingerprint_of_a_large_file_changes_with_a_middle_edit(tmp_path):
    # Files over 64 MiB are hashed by their ends; a re-save that only changes the middle must still count.
    import os

    from fgvlm.runs import fingerprint_path

    big = tmp_path / "model.safetensors"
    big.write_bytes(bytes(70 << 20))
    before = fingerprint_path(big)
    with big.open("r+b") as fh:
        fh.seek(35 << 20)
        fh.write(b"\x01")
    stat = big.stat()
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint_path(big) != before
