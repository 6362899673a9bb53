"""The ``cost`` block of every run's results: the meter's arithmetic, the FLOP rules by hand, the blocks real runs
write (eval generate and rank, head, CNN, audit), and results without a block (older runs) still read everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fgvlm.cost import COST_KEYS, ITEM_FLOPS_RULE, CostMeter, count_forward_flops
from fgvlm.models.flops import (
    VLM_FORWARD_RULE,
    ModelUsage,
    batch_counts,
    count_patches,
    forward_flops,
    parameter_counts,
    train_flops,
)
from fgvlm.runs import HEADER_KEYS, RunDir, results_header, write_results

SYNTH = ["--set", "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}"]


def ordered_keys(block: dict) -> list[str]:
    return [key for key in COST_KEYS if key in block]


def test_meter_block_by_hand(tmp_path):
    meter = CostMeter()
    meter.add_images(10)
    meter.add_tokens(prompt=100, generated=7)
    meter.add_tokens(prompt=20)
    meter.add_flops(None, "never counted")  # not counted: no rule either
    meter.add_flops(1e6, "rule A")
    meter.add_flops(5e5, "rule A")
    block = meter.block(wall_seconds=2.0)
    assert list(block) == list(COST_KEYS)
    assert (block["images"], block["images_per_second"]) == (10, 5.0)
    assert block["tokens"] == {"prompt": 120, "generated": 7}
    assert block["tokens_per_second"] == {"prompt": 60.0, "generated": 3.5}
    assert block["flops"] == 1.5e6 and block["flops_rule"] == "rule A"
    assert block["device_type"] == "cpu" and block["devices"] == [f"cpu ({torch.get_num_threads()} threads)"]
    assert block["device_count"] == 1 and block["device_hours"] == round(2.0 / 3600, 6)
    assert block["peak_memory"]["rss_bytes"] > 10 << 20 and block["peak_memory"]["cuda_max_allocated_bytes"] == []
    with pytest.raises(ValueError, match="unknown token kind 'answer'"):
        meter.add_tokens(answer=1)
    untouched = CostMeter().block(wall_seconds=1.0)
    assert "tokens" not in untouched and untouched["flops"] is None and untouched["flops_rule"] is None
    outer = CostMeter()  # a run that adds a sub-run's counts (fine-tuning + its final evaluation)
    outer.add_tokens(trained=50)
    outer.add_flops(10.0, "rule B")
    outer.add_block(block)
    merged = outer.block(wall_seconds=1.0)
    assert (merged["images"], merged["tokens"]) == (10, {"trained": 50, "prompt": 120, "generated": 7})
    assert merged["flops"] == 1.5e6 + 10 and merged["flops_rule"] == "rule B; rule A"


def test_write_results_adds_the_run_cost_last(tmp_path):
    from fgvlm.data import create_dataset

    dataset = create_dataset(dataset="synthflowers", options={"num_classes": 3})
    header = results_header("eval", dataset, "test", "m", 1.23456, num_classes=2)
    assert header == {"kind": "eval", "dataset": "synthflowers", **dataset.protocol_header(), "split": "test",
                      "model": "m", "num_classes": 2, "seconds": 1.235}  # fmt: skip
    assert list(header) == list(HEADER_KEYS)
    run = RunDir(tmp_path / "run")
    run.cost.add_images(4)
    written = write_results(run, header, {"accuracy": 0.5, "cost": "ignored"})
    assert list(written)[-1] == "cost" and written["cost"]["wall_seconds"] == 1.235 and written["cost"]["images"] == 4
    assert written["cost"]["images_per_second"] == round(4 / 1.235, 3)
    plain = write_results(tmp_path / "plain", header, {"accuracy": 0.5})  # a folder, not a run: no block
    assert "cost" not in plain


def test_flop_rules_by_hand():
    counts = {"lm": 100, "head": 7, "vision": 5, "embedding": 50}
    usage = ModelUsage(prompt_tokens=10, generated_tokens=2, head_positions=3, vision_patches=4)
    assert forward_flops(counts, usage) == 2 * 100 * 12 + 2 * 7 * 3 + 2 * 5 * 4 == 2482
    assert train_flops(counts, 10, 3, 4) == 6 * 100 * 10 + 6 * 7 * 3 + 2 * 5 * 4 == 6166
    assert train_flops(counts, 10, 3, 4, vision_trained=True) == 6246
    assert usage.since(ModelUsage(prompt_tokens=4, vision_patches=4)) == ModelUsage(6, 2, 3, 0)
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
    conv.train()
    # 8x8 outputs x 4 channels x a 3x3x3 window, a multiply and an add each
    assert count_forward_flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * 64 * 4 * 27 == 13824
    assert conv.training  # the mode is restored
    assert count_forward_flops(torch.nn.Linear(16, 5), torch.zeros(1, 16)) == 2 * 16 * 5
    assert count_patches(torch.zeros(37, 1536), 16) == 37  # Qwen: one row per patch
    assert count_patches(torch.zeros(2, 3, 224, 224), 14) == 2 * 16 * 16
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, -100, -100]])
    batch = {"input_ids": labels, "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]), "labels": labels}
    assert batch_counts(batch) == {"tokens": 7, "answers": 3, "patches": 0}  # labels after the shift: 2 + 1


@pytest.fixture(scope="module")
def tiny_qwen(tiny_model_dir):
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend
    from fgvlm.train.runtime import torch_threads

    with torch_threads(1):
        yield load_backend(ModelConfig(name=str(tiny_model_dir("qwen3-vl"))))


def test_parameter_counts_split_qwen3_vl_as_the_benchmarks_did(tiny_qwen):
    from fgvlm.models.families import get_family

    model = tiny_qwen.model
    counts = parameter_counts(model, get_family("qwen3-vl"))
    inner = model.model
    embed = inner.language_model.embed_tokens.weight.numel()
    assert counts == {  # benchmarks/bench_sft.py's former Qwen3-VL-only counting
        "lm": sum(p.numel() for p in inner.language_model.parameters()) - embed,
        "head": model.lm_head.weight.numel(),
        "vision": sum(p.numel() for p in inner.visual.parameters()),
        "embedding": embed,
    }
    tied = model.lm_head.weight is inner.language_model.embed_tokens.weight
    total = sum(p.numel() for p in model.parameters())
    assert counts["lm"] + counts["vision"] + counts["embedding"] + (0 if tied else counts["head"]) == total


def test_backend_counts_tokens_patches_and_flops(tiny_qwen, flowers_mini):
    from fgvlm.data import create_dataset
    from fgvlm.models.families import get_family

    split = create_dataset(dataset="flowers102", root=str(flowers_mini)).split("test")
    images = [split[0].image, split[1].image]
    prompts = ["What flower is this?", "Name the flower."]
    before = tiny_qwen.usage.copy()
    answers = tiny_qwen.generate(images, prompts, max_new_tokens=4)
    done = tiny_qwen.usage.since(before)
    texts = [tiny_qwen.render_prompt(p) for p in prompts]
    encoded = tiny_qwen.processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert done.prompt_tokens == int(encoded["attention_mask"].sum())  # real tokens, pads not counted
    assert done.vision_patches == encoded["pixel_values"].shape[0]
    assert 1 <= done.generated_tokens <= 8 and done.head_positions == done.generated_tokens and len(answers) == 2
    counts = parameter_counts(tiny_qwen.model, get_family("qwen3-vl"))
    assert tiny_qwen.counted_flops(done) == (
        2 * counts["lm"] * (done.prompt_tokens + done.generated_tokens)
        + 2 * counts["head"] * done.generated_tokens
        + 2 * counts["vision"] * done.vision_patches
    )


@pytest.mark.parametrize("packed", [True, False])
def test_rank_counts_what_runs_for_every_image_of_a_batch(tiny_qwen, flowers_mini, packed):
    """Ranking 2 images in one call counts each image's continuations: packed, one row of trie nodes per image
    ("rose", "rose mallow" and "red ginger" share leading tokens); grouped, every (image, candidate) row; plus each
    image's last prompt position. The text-only prior is computed first, so the counted call ranks images only."""
    from fgvlm.data import create_dataset
    from fgvlm.models.trie import candidate_trie

    split = create_dataset(dataset="flowers102", root=str(flowers_mini)).split("test")
    images, names = [split[0].image, split[1].image], ["rose", "rose mallow", "red ginger", "lotus"]
    tiny_qwen.packed_rank = packed
    try:
        tiny_qwen.rank(images[:1], "Name the flower.", names)  # the prior, kept
        before = tiny_qwen.usage.copy()
        tiny_qwen.rank(images, "Name the flower.", names)
        done = tiny_qwen.usage.since(before)
        _, _, cont_ids = tiny_qwen._render_candidates("Name the flower.", tuple(names), with_image=True)
    finally:
        del tiny_qwen.packed_rank
    text = tiny_qwen.render_prompt("Name the flower.")
    encoded = tiny_qwen.processor(images=images, text=[text] * 2, padding=True, return_tensors="pt")
    rest = tuple(tuple(ids) for ids in cont_ids if len(ids) > 1)
    per_image = candidate_trie(rest).size if packed else sum(len(ids) - 1 for ids in rest)
    assert not packed or per_image < sum(len(ids) - 1 for ids in rest)  # the trie shares tokens here
    assert done.prompt_tokens == int(encoded["attention_mask"].sum()) + 2 * per_image
    assert done.head_positions == 2 * per_image + 2 and done.vision_patches == encoded["pixel_values"].shape[0]


# -- the blocks real runs write -----------------------------------------------------------------------------------
def cost_of(run: Path, name: str = "metrics.json") -> dict:
    block = json.loads((run / name).read_text())["cost"]
    assert list(block) == ordered_keys(block)
    assert block["wall_seconds"] > 0 and block["peak_memory"]["rss_bytes"] > 0
    assert block["device_type"] == "cpu" and block["device_count"] == len(block["devices"]) == 1
    assert block["images_per_second"] == round(block["images"] / block["wall_seconds"], 3)
    return block


def test_eval_runs_count_images_tokens_and_flops(report_study):
    generate = cost_of(report_study / "eval-generate")
    assert generate["images"] == 24 and set(generate["tokens"]) == {"prompt", "generated"}
    assert 24 <= generate["tokens"]["generated"] <= 24 * 8  # max_new_tokens=8
    assert generate["tokens"]["prompt"] > 24 * 10  # each prompt holds its image tokens and the question
    assert generate["flops"] > 0 and generate["flops_rule"] == VLM_FORWARD_RULE
    rank = cost_of(report_study / "eval-rank")
    assert rank["images"] == 48 and set(rank["tokens"]) == {"prompt"} and rank["flops"] > 0


def test_cnn_run_counts_flops_per_image_by_the_stated_rule(report_study):
    import timm

    run = report_study / "cnn"
    block = cost_of(run)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    trained = sum(r["images"] for r in log)
    evaluated = 2 * 48 + 48  # the validation split after each of 2 epochs, then the test split
    assert block["images"] == trained + evaluated and "tokens" not in block
    size = json.loads((run / "meta.json").read_text())["preprocessing"]["input_size"]
    per_image = count_forward_flops(timm.create_model("test_resnet", num_classes=12), torch.zeros(1, *size))
    assert block["flops"] == 3 * per_image * trained + per_image * evaluated
    assert block["flops_rule"] == ITEM_FLOPS_RULE


def test_head_run_flops_by_hand(tmp_path):
    """A linear head 16 -> 4 on the dummy backbone (no VLM FLOPs): 40 steps of 32, two validations of 12, 12 tested."""
    from fgvlm.commands.head import app

    cache = ["--set", f"cache_dir={tmp_path / 'cache'}", "--set", "steps=40", "--set", "eval_every=20"]
    argv = ["train", "--model", "dummy", "--dataset", "synthflowers", *SYNTH, *cache, "--out", str(tmp_path / "h")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    block = cost_of(tmp_path / "h")
    per_item = 2 * 16 * 4
    assert block["images"] == 40 * 32 + 2 * 12 + 12 == 1316
    assert block["flops"] == 3 * per_item * 1280 + per_item * 36 == 496128
    assert "tokens" not in block and block["flops_rule"] == ITEM_FLOPS_RULE
    result = CliRunner().invoke(app, ["eval", "--run", str(tmp_path / "h"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    evaluated = cost_of(tmp_path / "e")
    assert (evaluated["images"], evaluated["flops"]) == (12, per_item * 12)


def test_audit_counts_images_hashed(tmp_path):
    from fgvlm.config import DataConfig
    from fgvlm.data.audit import AuditConfig, run_audit

    cfg = AuditConfig(data=DataConfig(dataset="synthflowers", options={"num_classes": 3, "image_size": 32}))
    report = run_audit(cfg, tmp_path / "audit", progress=False)
    block = cost_of(tmp_path / "audit", "audit.json")
    assert block["images"] == report["summary"]["images"] and block["flops"] is None and "tokens" not in block


# -- results without a cost block (runs written before it existed) ----------------------------------------------
def test_runs_without_a_cost_block_read_as_before(report_study, tmp_path):
    from fgvlm.report import collect_rows
    from fgvlm.report.export import export_lmms_eval
    from fgvlm.report.html import build_report

    old = tmp_path / "old"
    for name in ("eval-rank", "head", "cnn"):
        shutil.copytree(report_study / name, old / name, ignore=shutil.ignore_patterns("checkpoints", "tb"))
        metrics = json.loads((old / name / "metrics.json").read_text())
        (old / name / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "cost"}))
    names = ("cnn", "eval-rank", "head")  # the order a study folder lists them in

    def rows(paths: list[Path]) -> list[tuple]:
        return [(r.run_id, r.accuracy, r.n, r.state, r.wall_time_s) for r in collect_rows(paths)]

    assert rows([old]) == rows([report_study / name for name in names])
    result = build_report([old], tmp_path / "report")
    assert result.html.is_file() and not result.problems
    assert export_lmms_eval([old], tmp_path / "export")
