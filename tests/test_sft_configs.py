"""Every shipped ``configs/sft/*.yaml`` loads, validates and runs 5 steps on its tiny twin (the reference recipe through
the ``fgvlm sft`` command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fgvlm.config import resolve_config
from fgvlm.sft.config import SFTConfig
from fgvlm.sft.run import run_sft

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "sft").glob("*.yaml"))
TWIN = "tiny-like-qwen3-vl-4b"
"""The shipped configs name Qwen3-VL-4B: its shrunken twin has the real tokenizer, processor and chat template."""
SMALL = [
    f"model.name={TWIN}",
    "model.dtype=float32",
    "data.dataset=synthflowers",
    "data.protocol=official",
    "data.options={num_classes: 4, images_per_class: [2, 1, 1]}",
    "train.max_steps=5",
    "train.eval_every=5",
    "train.save_every=5",
    "train.grad_accum=1",
    "train.per_device_batch_size=1",
    "report_to=none",
]


def test_configs_are_shipped():
    names = {path.stem for path in CONFIGS}
    assert {f"qwen3-vl-4b-flowers102{suffix}" for suffix in ("", "-mixcut", "-lora", "-classify")} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_five_steps_on_its_tiny_twin(path, use_tiny_cache, tmp_path, capsys):
    shipped = resolve_config(SFTConfig, path)
    assert shipped.model.name == "qwen3-vl-4b" and shipped.data.dataset == "flowers102"
    out = tmp_path / path.stem
    if path.stem == "qwen3-vl-4b-flowers102":  # the reference recipe, through the command line
        from fgvlm.cli import main

        argv = ["sft", "--config", str(path), "--out", str(out)] + [x for s in SMALL for x in ("--set", s)]
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "accuracy" in capsys.readouterr().out
        assert shipped.train.lr == 2e-5 and shipped.train.max_steps == 4000 and shipped.train.scheduler == "cosine"
    else:
        run_sft(resolve_config(SFTConfig, path, overrides=SMALL), out)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 5 and log[-1]["val_accuracy"] is not None
    assert (out / "done.json").is_file() and (out / "model" / "config.json").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["kind"] == "sft" and saved["objective"] == shipped.objective
