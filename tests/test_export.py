"""`fgvlm export lmms-eval`: lm-evaluation-harness's results/samples schema, with the exact bootstrap stderr."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from fgvlm.eval.metrics import bootstrap_ci, bootstrap_stderr, classification_metrics
from fgvlm.report.export import sanitize, standard_error


def test_accuracy_stderr_is_the_spread_of_the_ci_bootstrap_means():
    correct = [True] * 100 + [False] * 300  # p = 0.25, n = 400
    # the same resampling the CI uses (seed 0, 1000 resamples), its standard deviation computed here by hand
    rng = np.random.default_rng(0)
    values = np.asarray(correct, dtype=float)
    means = values[rng.integers(0, 400, size=(1000, 400))].mean(axis=1)
    by_hand = math.sqrt(sum((m - means.mean()) ** 2 for m in means) / (len(means) - 1))
    assert bootstrap_stderr(correct) == pytest.approx(by_hand, rel=1e-9)
    assert bootstrap_ci(correct) == [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    # and it estimates the binomial standard error sqrt(p (1 - p) / n) = 0.02165
    assert bootstrap_stderr(correct) == pytest.approx(math.sqrt(0.25 * 0.75 / 400), rel=0.1)
    assert bootstrap_stderr([True] * 10) == 0.0 and bootstrap_stderr([]) == 0.0
    metrics = classification_metrics([0, 1, 1, 0], [0, 1, 0, None], ["a", "b"])
    assert metrics["accuracy_stderr"] == bootstrap_stderr([True, True, False, False])


def test_standard_error_falls_back_to_the_binomial_one():
    assert standard_error({"accuracy": 0.25, "n": 5, "accuracy_stderr": 0.1}) == 0.1
    assert standard_error({"accuracy": 0.25, "n": 5}) == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    assert sanitize("Qwen/Qwen3-VL-4B") == "Qwen__Qwen3-VL-4B"


def test_export_follows_lm_eval_schema_and_matches_the_runs(report_study, tmp_path, capsys):
    from report_fixtures import run_cli

    run_cli(["export", "lmms-eval", str(report_study), "--out", str(tmp_path / "lmms")])
    written = capsys.readouterr().out.split()
    assert {p.split("/")[-2] for p in written} == {"tiny-qwen3-vl", "test_resnet"}
    results_path = next(p for p in written if "/tiny-qwen3-vl/" in p)
    assert re.search(r"results_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d+\.json$", results_path)
    results = json.loads(Path(results_path).read_text())
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"):
        assert set(results[key]) if key != "config" else results[key], key
    tasks = {
        "eval-rank": "fgvlm_synthflowers_official_test_open_qa_rank",
        "eval-generate": "fgvlm_synthflowers_official_test_open_qa_generate",
        "head": "fgvlm_synthflowers_official_test_head",
    }
    assert set(results["results"]) == set(tasks.values())
    date = re.search(r"results_(.+)\.json$", results_path).group(1)
    for run_id, task in tasks.items():
        metrics = json.loads((report_study / run_id / "metrics.json").read_text())
        entry = results["results"][task]
        assert entry["acc,none"] == metrics["accuracy"] and entry["acc_stderr,none"] == metrics["accuracy_stderr"]
        assert entry["alias"] == task and entry["sample_len"] == metrics["n"]
        assert results["n-samples"][task] == {"original": 48, "effective": metrics["n"]}
        samples_path = tmp_path / "lmms" / "tiny-qwen3-vl" / f"samples_{task}_{date}.jsonl"
        samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
        assert len(samples) == metrics["n"] and [s["doc_id"] for s in samples] == list(range(metrics["n"]))
        assert sum(s["acc"] for s in samples) / len(samples) == pytest.approx(metrics["accuracy"])
        assert set(samples[0]) >= {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter"}
    generated = json.loads(
        (tmp_path / "lmms/tiny-qwen3-vl" / f"samples_{tasks['eval-generate']}_{date}.jsonl").read_text().split("\n")[0]
    )
    first = json.loads((report_study / "eval-generate/predictions.jsonl").read_text().split("\n")[0])
    assert generated["resps"] == [[first["answer"]]] and generated["arguments"]["gen_args_0"]["arg_1"]
    assert results["configs"][tasks["eval-rank"]]["output_type"] == "multiple_choice"
    assert results["configs"][tasks["eval-generate"]]["output_type"] == "generate_until"


def test_export_without_finished_runs_is_a_clear_error(tmp_path, capsys):
    from fgvlm.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(SystemExit) as exit_:
        main(["export", "lmms-eval", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "no finished run with predictions.jsonl" in capsys.readouterr().err
