"""Experiment trackers: the report_to setting, TensorBoard files, missing extras, the SFT list and the CNN wiring."""

from __future__ import annotations

import sys

import pytest

from fgvlm.config import ConfigError, resolve_config
from fgvlm.train import trackers
from fgvlm.train.trackers import open_trackers, parse_report_to, transformers_report_to


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (None, ["tensorboard"]),
        ("tensorboard", ["tensorboard"]),
        ("wandb, MLflow,wandb", ["wandb", "mlflow"]),
        (["tensorboard", "mlflow"], ["tensorboard", "mlflow"]),
        ("none", []),
        ("", []),
    ],
)
def test_report_to_names(value, names):
    assert parse_report_to(value) == names


@pytest.mark.parametrize("value", ["all", "tensorboard,comet", "none,wandb"])
def test_unknown_trackers_are_refused_by_name(value):
    with pytest.raises(ConfigError, match="report_to: unknown tracker"):
        parse_report_to(value)


def test_transformers_gets_an_explicit_list(tmp_path):
    from transformers import TrainingArguments

    for value, expected in [("tensorboard", ["tensorboard"]), ("none", [])]:
        args = TrainingArguments(output_dir=str(tmp_path), report_to=transformers_report_to(value))
        assert [name for name in args.report_to if name != "kubeflow"] == expected


def test_tensorboard_tracker_writes_numeric_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_trackers("tensorboard", tmp_path, {"lr": 0.1}) as tracked:
        tracked.log({"train_loss": 2.5, "lr": 0.1, "best": None, "note": "text", "flag": True}, step=3)
        tracked.log({"train_loss": 1.5}, step=6)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["lr", "train_loss"]
    assert [(e.step, e.value) for e in events.Scalars("train_loss")] == [(3, 2.5), (6, 1.5)]


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_missing_extra_says_what_to_install(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed, whatever this machine has
    with pytest.raises(ConfigError, match=rf"pip install 'fgvlm\[{name}\]'"):
        open_trackers(name, tmp_path)


def test_cnn_training_feeds_each_epoch_to_the_trackers(tmp_path, monkeypatch):
    from fgvlm.train.cnn import CNNTrainConfig, train_cnn

    logged: list[tuple[dict, int]] = []

    class Recording:  # stands in for the MLflow server
        def __init__(self, run_dir, run_name, config):
            assert config["arch"] == "test_resnet" and run_name == "cnn"

        def log(self, metrics, step):
            logged.append((metrics, step))

        def close(self):
            logged.append(({"closed": 1.0}, -1))

    monkeypatch.setitem(trackers.TRACKER_CLASSES, "mlflow", Recording)
    overrides = [
        "data.options={num_classes: 3, image_size: 32, images_per_class: [8, 4, 4]}",
        *("arch=test_resnet", "image_size=32", "epochs=2", "batch_size=8", "num_workers=0", "num_threads=1"),
        *("progress=false", "report_to=tensorboard,mlflow"),
    ]
    cfg = resolve_config(CNNTrainConfig, None, {"data.dataset": "synthflowers"}, overrides)
    train_cnn(cfg, tmp_path / "cnn")
    assert [step for _, step in logged] == [3, 6, -1]
    assert {"train_loss", "lr", "val_accuracy"} <= set(logged[0][0])  # the shared train_log.jsonl keys
    with pytest.raises(ConfigError, match="report_to"):
        resolve_config(CNNTrainConfig, None, {"data.dataset": "synthflowers"}, ["report_to=all"])
