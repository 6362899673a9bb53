"""``fgvlm eval`` end to end on real flowers-mini images: hand-computed metrics, every task and mode, resume after
SIGKILL, and data-parallel runs under torchrun that must equal the single-process result byte for byte."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fgvlm.config import ConfigError, DataConfig, resolve_config
from fgvlm.data import create_dataset
from fgvlm.eval.zeroshot import EvalConfig, evaluate
from fgvlm.models.base import ModelConfig
from fgvlm.models.dummy import DummyBackend, image_key
from fgvlm.models.loading import create_backend
from fgvlm.prompts import build_prompt, item_seed
from fgvlm.runs import RunConflictError, run_status

# The tiny-model session fixtures (tiny_model_dir, use_tiny_cache): every test shares one build per family.


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one's (incl. a test's FGVLM_CACHE), offline."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def eval_command() -> list[str]:
    """``python -m fgvlm eval``: the real CLI, as a user or ``torchrun -m fgvlm`` starts it."""
    return ["-m", "fgvlm", "eval"]


def make_cfg(root: Path, **fields) -> EvalConfig:
    data = DataConfig(dataset="flowers102", root=str(root))
    return EvalConfig(data=data, model=ModelConfig(name="dummy"), **fields)


def images(root: Path, count: int) -> list:
    split = create_dataset(dataset="flowers102", root=str(root)).split("test")
    return [split[i] for i in range(count)]


def without_speed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("images_per_s", "seconds")}


def test_config_from_yaml_flags_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("task: closed-qa\nmode: rank\nbatch_size: 2\ndata:\n  dataset: flowers102\n")
    cfg = resolve_config(EvalConfig, path, {"batch_size": 4, "model.name": "dummy"}, ["task_options.num_options=5"])
    assert (cfg.task, cfg.mode, cfg.batch_size, cfg.model.name) == ("closed-qa", "rank", 4, "dummy")
    assert cfg.task_options == {"num_options": 5} and cfg.score == "mean" and cfg.data.dataset == "flowers102"
    path.write_text("tsk: open-qa\n")
    with pytest.raises(ConfigError, match=r"eval.yaml.*'tsk'"):
        resolve_config(EvalConfig, path)
    with pytest.raises(ConfigError, match="num_option"):
        resolve_config(EvalConfig, None, {}, ["task_options.num_option=5"])
    with pytest.raises(ConfigError, match="mode"):
        resolve_config(EvalConfig, None, {"mode": "guess"})


def test_bad_task_option_value_fails_before_loading_a_model(flowers_mini: Path, tmp_path: Path) -> None:
    cfg = make_cfg(flowers_mini, task="closed-qa", task_options={"num_options": 500})
    cfg.model.name = "no-such-model"  # never reached
    with pytest.raises(ConfigError, match="num_options must be between 2 and 102"):
        evaluate(cfg, tmp_path)


# Pinned replies for the first six test images (labels 0, 0, 0, 1, 1, 1) and the hand-computed verdicts.
ANSWERS = [
    "pink primrose",  # strict right, lenient right
    "It is an evening primrose.",  # alias: strict unmatched, lenient right
    "a rose and a lily",  # ambiguous: unmatched in both
    "Hard-leaved pocket orchids",  # right in both
    "slipper orchid",  # alias: strict unmatched, lenient right
    "sunflower",  # wrong class (53) in both
]


def test_generate_open_qa_hand_computed(flowers_mini: Path, tmp_path: Path) -> None:
    samples = images(flowers_mini, 6)
    assert [s.label for s in samples] == [0, 0, 0, 1, 1, 1]
    backend = DummyBackend(answers={image_key(s.image): a for s, a in zip(samples, ANSWERS, strict=True)})
    metrics = evaluate(make_cfg(flowers_mini, limit=6, batch_size=4), tmp_path, backend=backend)

    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["pred"], r["pred_lenient"]) for r in lines] == [
        (0, 0),
        (None, 0),
        (None, None),
        (1, 1),
        (None, 1),
        (53, 53),
    ]
    assert lines[1] == {"id": samples[1].id, "label": 0, "pred": None, "pred_lenient": 0, "answer": ANSWERS[1]}
    assert metrics["accuracy"] == pytest.approx(2 / 6) and metrics["accuracy_lenient"] == pytest.approx(4 / 6)
    assert metrics["n"] == 6 and metrics["n_unmatched"] == 3 and metrics["top5_accuracy"] is None
    # F1 per present class: precision 1/1, recall 1/3 -> 0.5 for both classes
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert metrics["per_class_accuracy"] == pytest.approx({"pink primrose": 1 / 3, "hard-leaved pocket orchid": 1 / 3})
    assert (metrics["mode"], metrics["task"], metrics["protocol"]) == ("generate", "open-qa", "official")
    header = ("kind", "dataset", "protocol", "shots", "shot_seed", "classes", "split", "model", "num_classes")
    header += ("seconds",)
    assert list(metrics)[:10] == list(header) and (metrics["kind"], metrics["num_classes"]) == ("eval", 102)
    assert (metrics["shots"], metrics["shot_seed"], metrics["classes"]) == (None, None, "all")
    assert metrics["images_per_s"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    confusion = json.loads((tmp_path / "confusion.json").read_text())
    assert confusion["matrix"][0][0] == 1 and confusion["matrix"][0][102] == 2
    assert confusion["matrix"][1][1] == 1 and confusion["matrix"][1][53] == 1 and confusion["matrix"][1][102] == 1

    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["prompt"]["text"] == "What is the name of the flower in this image? Answer with the name only."
    assert (meta["task"], meta["mode"], meta["seed"], meta["images"]) == ("open-qa", "generate", 0, 6)
    assert meta["dataset"]["dataset"] == "flowers102" and meta["model"]["name"] == "dummy"
    assert "task: open-qa" in (tmp_path / "config.yaml").read_text()


def test_rank_mode_topk_and_scores(flowers_mini: Path, tmp_path: Path) -> None:
    metrics = evaluate(make_cfg(flowers_mini, limit=6, batch_size=4, mode="rank"), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    ds = create_dataset(dataset="flowers102", root=str(flowers_mini))
    prompt = build_prompt("open-qa", ds.prompt_names, object="flower").text
    for sample, record in zip(images(flowers_mini, 6), lines, strict=True):
        scores = DummyBackend().rank([sample.image], prompt, ds.prompt_names)
        assert record["pred"] == int(scores.mean[0].argmax()) == record["topk"][0][0]
        assert record["pred_by_score"]["sum"] == int(scores.sum[0].argmax())
        values = [score for _, score in record["topk"]]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert values[0] == pytest.approx(float(scores.mean[0].max()), abs=1e-6)
    top5 = sum(r["label"] in [c for c, _ in r["topk"]] for r in lines) / 6
    assert metrics["top5_accuracy"] == pytest.approx(top5) and metrics["score"] == "mean"
    assert set(metrics["accuracy_by_score"]) == {"sum", "mean", "prior"}
    assert metrics["accuracy_by_score"]["mean"] == pytest.approx(metrics["accuracy"])


def test_closed_qa_option_keys(flowers_mini: Path, tmp_path: Path) -> None:
    options = {"num_options": 4, "distractors": "hard"}
    samples = images(flowers_mini, 4)
    names = create_dataset(dataset="flowers102", root=str(flowers_mini)).prompt_names
    prompts = [
        build_prompt("closed-qa", names, label=s.label, seed=item_seed(0, s.id), object="flower", **options)
        for s in samples
    ]
    wrong = next(k for k in prompts[2].keys if k != prompts[2].answer)
    replies = [f"({prompts[0].answer})", f"Answer: {prompts[1].answer}.", wrong, "E"]
    backend = DummyBackend(answers={image_key(s.image): r for s, r in zip(samples, replies, strict=True)})
    metrics = evaluate(
        make_cfg(flowers_mini, limit=4, task="closed-qa", task_options=options), tmp_path, backend=backend
    )
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == [p.text for p in prompts]
    assert [r["options"] for r in lines] == [list(p.options) for p in prompts]
    assert [r["pred"] for r in lines] == [samples[0].label, samples[1].label, prompts[2].key_to_label[wrong], None]
    assert metrics["accuracy"] == 0.5 and metrics["n_unmatched"] == 1


@pytest.mark.parametrize(("num_options", "reported"), [(4, False), (5, False), (6, True)])
def test_closed_qa_rank_reports_top5_only_beyond_five_candidates(
    flowers_mini: Path, tmp_path: Path, num_options: int, reported: bool
) -> None:
    # With <= 5 ranked options the true one is always in the top 5: a top-5 accuracy of 1.0 would mean nothing.
    options = {"num_options": num_options}
    cfg = make_cfg(flowers_mini, limit=6, task="closed-qa", task_options=options, mode="rank")
    metrics = evaluate(cfg, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["topk"]) == min(5, num_options) for r in lines)
    if reported:
        top5 = sum(r["label"] in [c for c, _ in r["topk"]] for r in lines) / 6
        assert metrics["top5_accuracy"] == pytest.approx(top5)
    else:
        assert metrics["top5_accuracy"] is None and metrics["accuracy"] is not None


def test_verification_is_scored_as_yes_no(flowers_mini: Path, tmp_path: Path) -> None:
    samples = images(flowers_mini, 8)
    backend = DummyBackend(answers={image_key(s.image): "Yes." for s in samples})
    metrics = evaluate(make_cfg(flowers_mini, limit=8, task="closed-negative-qa"), tmp_path, backend=backend)
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    positives = sum(r["label"] for r in lines)
    assert 0 < positives < 8 and metrics["positives"] == positives
    assert all(r["pred"] == 1 and r["label"] == int(r["candidate"] == r["class_label"]) for r in lines)
    assert metrics["accuracy"] == pytest.approx(positives / 8)
    assert set(metrics["per_class_accuracy"]) == {"no", "yes"} and metrics["per_class_accuracy"]["yes"] == 1.0
    assert json.loads((tmp_path / "confusion.json").read_text())["rows"] == ["no", "yes"]

    ranked = evaluate(make_cfg(flowers_mini, limit=8, task="closed-negative-qa", mode="rank"), tmp_path / "rank")
    lines = [json.loads(line) for line in (tmp_path / "rank" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["pred"] == r["topk"][0][0] and {c for c, _ in r["topk"]} == {0, 1} for r in lines)
    assert ranked["top5_accuracy"] is None and ranked["n"] == 8


def test_resume_after_partial_write_is_byte_identical(flowers_mini: Path, tmp_path: Path) -> None:
    cfg = make_cfg(flowers_mini, limit=10, batch_size=3, mode="rank")
    reference = evaluate(cfg, tmp_path / "ref")
    expected = (tmp_path / "ref" / "predictions.jsonl").read_bytes()
    lines = expected.splitlines(keepends=True)
    shutil.copytree(tmp_path / "ref", tmp_path / "cut")
    # 4 complete lines (batch 2 half done) and half of the 5th, as a killed writer leaves them (no done.json)
    (tmp_path / "cut" / "predictions.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:20])
    (tmp_path / "cut" / "done.json").unlink()
    assert run_status(tmp_path / "cut", cfg).state == "partial"
    resumed = evaluate(cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / "predictions.jsonl").read_bytes() == expected
    assert without_speed(resumed) == without_speed(reference)
    assert json.loads((tmp_path / "cut" / "meta.json").read_text())["resumed_at"] == 3  # batch-aligned restart
    assert run_status(tmp_path / "cut", cfg).state == "complete"
    stamp = (tmp_path / "cut" / "done.json").read_bytes()
    again = evaluate(cfg, tmp_path / "cut")  # complete: skipped, the stored metrics come back unchanged
    assert again == json.loads((tmp_path / "cut" / "metrics.json").read_text()) == resumed
    assert (tmp_path / "cut" / "done.json").read_bytes() == stamp


def test_resume_refuses_a_different_config(flowers_mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    evaluate(make_cfg(flowers_mini, limit=4), out)
    with pytest.raises(RunConflictError, match=r"seed: 0 -> 1") as err:
        evaluate(make_cfg(flowers_mini, limit=4, seed=1), out)
    assert "--no-resume" in str(err.value)
    restarted = evaluate(make_cfg(flowers_mini, limit=3, seed=1), out, resume=False)
    assert restarted["n"] == 3 and len((out / "predictions.jsonl").read_text().splitlines()) == 3
    (moved,) = tmp_path.glob("run.replaced-*")  # the old run is kept aside, not deleted
    assert len((moved / "predictions.jsonl").read_text().splitlines()) == 4


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _start_and_kill(args: list[str], predictions: Path, at_least: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, *eval_command(), *args], env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while _line_count(predictions) < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no cleanup runs
    _, stderr = proc.communicate()
    assert proc.returncode == -9, stderr.decode()[-2000:]
    return _line_count(predictions)


def test_sigkill_then_rerun_gives_identical_predictions(flowers_mini: Path, tmp_path: Path) -> None:
    # generate mode: the dummy backend then needs no torch, so each CLI start costs ~1 s, not ~5 s (rank mode's
    # floats are covered by the partial-write test above)
    total = 24
    common = [
        "--model",
        "dummy",
        "--dataset",
        "flowers102",
        "--root",
        str(flowers_mini),
        "--limit",
        str(total),
        "--batch-size",
        "3",
        "--task",
        "closed-qa",
        "--set",
        "task_options.num_options=4",
        "--set",
        "model.extra.delay_s=0.04",
    ]
    killed = tmp_path / "killed"
    predictions = killed / "predictions.jsonl"
    first = _start_and_kill([*common, "-o", str(killed)], predictions, at_least=4)
    second = _start_and_kill([*common, "-o", str(killed)], predictions, at_least=13)
    assert 4 <= first < total and 13 <= second < total
    subprocess.run(
        [sys.executable, *eval_command(), *common, "-o", str(killed)], env=child_env(), check=True, capture_output=True
    )
    cfg = make_cfg(flowers_mini, limit=total, batch_size=3, task="closed-qa", task_options={"num_options": 4})
    cfg.model.extra = {"delay_s": 0.04}
    whole = evaluate(cfg, tmp_path / "whole")
    assert predictions.read_bytes() == (tmp_path / "whole" / "predictions.jsonl").read_bytes()
    assert _line_count(predictions) == total
    assert (killed / "config.yaml").read_bytes() == (tmp_path / "whole" / "config.yaml").read_bytes()
    assert without_speed(json.loads((killed / "metrics.json").read_text())) == without_speed(whole)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *eval_command(),
        *args,
    ]
    return subprocess.run(command, env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)


def test_tiny_qwen3_vl_end_to_end(flowers_mini: Path, tmp_path: Path, use_tiny_cache: Path) -> None:
    """The real tiny Qwen3-VL over real images: the files hold exactly what the backend answers and scores."""
    cfg = EvalConfig(
        data=DataConfig(dataset="flowers102", root=str(flowers_mini)),
        model=ModelConfig(name="tiny-qwen3-vl"),
        limit=2,
        batch_size=2,
        max_new_tokens=4,
    )
    backend = create_backend(cfg.model)
    generated = evaluate(cfg, tmp_path / "gen", backend=backend)
    ranked = evaluate(dataclasses.replace(cfg, mode="rank", limit=1), tmp_path / "rank", backend=backend)

    samples = images(flowers_mini, 2)
    names = create_dataset(dataset="flowers102", root=str(flowers_mini)).prompt_names
    prompt = build_prompt("open-qa", names, family="qwen3-vl", object="flower").text
    answers = backend.generate([s.image for s in samples], [prompt, prompt], max_new_tokens=4)
    lines = [json.loads(line) for line in (tmp_path / "gen" / "predictions.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in lines] == answers
    scores = backend.rank([samples[0].image], prompt, names).mean
    lines = [json.loads(line) for line in (tmp_path / "rank" / "predictions.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in lines] == scores.argmax(dim=1).tolist()
    assert [r["topk"][0][1] for r in lines] == pytest.approx(scores.max(dim=1).values.tolist(), abs=1e-6)
    meta = json.loads((tmp_path / "rank" / "meta.json").read_text())
    assert "<|im_start|>" in meta["prompt"]["rendered"] and meta["model"]["family"] == "qwen3-vl"
    assert generated["n"] == 2 and ranked["n"] == 1 and ranked["top5_accuracy"] is not None


@pytest.mark.slow  # ~30-40 s: torchrun and both workers each import torch + transformers on 2 cores
def test_two_processes_write_one_result_equal_to_single(
    flowers_mini: Path, tmp_path: Path, use_tiny_cache: Path, tiny_model_dir
) -> None:
    tiny_model_dir("qwen3-vl")  # built once here, not raced by the two workers
    # 5 images in batches of 2 = 3 batches: in the second round rank 1 has none. closed-qa with 5 options: per-image
    # prompts, so the rank requests are grouped per image; scores are real floats from the tiny model.
    args = [
        "--model",
        "tiny-qwen3-vl",
        "--dataset",
        "flowers102",
        "--root",
        str(flowers_mini),
        "--limit",
        "5",
        "--batch-size",
        "2",
        "--task",
        "closed-qa",
        "--mode",
        "rank",
        "--set",
        "task_options.num_options=5",
    ]
    result = _torchrun([*args, "-o", str(tmp_path / "dp")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("closed-qa / rank on 5 images") == 1  # only rank 0 reports
    cfg = EvalConfig(
        data=DataConfig(dataset="flowers102", root=str(flowers_mini)),
        model=ModelConfig(name="tiny-qwen3-vl"),
        limit=5,
        batch_size=2,
        task="closed-qa",
        mode="rank",
        task_options={"num_options": 5},
    )
    from fgvlm.train.runtime import torch_threads

    with torch_threads(1):  # as each torchrun worker (OMP_NUM_THREADS=1): float sums depend on the thread count
        single = evaluate(cfg, tmp_path / "single")
    dp_lines = (tmp_path / "dp" / "predictions.jsonl").read_bytes()
    assert dp_lines == (tmp_path / "single" / "predictions.jsonl").read_bytes()
    assert without_speed(json.loads((tmp_path / "dp" / "metrics.json").read_text())) == without_speed(single)
    assert json.loads((tmp_path / "dp" / "meta.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "dp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )


def test_reasoning_block_is_stripped_before_matching_and_kept_raw(flowers_mini: Path, tmp_path: Path) -> None:
    # The real Qwen3 tokenizer keeps <think>/</think> under skip_special_tokens: the answer is matched without the
    # block, and the raw reply stays in the predictions file.
    samples = images(flowers_mini, 2)
    names = create_dataset(dataset="flowers102", root=str(flowers_mini)).class_names
    replies = [f"<think>\n\n</think>\n\n{names[samples[0].label]}", names[samples[1].label]]
    backend = DummyBackend(answers={image_key(s.image): r for s, r in zip(samples, replies, strict=True)})
    metrics = evaluate(make_cfg(flowers_mini, limit=2), tmp_path, backend=backend)
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in lines] == [names[samples[0].label], names[samples[1].label]]
    assert lines[0]["raw_answer"] == replies[0] and "raw_answer" not in lines[1]
    assert metrics["accuracy"] == 1.0
