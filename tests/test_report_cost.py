"""The cost of each run in reports: images/s and GPU-/CPU-hours per row and the table's total in results.md, the
HTML page, the study's printed table and the lmms-eval export; runs without a ``cost`` block show blanks. Also the
configuration column of a run on another run's model (named by what made it, not by its path)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import yaml

from fgvlm.report import collect_rows, load_run, write_results_table
from fgvlm.report.cost import cost_summary, hours_text, rate_text, row_cost
from fgvlm.report.export import export_lmms_eval
from fgvlm.report.html import build_report
from fgvlm.report.tables import describe_run, markdown_table, results_markdown

GPU_COST = {  # the schema every run kind writes (fgvlm.runs); numbers as an H200 eval would record them
    "wall_seconds": 123.4,
    "images": 6149,
    "images_per_second": 49.8,
    "tokens": {"prompt": 2200000, "generated": 49192},
    "tokens_per_second": {"prompt": 17800.0, "generated": 398.6},
    "peak_memory": {"rss_bytes": 3400000000, "cuda_max_allocated_bytes": [43500000000]},
    "device_type": "cuda",
    "devices": ["NVIDIA H200"],
    "device_count": 1,
    "device_hours": 0.0343,
    "flops": 1.2e15,
    "flops_rule": "2·N·tokens forward",
}
CPU_COST = {"wall_seconds": 900.0, "images": 450, "images_per_second": 0.5, "device_type": "cpu", "device_count": 1}
"""No device_hours key: the reader computes wall_seconds x devices / 3600 = 0.25."""


def with_costs(report_study: Path, tmp_path: Path) -> Path:
    """eval-rank on a GPU, cnn on the CPU, head without any cost block (a run written before it existed)."""
    study = tmp_path / "study"
    for name in ("eval-rank", "cnn", "head"):
        shutil.copytree(report_study / name, study / name, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    for name, cost in (("eval-rank", GPU_COST), ("cnn", CPU_COST), ("head", None)):
        path = study / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics.pop("cost", None)
        path.write_text(json.dumps(metrics | ({"cost": cost} if cost else {})))
    return study


def test_rows_results_md_and_csv_show_each_runs_cost_and_the_total(report_study, tmp_path):
    rows = {row.run_id: row for row in collect_rows([with_costs(report_study, tmp_path)])}
    gpu, cpu, old = rows["eval-rank"], rows["cnn"], rows["head"]
    assert (gpu.images_per_second, gpu.device_hours, gpu.device_type) == (49.8, 0.0343, "cuda")
    assert (cpu.images_per_second, cpu.device_hours, cpu.device_type) == (0.5, 0.25, "cpu")
    assert (old.images_per_second, old.device_hours, old.device_type) == (None, None, None)

    table = markdown_table(list(rows.values()))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert lines["run"].endswith("| wall s | images/s | GPU/CPU hours |")
    assert lines["eval-rank"].endswith("| 49.8 | 0.0343 GPU-h |")
    assert lines["cnn"].endswith("| 0.500 | 0.25 CPU-h |")
    assert lines["head"].endswith("| – | – |")
    total = "Cost of this table: 0.25 CPU-h + 0.0343 GPU-h over 2 runs (1 without a cost record)."
    assert results_markdown(list(rows.values())).endswith(f"\n{total}\n")  # below every section

    csv_path, md_path = write_results_table(list(rows.values()), tmp_path / "tables")
    with csv_path.open() as fh:
        written = {row["run_id"]: row for row in csv.DictReader(fh)}
    assert (written["eval-rank"]["images_per_second"], written["eval-rank"]["device_hours"]) == ("49.8", "0.0343")
    assert written["cnn"]["device_type"] == "cpu" and written["head"]["device_hours"] == ""
    assert total in md_path.read_text()


def test_cost_cells_and_total_by_hand():
    assert row_cost(None) == {"images_per_second": None, "device_hours": None, "device_type": None}
    assert row_cost({"cost": {"wall_seconds": 1800, "device_count": 4, "device_type": "cuda"}})["device_hours"] == 2.0
    assert row_cost({"cost": "not a mapping"})["device_hours"] is None
    assert hours_text(2.0, "cuda") == "2 GPU-h" and hours_text(0.001234, "cpu") == "0.00123 CPU-h"
    assert hours_text(1.0, "mps") == "1 MPS-h" and hours_text(None, "cuda") == "–"
    assert rate_text(1234.56) == "1,234.6" and rate_text(0.25) == "0.250" and rate_text(None) == "–"
    assert cost_summary([]) == ""


def test_html_page_and_study_table_show_the_cost(report_study, tmp_path, capsys):
    from fgvlm.study.results import print_table

    result = build_report([with_costs(report_study, tmp_path)], tmp_path / "report")
    page = result.html.read_text()
    assert "<th>images/s</th><th>GPU/CPU hours</th>" in page
    assert '<td class="num">49.8</td>\n  <td class="num">0.0343 GPU-h</td>' in page
    assert '<p id="cost-total">Cost of this table: 0.25 CPU-h + 0.0343 GPU-h over 2 runs (1 without' in page

    print_table(result.rows, title="costs")
    printed = capsys.readouterr().out
    assert "GPU/CPU hours" in printed and "0.0343 GPU-h" in printed and "0.25 CPU-h" in printed
    assert "Cost of this table: 0.25 CPU-h + 0.0343 GPU-h over 2 runs" in printed


def test_lmms_eval_export_carries_the_cost_as_extra_fields(report_study, tmp_path):
    written = export_lmms_eval([with_costs(report_study, tmp_path)], tmp_path / "lmms")
    results = json.loads(next(path for path in written if path.parent.name == "tiny-qwen3-vl").read_text())
    rank = next(task for task in results["results"] if task.endswith("_rank"))
    head = next(task for task in results["results"] if task.endswith("_head"))
    entry = results["results"][rank]
    assert entry["images_per_second,none"] == 49.8 and entry["device_hours,none"] == 0.0343
    assert entry["images_per_second_stderr,none"] == "N/A"
    assert results["higher_is_better"][rank] | {} == {
        "acc": True,
        "top5_acc": True,
        "macro_f1": True,
        "images_per_second": True,
        "device_hours": False,
    }
    assert results["configs"][rank]["metadata"]["fgvlm_cost"] == GPU_COST
    assert not any(key.startswith(("images_per_second", "device_hours")) for key in results["results"][head])
    assert "fgvlm_cost" not in results["configs"][head]["metadata"]


def test_configuration_names_the_model_a_run_was_made_from(report_study, tmp_path):
    sft = tmp_path / "sft"  # a fine-tuning run's files, as `fgvlm sft` leaves them
    sft.mkdir()
    (sft / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-qwen3-vl"}, "objective": "classify"}))
    (sft / "meta.json").write_text("{}")
    (sft / "metrics.json").write_text(json.dumps({"kind": "sft", "accuracy": 0.5, "task": "open-qa"}))
    (sft / "done.json").write_text("{}")
    assert describe_run(load_run(sft)) == "tiny-qwen3-vl · open-qa · objective classify"

    head = tmp_path / "head-on-sft"
    shutil.copytree(report_study / "head", head, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    config = yaml.safe_load((head / "config.yaml").read_text())
    config["model"]["name"] = str(sft / "model")
    (head / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = json.loads((head / "metrics.json").read_text())  # the header names the model as configured
    (head / "metrics.json").write_text(json.dumps(metrics | {"model": str(sft / "model")}))
    description = describe_run(load_run(head))
    assert description.startswith("sft of tiny-qwen3-vl (objective classify) · ") and str(sft) not in description
