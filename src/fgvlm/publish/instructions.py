"""Instruction data (``fgvlm prompts build`` output) as a dataset repository the ``datasets`` library loads.

A source is one instruction file (messages JSONL or llava JSON, with its ``.build.json`` record) or a folder of
them. Each file becomes one split (its build's split) of one configuration (its task, or ``mix``), written as
Parquet with the images embedded: ``data/<config>/<split>-00000-of-0000N.parquet``, shards of at most
``SHARD_BYTES`` of images. The README's ``configs`` list maps them, so ``datasets.load_dataset(ORG/NAME, CONFIG)``
returns the records with decoded images. Rows: ``id``, ``image``, ``task``, ``question``, ``answer``, ``label`` (a
``ClassLabel`` with the class names), the mixcut fields ``answer_b`` / ``label_b`` / ``lam`` / ``mix_mode`` (null
elsewhere) and ``meta`` (every detail of the entry's ``meta`` as JSON).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fgvlm.prompts.build_record import SUFFIX, build_record_path, read_build_record
from fgvlm.publish.sources import PublishError, Source

SHARD_BYTES = 500 * 2**20
"""Image bytes per Parquet shard (the Hub's viewer and ``datasets`` handle shards of a few hundred MB best)."""
SUFFIXES = (".jsonl", ".json")


def is_instruction_file(path: Path) -> bool:
    return path.is_file() and path.suffix in SUFFIXES and not path.name.endswith(SUFFIX)


class InstructionSet(Source):
    """One or more instruction files with their build records."""

    repo_type = "dataset"
    label = "instruction set"

    @classmethod
    def matches(cls, path: Path) -> bool:
        if path.is_dir():
            return any(build_record_path(p).is_file() for p in path.iterdir() if is_instruction_file(p))
        return is_instruction_file(path) and build_record_path(path).is_file()

    def __init__(self, path: Path, cfg: Any):
        super().__init__(path, cfg)
        files = sorted(p for p in path.iterdir() if is_instruction_file(p)) if path.is_dir() else [path]
        missing = [p.name for p in files if not build_record_path(p).is_file()]
        if missing:
            raise PublishError(
                f"{path}: {', '.join(missing)} without a build record ({SUFFIX}); rebuild with `fgvlm prompts build`"
            )
        self.parts: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
        """(configuration, split) -> (instruction file, build record)."""
        for file in files:
            record = read_build_record(file)
            key = (config_name(record), record["split"])
            if key in self.parts:
                raise PublishError(
                    f"{file.name} and {self.parts[key][0].name} are both configuration {key[0]!r}, split {key[1]!r}; "
                    "publish them separately"
                )
            self.parts[key] = (file, record)
        sources = {(r["dataset"].get("dataset"), r["dataset"].get("protocol")) for _, r in self.parts.values()}
        if len(sources) > 1:
            listed = ", ".join(f"{name} ({protocol})" for name, protocol in sorted(sources, key=str))
            raise PublishError(f"{path}: files built from different datasets or protocols ({listed}); publish apart")

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for file, _ in self.parts.values():
            digest.update(file.name.encode() + b"\0" + file.read_bytes() + build_record_path(file).read_bytes())
        digest.update(f"limit={self.cfg.limit}".encode())
        return "sha256:" + digest.hexdigest()[:16]

    def stage(self, folder: Path) -> None:
        from fgvlm.publish.dataset_card import render_dataset_card

        layout = {}
        for (config, split), (file, record) in sorted(self.parts.items()):
            entries = read_entries(file, record["format"])[: self.cfg.limit]
            layout[config, split] = write_parquet(entries, record, folder / "data" / config, split)
        (folder / "README.md").write_text(render_dataset_card(self, layout))


def config_name(record: dict[str, Any]) -> str:
    """A build's configuration: its one task's name, or ``mix`` for a mixture of tasks."""
    tasks = list(record.get("tasks") or {})
    return tasks[0] if len(tasks) == 1 else "mix"


def read_entries(file: Path, fmt: str) -> list[dict[str, Any]]:
    """``{"id", "image", "question", "answer", "meta"}`` per entry of a messages (JSONL) or llava (JSON) file."""
    text = file.read_text(encoding="utf-8")
    try:
        lines = [line for line in text.splitlines() if line.strip()]
        raw = [json.loads(line) for line in lines] if fmt == "messages" else json.loads(text)
    except json.JSONDecodeError as err:
        raise PublishError(f"{file}: not valid {'JSONL' if fmt == 'messages' else 'JSON'} ({err})") from None
    return [_entry(item, fmt, file) for item in raw]


def _entry(item: dict[str, Any], fmt: str, file: Path) -> dict[str, Any]:
    try:
        if fmt == "messages":
            user, assistant = item["messages"][0]["content"], item["messages"][1]["content"]
            image = next(part["image_url"]["url"] for part in user if part["type"] == "image_url")
            question = next(part["text"] for part in user if part["type"] == "text")
            answer = assistant[0]["text"]
        else:
            image = item["image"]
            question = item["conversations"][0]["value"].removeprefix("<image>\n")
            answer = item["conversations"][1]["value"]
        return {"id": item["id"], "image": image, "question": question, "answer": answer, "meta": item["meta"]}
    except (KeyError, IndexError, StopIteration, TypeError) as err:
        raise PublishError(f"{file}: entry {item.get('id', '?')!r} is not a {fmt} conversation ({err!r})") from None


def features(class_names: list[str]) -> Any:
    from datasets import ClassLabel, Features, Image, Value

    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "task": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "label": ClassLabel(names=class_names),
            "answer_b": Value("string"),
            "label_b": Value("int64"),
            "lam": Value("float64"),
            "mix_mode": Value("string"),
            "meta": Value("string"),
        }
    )


def _row(entry: dict[str, Any], image_root: Path | None) -> dict[str, Any]:
    meta = entry["meta"]
    path = Path(entry["image"])
    if not path.is_file():
        raise PublishError(f"record {entry['id']!r}: image file not found: {path}")
    name = path.relative_to(image_root).as_posix() if image_root and path.is_relative_to(image_root) else path.name
    return {
        "id": entry["id"],
        "image": {"bytes": path.read_bytes(), "path": name},
        "task": meta.get("task"),
        "question": entry["question"],
        "answer": entry["answer"],
        "label": meta.get("label"),
        "answer_b": meta.get("answer_b"),
        "label_b": meta.get("label_b"),
        "lam": meta.get("lam"),
        "mix_mode": meta.get("mode"),
        "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
    }


def write_parquet(entries: list[dict[str, Any]], record: dict[str, Any], folder: Path, split: str) -> dict[str, Any]:
    """Shards ``<split>-0000i-of-0000N.parquet`` under ``folder`` (each written as soon as it is full, so only one
    shard's images are in memory); returns the split's rows, shard names, entries and build record."""
    schema = features(record["class_names"])
    folder.mkdir(parents=True, exist_ok=True)
    image_root = _image_root(entries)
    written: list[Path] = []
    rows: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        row = _row(entry, image_root)
        if rows and size + len(row["image"]["bytes"]) > SHARD_BYTES:
            written.append(_write_shard(rows, schema, folder / f".{split}-{len(written):05d}.tmp"))
            rows, size = [], 0
        rows.append(row)
        size += len(row["image"]["bytes"])
    written.append(_write_shard(rows, schema, folder / f".{split}-{len(written):05d}.tmp"))
    names = [f"{split}-{index:05d}-of-{len(written):05d}.parquet" for index in range(len(written))]
    for path, name in zip(written, names, strict=True):
        path.rename(folder / name)
    return {"rows": len(entries), "shards": names, "entries": entries, "record": record}


def _write_shard(rows: list[dict[str, Any]], schema: Any, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = schema.encode_batch({key: [row[key] for row in rows] for key in schema})
    pq.write_table(pa.Table.from_pydict(encoded, schema=schema.arrow_schema), path)
    return path


def _image_root(entries: list[dict[str, Any]]) -> Path | None:
    """The deepest folder holding every image (their names in the data are relative to it), if any."""
    import os

    paths = [str(Path(e["image"]).parent) for e in entries]
    return Path(os.path.commonpath(paths)) if paths else None
