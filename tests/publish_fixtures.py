"""Helpers for the publish tests: the CLI in this process, and the card's parts read back with huggingface_hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def publish(*argv: str | Path) -> int:
    """``fgvlm publish ...`` in this process; returns the exit code."""
    from fgvlm.cli import main

    with pytest.raises(SystemExit) as code:
        main(["publish", *map(str, argv)])
    return code.value.code


def card_metadata(readme: Path) -> dict:
    """The README's YAML front matter, parsed independently of huggingface_hub."""
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def model_index_metrics(readme: Path) -> tuple[str, dict[str, object]]:
    """The model-index through huggingface_hub's own parser: (model name, {metric type: EvalResult})."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(readme)  # the Hub's loader accepts the card
    assert card.data.eval_results, "the card's metadata has no evaluation results"
    name, results = model_index_to_eval_results(card_metadata(readme)["model-index"])
    return name, {result.metric_type: result for result in results}


def check_card_numbers(readme: Path, metrics_path: Path) -> dict[str, object]:
    """The model-index holds the run's accuracy, CI, top-5 (when measured), protocol, split, classes and n."""
    metrics = json.loads(metrics_path.read_text())
    _, by_type = model_index_metrics(readme)
    accuracy = by_type["accuracy"]
    assert accuracy.metric_value == pytest.approx(100 * metrics["accuracy"], abs=0.005)
    assert by_type["accuracy_ci95_lower"].metric_value == pytest.approx(100 * metrics["ci95"][0], abs=0.005)
    assert by_type["accuracy_ci95_upper"].metric_value == pytest.approx(100 * metrics["ci95"][1], abs=0.005)
    if metrics.get("top5_accuracy") is not None:
        assert by_type["top_5_accuracy"].metric_value == pytest.approx(100 * metrics["top5_accuracy"], abs=0.005)
    assert accuracy.dataset_config == metrics["protocol"] and accuracy.dataset_split == metrics["split"]
    assert accuracy.dataset_args["n"] == metrics["n"] and accuracy.dataset_args["classes"] == metrics["num_classes"]
    assert accuracy.task_type == "image-classification"
    return by_type
