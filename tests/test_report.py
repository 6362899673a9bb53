"""`fgvlm report` on real runs: the results rows and tables, the page's sections, escaping, and broken run dirs."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from fgvlm.report import ReportError, collect_rows, load_run, write_results_table
from fgvlm.report.figures import training_curves
from fgvlm.report.html import build_report
from fgvlm.report.stats import chance_level, paired_bootstrap

RUN_IDS = ["cnn", "eval-generate", "eval-rank", "head"]


class PageParser(HTMLParser):
    """Collects what the tests look at: tags seen, images' sources, the results table's body rows, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.result_rows = 0
        self.headings: list[str] = []
        self._in_results = self._in_body = self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self._in_results = attrs.get("id") == "results"
        if tag == "tbody" and self._in_results:
            self._in_body = True
        if tag == "tr" and self._in_body and attrs.get("class") != "group":  # a protocol group's heading row
            self.result_rows += 1
        self._in_heading = tag in ("h2", "h3")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        if tag == "table":
            self._in_results = False

    def handle_data(self, data):
        if self._in_heading and data.strip():
            self.headings.append(data.strip())
            self._in_heading = False


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text())
    return parser


def copy_study(report_study: Path, tmp_path: Path, *names: str) -> Path:
    study = tmp_path / "study"
    for name in names or RUN_IDS:
        shutil.copytree(report_study / name, study / name, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    return study


def predictions(run: Path) -> dict[str, bool]:
    lines = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return {p["id"]: p["pred"] == p["label"] for p in lines}


# -- rows and tables -----------------------------------------------------------------------------------------
def test_rows_carry_each_runs_metrics_and_paired_deltas(report_study):
    rows = collect_rows([report_study], reference="head")
    assert [r.run_id for r in rows] == RUN_IDS
    by_id = {r.run_id: r for r in rows}
    for run_id, row in by_id.items():
        metrics = json.loads((report_study / run_id / "metrics.json").read_text())
        assert row.accuracy == metrics["accuracy"] and row.n == metrics["n"]
        assert [row.ci_low, row.ci_high] == metrics["ci95"]
        assert row.chance == pytest.approx(1 / 12)
        assert row.state == "complete" and row.kind == metrics["kind"] and row.wall_time_s > 0
    assert by_id["head"].is_reference and by_id["head"].delta is None
    assert by_id["eval-generate"].top5 is None and by_id["eval-rank"].top5 is not None
    # the delta is the mean difference over the ids both runs predicted (the eval runs saw only the first images)
    head, rank = predictions(report_study / "head"), predictions(report_study / "eval-rank")
    shared = sorted(set(head) & set(rank))
    assert len(shared) == 48 == by_id["eval-rank"].delta_n
    expected = sum(rank[i] - head[i] for i in shared) / len(shared)
    assert by_id["eval-rank"].delta == pytest.approx(expected)
    assert by_id["eval-rank"].delta_low <= expected <= by_id["eval-rank"].delta_high
    assert by_id["cnn"].delta_n == 48


def test_reference_study_numbers_from_the_run_or_the_caller(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "eval-rank", "head")
    meta = json.loads((study / "head" / "meta.json").read_text())
    (study / "head" / "meta.json").write_text(json.dumps({**meta, "reference": {"accuracy": 0.62, "source": "x"}}))
    rows = collect_rows([study], reference_values={"eval-rank": 0.051, "head": 0.9})
    assert [r.reference_value for r in rows] == [0.051, 0.62]  # what the run records wins
    assert collect_rows([study])[0].reference_value is None
    result = build_report([study], tmp_path / "report", reference_values={"eval-rank": 0.051})
    assert ">5.1<" in result.html.read_text() and ">62.0<" in result.html.read_text()


def test_paired_bootstrap_by_hand():
    a = {"x": True, "y": True, "z": False, "w": False}
    b = {"x": True, "y": False, "z": False, "w": False, "only-b": True}
    paired = paired_bootstrap(a, b)
    assert (paired.difference, paired.n) == (0.25, 4)
    assert paired.low <= 0.25 <= paired.high and paired.low >= 0.0 and paired.high <= 1.0
    same = paired_bootstrap(a, a)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(a, {"other": True}) is None


def test_results_csv_and_markdown_have_one_row_per_run(report_study, tmp_path):
    rows = collect_rows([report_study])
    csv_path, md_path = write_results_table(rows, tmp_path / "tables")
    with csv_path.open() as fh:
        records = list(csv.DictReader(fh))
    assert [r["run_id"] for r in records] == RUN_IDS
    assert float(records[2]["accuracy"]) == pytest.approx(rows[2].accuracy, abs=1e-6)
    assert records[0]["is_reference"] == "True" and records[0]["delta"] == ""
    lines = md_path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(RUN_IDS) and "reference" in table[2]
    assert lines[-1].startswith("Cost of this table:")  # every run here writes a cost block


def test_chance_follows_the_number_of_options(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "eval-rank")
    config = yaml.safe_load((study / "eval-rank" / "config.yaml").read_text())
    config["task_options"] = {"num_options": 5}
    (study / "eval-rank" / "config.yaml").write_text(yaml.safe_dump(config))
    assert chance_level(load_run(study / "eval-rank")) == pytest.approx(0.2)


def test_training_curves_read_both_log_schemas():
    shared = [{"step": s, "epoch": 1, "train_loss": 1.0 / s, "lr": 0.1, "val_accuracy": 0.1 * s} for s in (1, 2)]
    older = [{"step": 10, "loss": 2.0, "lr": 0.01}, {"step": 20, "val_accuracy": 0.2, "val_loss": 1.0}]
    assert training_curves(shared).startswith("data:image/png;base64,")
    assert training_curves(older).startswith("data:image/png;base64,")
    assert training_curves([{"step": 1, "grad_norm": 3.0}]) is None


# -- the page ----------------------------------------------------------------------------------------------
def test_report_shows_every_section_with_real_numbers(report_study, tmp_path):
    result = build_report([report_study], tmp_path / "report", detail=["eval-generate"])
    page = parse(result.html)
    text = result.html.read_text()
    assert result.size_bytes < 1_500_000 and result.problems == []
    assert page.result_rows == len(RUN_IDS)
    assert "script" not in page.tags
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.images)
    for heading in ("Results", "Accuracy", "Training curves", "Confusion among the most confused classes"):
        assert heading in page.headings, heading
    assert {"cnn", "head"} <= set(page.headings)  # one training-curve block per training run
    best = max(result.rows, key=lambda r: r.accuracy)
    assert f"Detail: {best.run_id} (best run)" in page.headings and "Detail: eval-generate" in page.headings
    assert "Most confused pairs" in page.headings and "Sample of predictions" in page.headings
    assert f"{100 * best.accuracy:.1f}" in text
    thumbnails = [src for src in page.images if src.startswith("data:image/jpeg")]
    assert len(thumbnails) >= 12  # images found again through the runs' dataset
    assert text.count("<details>") >= len(RUN_IDS)
    answer = json.loads((report_study / "eval-generate" / "predictions.jsonl").read_text().splitlines()[0])["answer"]
    assert answer.strip()


def test_text_from_results_is_escaped(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "eval-generate")
    run = study / "eval-generate"
    lines = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for line in lines:
        line["answer"] = "<script>alert('answer')</script>"
        line["raw_answer"] = "<think></think><script>alert('raw')</script>"
    (run / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    confusion = json.loads((run / "confusion.json").read_text())
    confusion["rows"][0] = "<img src=x onerror=alert(1)>"
    (run / "confusion.json").write_text(json.dumps(confusion))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["name"] = "</pre><b>model</b>"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = build_report([study], tmp_path / "report", detail=["eval-generate"])
    text = result.html.read_text()
    page = parse(result.html)
    assert "script" not in page.tags and "b" not in page.tags
    assert "<script>" not in text and "&lt;script&gt;alert(" in text and "&lt;think&gt;&lt;/think&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;/pre&gt;&lt;b&gt;model&lt;/b&gt;" in text


# -- broken or unfinished run directories ------------------------------------------------------------------
def test_malformed_and_missing_files_are_named_and_the_page_still_renders(report_study, tmp_path):
    study = copy_study(report_study, tmp_path)
    (study / "cnn" / "metrics.json").write_text('{"accuracy": 0.5,')  # cut off mid-write
    with (study / "eval-rank" / "predictions.jsonl").open("a") as fh:
        fh.write("not json\n")
    (study / "head" / "metrics.json").unlink()
    (study / "eval-generate" / "config.yaml").write_text("data: [unclosed\n")
    (study / "eval-generate" / "meta.json").unlink()
    result = build_report([study], tmp_path / "report", detail=["eval-generate"])
    problems = "\n".join(result.problems)
    assert "cnn: metrics.json: unreadable" in problems
    assert "eval-rank: predictions.jsonl line 49: not valid JSON" in problems
    assert "head: metrics.json: missing" in problems
    assert "eval-generate: config.yaml: not valid YAML" in problems
    states = {r.run_id: r.state for r in result.rows}
    assert states == {"cnn": "incomplete", "eval-generate": "complete", "eval-rank": "complete", "head": "incomplete"}
    page = parse(result.html)
    assert page.result_rows == len(RUN_IDS)
    text = result.html.read_text()
    assert "metrics.json: unreadable" in text and "head (incomplete)" in text
    assert "images not shown: the run records no dataset" in text  # no config.yaml or meta.json to find its data


def test_done_json_marks_complete_runs_and_gives_the_wall_time(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "eval-rank")
    run_dir = study / "eval-rank"
    done = json.loads((run_dir / "done.json").read_text())
    row = collect_rows([run_dir])[0]
    assert row.state == "complete" and row.wall_time_s == done["wall_time_s"] > 0
    (run_dir / "done.json").unlink()  # metrics written, marker not yet: a run killed at the very end
    assert load_run(run_dir).state == "incomplete"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    older = {k: v for k, v in metrics.items() if k not in ("kind", "seconds")}  # written before done.json existed
    (run_dir / "metrics.json").write_text(json.dumps(older))
    assert load_run(run_dir).state == "complete" and collect_rows([run_dir])[0].wall_time_s is None


def test_images_that_cannot_be_found_leave_a_note(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "head")
    config = yaml.safe_load((study / "head" / "config.yaml").read_text())
    config["data"] = {"dataset": "flowers102", "root": str(tmp_path / "nowhere")}
    (study / "head" / "config.yaml").write_text(yaml.safe_dump(config))
    result = build_report([study], tmp_path / "report")
    text = result.html.read_text()
    assert "images not shown: cannot open the run&#39;s dataset" in text
    assert "data:image/jpeg" not in text and "Most confused pairs" in text


def test_cli_report_and_its_errors(report_study, tmp_path, capsys):
    from report_fixtures import run_cli

    run_cli(["report", str(report_study / "eval-rank"), str(report_study / "head"), "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "2 runs ->" in out and (tmp_path / "r" / "report.html").is_file()
    assert (tmp_path / "r" / "results.csv").is_file() and (tmp_path / "r" / "results.md").is_file()
    from fgvlm.cli import main

    for argv, message in [
        ([str(tmp_path / "missing")], "no such directory"),
        ([str(tmp_path / "r")], "neither a run directory"),
        ([str(report_study), "--detail", "nope"], "--detail nope: no such run"),
        ([str(report_study), "--reference", "nope"], "--reference 'nope': no such run"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["report", *argv, "--out", str(tmp_path / "r2")])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ReportError):
        collect_rows([report_study], reference="nope")


def test_a_study_folder_with_its_own_config_is_expanded(report_study, tmp_path):
    study = copy_study(report_study, tmp_path, "eval-rank", "head")
    (study / "config.yaml").write_text("runs: 2\n")
    (study / "results.csv").write_text("run_id\n")
    assert [r.run_id for r in collect_rows([study])] == ["eval-rank", "head"]
    shutil.copytree(study / "head", study / "head.old-20261202-120000")  # moved aside by `study run --rerun`
    assert [r.run_id for r in collect_rows([study])] == ["eval-rank", "head"]
    (study / "head" / "eval-test").mkdir()  # a run's own evaluation folders are not expanded
    shutil.copy(study / "head" / "metrics.json", study / "head" / "eval-test" / "metrics.json")
    assert [r.run_id for r in collect_rows([study / "head"])] == ["head"]


def test_cli_names_broken_files_on_stderr(report_study, tmp_path, capsys):
    from report_fixtures import run_cli

    study = copy_study(report_study, tmp_path, "eval-rank", "cnn")
    (study / "cnn" / "metrics.json").write_text("[1, 2")
    run_cli(["report", str(study), "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert "warning: cnn: metrics.json: unreadable" in captured.err and "2 runs ->" in captured.out
