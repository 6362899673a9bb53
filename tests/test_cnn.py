"""CNN baseline: configs, schedule math, pretrained loading, image cache, learning, resume, DDP and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fgvlm.config import ConfigError, resolve_config
from fgvlm.runs import TRAIN_LOG_KEYS, RunConflictError, run_status
from fgvlm.train.cnn import CNNEvalConfig, CNNTrainConfig, evaluate_run, train_cnn

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "cnn").glob("*.yaml"))
TIMING_KEYS = {"epoch_seconds", "images_per_s"}


def tiny_config(*overrides: str, num_classes: int = 4, size: int = 32, per_class: str = "[16, 4, 4]") -> CNNTrainConfig:
    """test_resnet on a small synthflowers at 32 px, one thread, no workers: a few seconds per run."""
    base = [
        f"data.options={{num_classes: {num_classes}, image_size: {size}, images_per_class: {per_class}}}",
        "arch=test_resnet",
        f"image_size={size}",
        "epochs=2",
        "batch_size=8",
        "lr=0.05",
        "num_workers=0",
        "num_threads=1",
        "progress=false",
        "crop_scale=[0.35, 1.0]",
    ]
    return resolve_config(CNNTrainConfig, None, {"data.dataset": "synthflowers"}, [*base, *overrides])


# -- configs ------------------------------------------------------------------------------------------------
def test_every_shipped_config_loads():
    assert {p.name for p in CONFIGS} >= {
        "resnet50-flowers102.yaml",
        "resnet50-flowers102-mixup-cutmix.yaml",
        "test-resnet-synthflowers.yaml",
    }
    for path in CONFIGS:
        cfg = resolve_config(CNNTrainConfig, path)
        assert cfg.arch and cfg.epochs >= 1, path
    reference = resolve_config(CNNTrainConfig, REPO / "configs/cnn/resnet50-flowers102.yaml")
    mixed = resolve_config(CNNTrainConfig, REPO / "configs/cnn/resnet50-flowers102-mixup-cutmix.yaml")
    # the reference's "6,149 training, 1,020 test" is the swapped protocol, ImageNet weights from the hub
    assert (reference.data.protocol, reference.pretrained, reference.image_size) == ("swapped", True, 224)
    assert (reference.mixup, reference.cutmix, mixed.mixup, mixed.cutmix) == (False, False, True, True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrained=/models/resnet50.pth", "pickle"),
        ("optimizer=adam", "optimizer must be one of sgd, adamw"),
        ("batch_size=7", "even batch_size"),
        ("crop_scale=[0.5, 0.2]", "crop_scale"),
        ("learning_rate=0.1", "unknown key(s) 'learning_rate'"),
    ],
)
def test_bad_config_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(override, "mixup=true")


def test_config_accepts_exactly_the_optimizers_that_can_be_built():
    """One list of optimizers: what the config validates is what create_optimizer builds."""
    from fgvlm.train import cnn_config, optim

    assert cnn_config.OPTIMIZERS is optim.OPTIMIZERS
    model = torch.nn.Linear(2, 2)
    for name in optim.OPTIMIZERS:
        assert tiny_config(f"optimizer={name}").optimizer == name
        assert optim.create_optimizer(model, name, lr=0.1, weight_decay=0.0) is not None


def test_pretrained_spellings():
    assert tiny_config("pretrained=hub").pretrained is True
    assert tiny_config("pretrained=none").pretrained is False
    assert tiny_config("pretrained=true").pretrained_label == "hub"
    assert tiny_config("pretrained=/w/model.safetensors").pretrained == "/w/model.safetensors"


# -- schedule -----------------------------------------------------------------------------------------------
def test_warmup_cosine_by_hand():
    from fgvlm.train.optim import create_scheduler, warmup_cosine

    f = warmup_cosine(total_steps=10, warmup_steps=2, min_lr_ratio=0.0)
    # warmup 1/2, 2/2; then cosine over the remaining 8 steps: 0.5 * (1 + cos(pi * k / 8))
    expected = [
        0.5,
        1.0,
        1.0,
        0.5 * (1 + math.cos(math.pi / 8)),
        0.5 * (1 + math.cos(math.pi / 4)),
        0.5 * (1 + math.cos(3 * math.pi / 8)),
        0.5,
        0.5 * (1 + math.cos(5 * math.pi / 8)),
    ]
    assert [f(s) for s in range(8)] == pytest.approx(expected)
    assert warmup_cosine(10, 0, min_lr_ratio=0.1)(5) == pytest.approx(0.1 + 0.9 * 0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = create_scheduler(optimizer, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.2])


# -- pretrained weights from a local safetensors file ------------------------------------------------------
def test_local_safetensors_backbone_loads_and_head_is_replaced(tmp_path):
    import timm

    from fgvlm.train.classifier import create_classifier

    torch.manual_seed(1)
    donor = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "donor.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model, source = create_classifier("test_resnet", 4, str(path))
    own = model.state_dict()
    assert torch.equal(own["conv1.0.weight"], donor.state_dict()["conv1.0.weight"])
    assert own["fc.weight"].shape == (4, donor.fc.in_features)
    assert source["head_replaced"] and source["head_keys_skipped"] == ["fc.bias", "fc.weight"]
    assert source["fingerprint"].startswith("sha256:") and source["pretrained"] == str(path)

    other = tmp_path / "other.safetensors"  # another architecture's weights: refused, keys named
    save_file({"stem.weight": torch.zeros(3)}, str(other))
    with pytest.raises(ConfigError, match="does not match the architecture"):
        create_classifier("test_resnet", 4, str(other))


def test_unknown_arch_suggests_close_names():
    from fgvlm.registry import UnknownNameError
    from fgvlm.train.classifier import create_classifier

    with pytest.raises(UnknownNameError, match="resnet50"):
        create_classifier("resnet5O", 4, False)


# -- image cache --------------------------------------------------------------------------------------------
def test_shrink_keeps_aspect_and_never_enlarges():
    from PIL import Image

    from fgvlm.train.images import shrink

    assert shrink(Image.new("RGB", (500, 375)), 100).shape == (100, 133, 3)
    assert shrink(Image.new("RGB", (60, 80)), 100).shape == (80, 60, 3)


def test_disk_cache_round_trip_and_key(tmp_path):
    from fgvlm.data import create_dataset
    from fgvlm.train.images import cache_split

    split = create_dataset(dataset="synthflowers", options={"num_classes": 2, "image_size": 40}).split("val")
    first = cache_split(split, 36, tmp_path, workers=1, progress=False)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and len(first) == len(split) and first[0].shape == (36, 36, 3)
    split.dataset.open_image = None  # a second call must not decode anything
    again = cache_split(split, 36, tmp_path, workers=1, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = create_dataset(dataset="synthflowers", options={"num_classes": 2, "image_size": 40, "seed": 1})
    cache_split(other.split("val"), 36, tmp_path, workers=1, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # another seed, another key


# -- learning, files, CLI eval ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "run"
    cfg = tiny_config("epochs=8", "batch_size=16", num_classes=12, per_class="[24, 8, 8]")
    return out, train_cnn(cfg, out)


def test_learns_synthflowers_and_writes_the_shared_result_files(trained_run):
    out, metrics = trained_run
    assert metrics["accuracy"] >= 0.6  # 12 classes: chance is 0.083
    assert metrics["mode"] == "cnn" and metrics["protocol"] == "official" and metrics["split"] == "test"
    assert (metrics["kind"], metrics["model"], metrics["num_classes"]) == ("cnn-train", "test_resnet", 12)
    assert metrics["n"] == 96 and metrics["top5_accuracy"] >= metrics["accuracy"]
    assert metrics["checkpoint"] == "best" and metrics["replicas_in_sync"]
    for name in (
        "config.yaml",
        "meta.json",
        "metrics.json",
        "predictions.jsonl",
        "confusion.json",
        "train_log.jsonl",
        "checkpoints/best.safetensors",
        "checkpoints/best.json",
        "checkpoints/last.safetensors",
        "checkpoints/last-state.pt",
        "done.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 9))
    assert log[-1]["train_loss"] < log[0]["train_loss"] and all(list(r)[:7] == list(TRAIN_LOG_KEYS) for r in log)
    best = json.loads((out / "checkpoints/best.json").read_text())
    assert best["metrics"]["val_accuracy"] == max(r["val_accuracy"] for r in log)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 96 and set(predictions[0]) == {"id", "label", "pred", "topk"}
    first = predictions[0]
    assert len(first["topk"]) == 5 and first["topk"][0][0] == first["pred"]
    assert [p for _, p in first["topk"]] == sorted((p for _, p in first["topk"]), reverse=True)
    assert np.mean([p["pred"] == p["label"] for p in predictions]) == pytest.approx(metrics["accuracy"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["arch"] == "test_resnet" and meta["model"]["pretrained"] == "none"
    assert meta["dataset"]["dataset"] == "synthflowers" and meta["preprocessing"]["input_size"] == [3, 32, 32]


def test_cli_eval_reproduces_the_training_metrics(trained_run):
    from typer.testing import CliRunner

    from fgvlm.commands.cnn import app

    out, metrics = trained_run
    result = CliRunner().invoke(app, ["eval", "--run", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "eval-test-best" / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["checkpoint"] == "best"
    assert (out / "eval-test-best" / "predictions.jsonl").read_text() == (out / "predictions.jsonl").read_text()
    last = evaluate_run(CNNEvalConfig(run=str(out), split="val", checkpoint="last"), out / "val-last")
    log_tail = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    assert last["n"] == 96 and last["accuracy"] == pytest.approx(log_tail["val_accuracy"])
    assert (last["kind"], last["split"]) == ("cnn-eval", "val") and (out / "val-last" / "done.json").is_file()
    capped = evaluate_run(CNNEvalConfig(run=str(out), split="val", limit=10), out / "val-10")
    assert capped["n"] == 10


def test_learns_with_mixup_and_cutmix(tmp_path):
    cfg = tiny_config("epochs=8", "batch_size=16", "mixup=true", "cutmix=true", num_classes=12, per_class="[24, 8, 8]")
    metrics = train_cnn(cfg, tmp_path / "mix")
    assert metrics["accuracy"] >= 0.5
    config = (tmp_path / "mix" / "config.yaml").read_text()
    assert "mixup: true" in config and "cutmix: true" in config


def test_existing_run_is_skipped_or_refused(trained_run, capsys):
    """Same config: complete, skipped (the stored metrics); another config: refused, naming the keys."""
    out, metrics = trained_run
    cfg = tiny_config("epochs=8", "batch_size=16", num_classes=12, per_class="[24, 8, 8]")
    assert run_status(out, cfg).state == "complete"
    stamp = (out / "done.json").read_bytes()
    assert train_cnn(cfg, out) == json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "done.json").read_bytes() == stamp and "already complete" in capsys.readouterr().err
    with pytest.raises(RunConflictError, match=r"epochs: 8 -> 2"):
        train_cnn(tiny_config(), out)


# -- resume -------------------------------------------------------------------------------------------------
def test_resume_equals_an_uninterrupted_run(tmp_path):
    """2 epochs straight vs 1 epoch, cut off, then resumed: same weights (EMA and raw), logs and metrics.

    MixUp/CutMix (numpy RNG), augmentation (torch/python RNG), EMA and momentum all carry state across epochs.
    """
    cfg = tiny_config("epochs=2", "mixup=true", "cutmix=true", "ema=true", "ema_decay=0.9")
    straight = train_cnn(cfg, tmp_path / "straight")
    train_cnn(cfg, tmp_path / "cut", stop_after_epoch=1)
    assert len((tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()) == 1
    status = run_status(tmp_path / "cut", cfg)
    assert (status.state, status.progress) == ("partial", "epoch 1 of 2 checkpointed")
    assert not (tmp_path / "cut" / "done.json").exists()
    resumed = train_cnn(cfg, tmp_path / "cut")  # resume is the default

    for name in ("last.safetensors", "best.safetensors"):
        a, b = (load_file(str(tmp_path / run / "checkpoints" / name)) for run in ("straight", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    raw = [
        torch.load(tmp_path / run / "checkpoints/last-state.pt", weights_only=True)["model"]
        for run in ("straight", "cut")
    ]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])

    def log(run):
        return [
            {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()
        ]

    assert log("straight") == log("cut") and len(log("cut")) == 2
    drop = TIMING_KEYS | {"train_images_per_s", "seconds", "cost"}
    assert {k: v for k, v in straight.items() if k not in drop} == {k: v for k, v in resumed.items() if k not in drop}


def test_partial_run_without_a_checkpoint_starts_over_in_place(tmp_path):
    """Killed in its first epoch (config.yaml and a stray log line, no checkpoint): the rerun trains from scratch."""
    from fgvlm.runs import start_run

    cfg = tiny_config("epochs=1")
    run = start_run(tmp_path / "run", cfg)
    run.append_jsonl("train_log.jsonl", [{"step": 1, "epoch": 1, "train_loss": 9.9}])
    assert run_status(run.path, cfg).state == "partial"
    metrics = train_cnn(cfg, run.path)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["train_loss"] != 9.9 and metrics["n"] == 16
    assert run_status(run.path, cfg).state == "complete"


def test_resume_with_a_changed_config_is_refused(tmp_path, capsys):
    """The run's own config.yaml resumes it; a --set that changes it is refused, naming the key (one CLI line)."""
    from fgvlm.cli import main

    cut = tmp_path / "cut"
    train_cnn(tiny_config("epochs=2"), cut, stop_after_epoch=1)
    with pytest.raises(RunConflictError, match=r"Differing keys: lr: 0\.05 -> 0\.1\. "):
        train_cnn(tiny_config("epochs=2", "lr=0.1"), cut)
    argv = ["cnn", "train", "--config", str(cut / "config.yaml"), "--out", str(cut)]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--set", "epochs=3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Differing keys: epochs: 2 -> 3." in err and len(err.splitlines()) == 1
    assert len((cut / "train_log.jsonl").read_text().splitlines()) == 1  # nothing was trained
    # a checkpoint whose state file is from another epoch (killed while saving): one line naming the fix
    info = json.loads((cut / "checkpoints" / "last.json").read_text())
    (cut / "checkpoints" / "last.json").write_text(json.dumps({**info, "epoch": 7}))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--no-resume" in err and "Traceback" not in err


def test_resume_rewrites_the_log_atomically(tmp_path, monkeypatch):
    """A failure while resume rewrites train_log.jsonl (dropping epochs after the checkpoint) keeps the old file."""
    out = tmp_path / "cut"
    train_cnn(tiny_config("epochs=2"), out, stop_after_epoch=1)
    log = out / "train_log.jsonl"
    original = log.read_text() + json.dumps({"epoch": 2, "train_loss": 9.9}) + "\n"  # logged, not checkpointed
    log.write_text(original)
    real_replace = os.replace

    def failing_replace(source, target, *args, **kwargs):  # the new log is written, then the disk fails
        if str(target).endswith("train_log.jsonl"):
            assert Path(source).read_text() != original  # the rewritten lines were in the temp file
            raise OSError("disk full")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        train_cnn(tiny_config("epochs=2"), out, resume=True)
    assert log.read_text() == original
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.setattr(os, "replace", real_replace)
    train_cnn(tiny_config("epochs=2"), out, resume=True)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
    assert json.loads(log.read_text().splitlines()[1])["train_loss"] != 9.9


# -- two processes ------------------------------------------------------------------------------------------
CLOSE_PROBE = """
import json, os, torch
from fgvlm.distributed import ProcessGroup
group = ProcessGroup.from_env()


def train():  # as train_cnn: the DDP model is gone when the group closes
    import timm  # imports torch._dynamo, as building a CNN does
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    model(torch.zeros(2, 4)).sum().backward()


train()
group.close()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(f"threads-{os.environ['RANK']}.json", "w") as fh:  # one file per rank: stdout lines interleave
    json.dump(sorted(n for n in names if "gloo" in n), fh)
"""


def torchrun_two(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun`` with two processes on CPU (1 thread each, offline) in ``cwd``; it must succeed."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc (Linux)")
def test_closing_the_group_stops_its_gloo_threads(tmp_path):
    """A group closed after DDP and a torch._dynamo import (timm) leaves no gloo thread running into interpreter exit,
    where one now and then aborted a torchrun child ("terminate called without an active exception")."""
    script = tmp_path / "probe.py"
    script.write_text(CLOSE_PROBE)
    torchrun_two([str(script)], tmp_path)
    assert [json.loads((tmp_path / f"threads-{rank}.json").read_text()) for rank in (0, 1)] == [[], []]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(
        "data: {dataset: synthflowers, options: {num_classes: 4, image_size: 32, images_per_class: [16, 4, 4]}}\n"
        "arch: test_resnet\nimage_size: 32\nepochs: 2\nbatch_size: 8\nlr: 0.05\nnum_workers: 0\nprogress: false\n"
    )
    out = tmp_path / "run"
    proc = torchrun_two(["-m", "fgvlm", "cnn", "train", "--config", str(config), "--out", str(out)], tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["replicas_in_sync"]
    assert len(metrics["replica_checksums"]) == 2 and metrics["replica_checksums"][0] == metrics["replica_checksums"][1]
    assert metrics["n"] == 16  # the whole test split, gathered from both ranks' halves
    cost = metrics["cost"]  # gathered from both processes: their devices, all images (2 epochs + 2 validations + test)
    assert cost["device_count"] == len(cost["devices"]) == 2 and cost["images"] == 2 * 64 + 2 * 16 + 16
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2 and json.loads(log[0])["images"] == 64  # 2 ranks x 4 steps x 8 images, one line per epoch
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    assert proc.stdout.count("test: accuracy") == 1
