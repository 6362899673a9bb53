"""Run directories: atomic JSON, JSONL that survives a killed writer, fingerprints, meta.json contents."""

from __future__ import annotations

import json

from fgvlm.config import DataConfig
from fgvlm.runs import RunDir, fingerprint_path


def test_meta_and_config_are_written(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(DataConfig(dataset="flowers102", protocol="swapped"))
    meta = run.write_meta(command="test", seed=5, dataset={"dataset": "x"}, model={"name": "m"})
    assert "protocol: swapped" in (run / "config.yaml").read_text()
    saved = json.loads((run / "meta.json").read_text())
    assert saved == json.loads(json.dumps(meta, default=str))
    assert saved["seed"] == 5 and saved["versions"]["torch"] and saved["versions"]["python"]
    assert not list(run.path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_jsonl_drops_partial_last_line(tmp_path):
    run = RunDir(tmp_path)
    run.append_jsonl("p.jsonl", [{"id": "1"}, {"id": "2"}])
    with (run / "p.jsonl").open("a") as fh:
        fh.write('{"id": "3", "la')  # a writer killed mid-line
    assert run.read_jsonl("p.jsonl") == [{"id": "1"}, {"id": "2"}]
    run.append_jsonl("p.jsonl", [{"id": "3"}])
    assert (run / "p.jsonl").read_text() == '{"id": "1"}\n{"id": "2"}\n{"id": "3"}\n'
    assert run.read_jsonl("missing.jsonl") == []


def test_fingerprint_changes_with_content_and_names(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 100)
    first = fingerprint_path(tmp_path / "m")
    assert first == fingerprint_path(tmp_path / "m") and first.startswith("sha256:")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 99 + b"\1")
    assert fingerprint_path(tmp_path / "m") != first
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 100)
    assert fingerprint_path(tmp_path / "m") == first
    (tmp_path / "m" / "w.bin").rename(tmp_path / "m" / "v.bin")
    assert fingerprint_path(tmp_path / "m") != first
