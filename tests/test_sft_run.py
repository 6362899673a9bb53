"""``run_sft`` end to end on a tiny Qwen3-VL: files, reload, resume equal to an uninterrupted run, refusals,
the classify objective with predict / head eval, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sft_fixtures import run_killed_at_step, steps_run

from fgvlm.config import ConfigError, from_dict
from fgvlm.sft.config import SFTConfig
from fgvlm.sft.run import run_sft

SMALL_DATA = {"dataset": "synthflowers", "options": {"num_classes": 4, "images_per_class": [2, 1, 1]}}


def tiny_cfg(**changes) -> SFTConfig:
    data = {
        "model": {"name": "tiny-qwen3-vl"},
        "data": SMALL_DATA,
        "method": "lora",
        "train": {"max_steps": 4, "lr": 1e-3, "eval_every": 2, "save_every": 2, "log_every": 1, "warmup_ratio": 0.0},
        "report_to": "none",
        "prompt_format": "lmms-engine",  # the reference framework's format: saved with the model, evaluated in it
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return from_dict(SFTConfig, data)


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FGVLM_CACHE", str(tiny_cache))
        out = tmp_path_factory.mktemp("sft") / "run"
        metrics = run_sft(tiny_cfg(), out)
    return out, metrics


def test_run_writes_the_contract_files_and_a_reloadable_model(finished_run, use_tiny_cache):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out, metrics = finished_run
    for name in ("config.yaml", "meta.json", "train_log.jsonl", "metrics.json", "predictions.jsonl", "done.json"):
        assert (out / name).is_file(), name
    assert metrics["kind"] == "sft" and metrics["split"] == "test" and metrics["n"] == 4
    assert list(metrics)[:10] == [
        *("kind", "dataset", "protocol", "shots", "shot_seed", "classes"),
        *("split", "model", "num_classes", "seconds"),
    ]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"step", "epoch", "train_loss", "lr", "val_accuracy", "val_top5", "val_loss", "grad_norm"} <= set(log[0])
    assert log[1]["val_accuracy"] is not None and log[0]["val_accuracy"] is None
    model = AutoModelForImageTextToText.from_pretrained(out / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged
    template = AutoProcessor.from_pretrained(out / "model").chat_template
    assert "You are a helpful assistant." in template and "<|vision_end|>\n" in template  # lmms-engine format
    meta = json.loads((out / "meta.json").read_text())
    assert meta["reload_max_logit_diff"] < 1e-4 and meta["model"]["trainable"] < meta["model"]["parameters"]


def test_fgvlm_eval_loads_the_saved_model(finished_run, use_tiny_cache, tmp_path):
    from fgvlm.eval.zeroshot import EvalConfig, evaluate
    from fgvlm.models.base import ModelConfig

    out, metrics = finished_run
    cfg = from_dict(EvalConfig, {"data": SMALL_DATA, "mode": "rank"})
    cfg.model = ModelConfig(name=str(out / "model"))
    again = evaluate(cfg, tmp_path / "eval")
    assert again["accuracy"] == metrics["accuracy"]


def test_resume_after_interruption_gives_the_same_weights(finished_run, use_tiny_cache, tmp_path, monkeypatch):
    out_a, _ = finished_run
    out_b = tmp_path / "resumed"
    run_killed_at_step(monkeypatch, 3, lambda: run_sft(tiny_cfg(), out_b))
    assert (out_b / "checkpoints" / "checkpoint-2").is_dir() and not (out_b / "done.json").exists()
    assert steps_run(monkeypatch, lambda: run_sft(tiny_cfg(), out_b)) == [3, 4]  # from checkpoint-2, not step 1
    a, b = weights(out_a), weights(out_b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    log_a = (out_a / "train_log.jsonl").read_text().splitlines()
    log_b = (out_b / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in log_b] == [1, 2, 3, 4]
    assert [json.loads(x)["train_loss"] for x in log_b] == pytest.approx([json.loads(x)["train_loss"] for x in log_a])
    # a finished run is reported, not retrained; another config is refused naming the key
    assert run_sft(tiny_cfg(), out_b)["accuracy"] == json.loads((out_b / "metrics.json").read_text())["accuracy"]
    with pytest.raises(ConfigError, match="train.lr"):
        run_sft(tiny_cfg(train={"lr": 5e-4}), out_b)


def test_classify_objective_writes_a_head_that_predict_and_head_eval_use(use_tiny_cache, tmp_path):
    from fgvlm.heads.config import HeadEvalConfig
    from fgvlm.heads.pipeline import eval_run
    from fgvlm.heads.predict import predict_images
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend

    out = tmp_path / "cls"
    cfg = tiny_cfg(objective="classify", train={"per_device_batch_size": 2, "lr": 1e-3})
    metrics = run_sft(cfg, out)
    assert (out / "head.safetensors").is_file() and (out / "head" / "head.json").is_file()
    assert metrics["kind"] == "sft" and metrics["top5_accuracy"] is not None
    predictions = {
        json.loads(line)["id"]: json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    }
    backend = load_backend(ModelConfig(name=str(out / "model")))
    image = tmp_path / "x.png"
    from fgvlm.data import create_dataset

    sample = create_dataset(cfg.data).split("test")[0]
    sample.image.save(image)
    (top,) = predict_images(backend, [image], head_dir=out)
    assert top.top[0][0] == create_dataset(cfg.data).class_names[predictions[sample.id]["pred"]]
    head_cfg = HeadEvalConfig(head_run=str(out / "head"), split="test")
    again = eval_run(head_cfg, tmp_path / "head-eval", progress=False, backend=backend)
    assert again["accuracy"] == metrics["accuracy"] and again["n"] == metrics["n"]


def test_resume_drops_a_best_step_newer_than_the_checkpoint(use_tiny_cache, tmp_path, monkeypatch):
    """best/ of a step after the resumed checkpoint is removed before the monitor reads it: with final: best the
    resumed run keeps its own best (no stale record pointing at removed weights)."""
    out = tmp_path / "run"
    cfg = tiny_cfg(train={"final": "best"})
    run_killed_at_step(monkeypatch, 3, lambda: run_sft(cfg, out))
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "checkpoints" / "checkpoint-3").exists()
    # a best step the interrupted run reached after its last checkpoint, unbeatable if it were kept
    (out / "best").mkdir(exist_ok=True)
    (out / "best" / "best.json").write_text(json.dumps({"step": 3, "val_accuracy": 1.01, "val_top5": None}) + "\n")
    run_sft(cfg, out)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["step"] == 4 and best["val_accuracy"] <= 1.0
    assert json.loads((out / "meta.json").read_text())["best"] == best


def test_last_checkpoint_passes_over_a_checkpoint_cut_off_mid_save(tmp_path):
    from fgvlm.sft.run import last_checkpoint

    folder = tmp_path / "checkpoints"
    assert last_checkpoint(folder) is None
    for step, files in [(2, ["trainer_state.json", "trainable.safetensors"]), (4, ["trainable.safetensors"])]:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        for name in files:
            (folder / f"checkpoint-{step}" / name).write_text("x")
    (folder / "checkpoint-10").mkdir()  # created, nothing written yet
    (folder / "checkpoint-x").mkdir()
    assert last_checkpoint(folder) == str(folder / "checkpoint-2")
    (folder / "checkpoint-4" / "trainer_state.json").write_text("x")
    assert last_checkpoint(folder) == str(folder / "checkpoint-4")


ZERO3_JSON = "configs/accelerate/deepspeed-zero3.json"


@pytest.mark.parametrize(
    "env",
    [
        {"ACCELERATE_USE_FSDP": "true"},
        {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
        {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": ZERO3_JSON},
    ],
)
def test_fsdp_and_zero3_launches_are_refused(env, tmp_path, monkeypatch):
    from pathlib import Path

    from fgvlm.sft.run import check_launcher

    for key, value in env.items():
        monkeypatch.setenv(key, str(Path(__file__).resolve().parents[1] / value) if key.endswith("FILE") else value)
    with pytest.raises(ConfigError, match="DDP .* ZeRO-2"):
        run_sft(tiny_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "absent.json"))
    check_launcher()  # DDP / ZeRO-2: accepted
