"""A study that ends with a publish row (``kind: publish``, ``needs: [...]``, a dry run) runs it after the run it
publishes, keeps it out of the results table, and skips it once complete."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from fgvlm.cli import main

CNN = {
    "data": {"dataset": "synthflowers", "options": {"num_classes": 4, "image_size": 32}},
    "arch": "test_resnet",
    "image_size": 32,
    "epochs": 1,
    "batch_size": 16,
    "num_workers": 0,
    "num_threads": 1,
    "progress": False,
}


def study(*args) -> int:
    with pytest.raises(SystemExit) as code:
        main(["study", *map(str, args)])
    return code.value.code


def test_study_publish_row_dry_runs_after_its_run(tmp_path, capsys):
    runs = [
        {"id": "cnn", "kind": "cnn-train", "set": CNN},
        {
            "id": "publish-cnn",
            "kind": "publish",
            "needs": ["cnn"],
            "set": {"source": "${runs.cnn.out}", "repo_id": "your-org/tiny-cnn", "dry_run": True, "license": "mit"},
        },
    ]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "publishing", "runs": runs}, sort_keys=False))
    out = tmp_path / "out"
    assert study("run", path, "--out", out) == 0
    folder = out / "publish-cnn" / "upload"
    assert {"README.md", "config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    record = json.loads((out / "publish-cnn" / "publish.json").read_text())
    assert record["state"] == "dry-run" and record["source"] == str(out / "cnn")
    config_hash = json.loads((out / "cnn" / "done.json").read_text())["config_hash"]
    assert config_hash in record["commit_message"] and "license: mit" in (folder / "README.md").read_text()
    with (out / "results.csv").open() as fh:
        assert [row["run_id"] for row in csv.DictReader(fh)] == ["cnn"]  # publishing is not a result row
    capsys.readouterr()
    assert study("run", path, "--out", out) == 0
    assert "ran 0, skipped 2 (complete)" in capsys.readouterr().out
