"""The dataset card (``README.md``) of published instruction data: Hub metadata with the ``configs`` that map the
Parquet files, and what a user must know: the task mix, the question wording per task, the MixUp/CutMix settings,
the source dataset's split protocol and citation, and the commands that rebuild it."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
COLUMNS = (
    ("id", "the source image's id (mixcut: image a's)"),
    ("image", "the image the question is about (mixcut: the mixed image), embedded"),
    ("task", "open-qa, closed-qa or closed-negative-qa, each also on MixUp/CutMix images as <task>-mixcut"),
    ("question", "the user turn, exactly as fgvlm evaluation asks it"),
    ("answer", "the assistant turn evaluation scores (closed-qa: the option key; closed-negative-qa: yes/no)"),
    ("label", "the class of the image (mixcut: of image a), a ClassLabel with the class names"),
    ("answer_b, label_b", "mixcut: the other image's class name and label"),
    ("lam", "mixcut: the share of image a in the mixed image (1.0 when left unmixed)"),
    ("mix_mode", "mixcut: mixup or cutmix"),
    ("meta", "every detail of the entry (closed-qa options and keys, the candidate, the CutMix box, the pair) as JSON"),
)


def size_category(rows: int) -> str:
    return next((name for bound, name in SIZES if rows < bound), "1M<n<10M")


def render_dataset_card(source: Any, layout: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The README of ``source`` (a ``fgvlm.publish.instructions.InstructionSet``): ``DatasetCardData`` (with
    ``configs``) and the sections of the module docstring."""
    from huggingface_hub import DatasetCardData

    records = [part["record"] for part in layout.values()]
    first = records[0]
    dataset = first["dataset"].get("dataset", "dataset")
    configs: dict[str, list[dict[str, str]]] = {}
    for config, split in layout:
        configs.setdefault(config, []).append({"split": split, "path": f"data/{config}/{split}-*.parquet"})
    data = DatasetCardData(
        license=source.cfg.license,
        task_categories=["image-text-to-text", "visual-question-answering"],
        tags=["fgvlm", "fine-grained-classification", "instruction-tuning", str(dataset)],
        size_categories=size_category(sum(part["rows"] for part in layout.values())),
        pretty_name=source.cfg.repo_id.split("/")[-1],
        configs=[{"config_name": name, "data_files": files} for name, files in configs.items()],
    )
    body = [f"# {source.cfg.repo_id.split('/')[-1]}", "", _summary(first), "", "## Configurations and splits", ""]
    body += _layout_table(layout) + ["", "## Task mix", "", *_task_mix(layout), "", "## Question wording", ""]
    body += _wording(layout) + ["", "## MixUp/CutMix", "", *_mixcut(layout), "", "## Columns", ""]
    body += [f"- `{name}`: {text}" for name, text in COLUMNS]
    body += ["", "## Load", "", *_load(source.cfg.repo_id, next(iter(layout))), "", "## Source dataset", ""]
    body += _source(first) + ["", "## Rebuild with fgvlm", "", "```bash"]
    body += [record["command"] for record in records] + ["```", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def _summary(record: dict[str, Any]) -> str:
    described = record["dataset"]
    return (
        f"Instruction data (one question/answer conversation per image) built by `fgvlm prompts build` from "
        f"{described.get('dataset')} ({described.get('protocol')} split protocol, {described.get('num_classes')} "
        "classes). Each question is the one fgvlm's evaluation asks, byte for byte, and each answer the one it scores, "
        "so a model fine-tuned on it is evaluated in the words it was trained with."
    )


def _layout_table(layout: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    rows = ["| configuration | split | rows | tasks | source split | seed |", "| --- | --- | ---: | --- | --- | ---: |"]
    for (config, split), part in layout.items():
        counts = Counter(entry["meta"].get("task") for entry in part["entries"])
        tasks = ", ".join(f"{task} {n}" for task, n in sorted(counts.items()))
        record = part["record"]
        rows.append(f"| {config} | {split} | {part['rows']:,} | {tasks} | {record['split']} | {record['seed']} |")
    return rows


def _task_mix(layout: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = []
    for (config, split), part in layout.items():
        weights = ", ".join(f"{task} {weight:.2f}" for task, weight in part["record"]["tasks"].items())
        lines.append(f"- `{config}` / {split}: weights {weights}")
    lines += [""]
    lines.append(
        "Each image gets one task; the counts are the weights' exact shares (largest remainder), and which image gets "
        "which task is fixed by the seed."
    )
    return lines


def _template(task: str, family: str | None) -> str:
    from fgvlm.registry import prompt_tasks

    spec = prompt_tasks()[task]
    return ((spec.get("families") or {}).get(family or "", {})).get("template") or spec["template"]


def _wording(layout: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Per task: the template (in the family's wording when the build used one) and one example from the data."""
    from fgvlm.prompts.instructions import split_task

    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for part in layout.values():
        for entry in part["entries"]:
            seen.setdefault(entry["meta"].get("task"), (entry, part["record"]))
    lines = []
    for task, (entry, record) in sorted(seen.items()):
        asked = split_task(task)[0]  # a -mixcut task asks its plain task's question
        options = (record.get("task_options") or {}).get(asked)
        lines += [f"### {task}", "", "Template" + (f" (options {json.dumps(options)})" if options else "") + ":", ""]
        lines += ["```text", _template(asked, record.get("family")), "```", "", "Example:", "", "```text"]
        lines += [f"Q: {entry['question']}", f"A: {entry['answer']}", "```", ""]
    return lines[:-1]


def _mixcut(layout: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    from fgvlm.prompts.instructions import split_task

    mixed = [(part, part["record"]) for part in layout.values() if part["record"].get("mixcut")]
    if not mixed:
        return ["No record of this data is mixed (no -mixcut task)."]
    lines = []
    for part, record in mixed:
        settings = ", ".join(f"{key} {value}" for key, value in record["mixcut"].items())
        metas = [e["meta"] for e in part["entries"] if split_task(e["meta"].get("task") or "")[1]]
        modes = Counter(m.get("mode", "unmixed") for m in metas)
        lams = [m["lam"] for m in metas if isinstance(m.get("lam"), (int, float)) and m.get("mode")]
        lam = f"; mean lambda {statistics.fmean(lams):.3f}" if lams else ""
        counts = ", ".join(f"{mode} {n}" for mode, n in sorted(modes.items()))
        lines.append(f"- `{record['file']}`: {settings} ({counts}{lam})")
    lines += [
        "",
        "Each mixcut image mixes its image (a) with one image of another class (b) drawn from the same split: MixUp "
        "blends the pixels, lambda * a + (1 - lambda) * b; CutMix pastes a box of b covering a share 1 - lambda. "
        "The answer names class a, the record's own class; `answer_b` and `lam` let a trainer apply "
        "lambda * NLL(a) + (1 - lambda) * NLL(b) instead.",
    ]
    return lines


def _load(repo_id: str, first: tuple[str, str]) -> list[str]:
    config, split = first
    return [
        "```python",
        "from datasets import load_dataset",
        "",
        f'data = load_dataset("{repo_id}", "{config}", split="{split}")',
        "row = data[0]  # row['image'] is a PIL image; row['question'] / row['answer'] the conversation",
        "messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': row['question']}]},",
        "            {'role': 'assistant', 'content': [{'type': 'text', 'text': row['answer']}]}]",
        "```",
    ]


def _source(record: dict[str, Any]) -> list[str]:
    described = record["dataset"]
    sizes = ", ".join(f"{name} {n:,}" for name, n in (described.get("splits") or {}).items())
    protocol = described.get("protocol_description") or "(not described)"
    lines = [
        f"- Dataset: `{described.get('dataset')}` ({described.get('num_classes')} classes)",
        f"- Split protocol: `{described.get('protocol')}`: {protocol}",
        f"- Split sizes: {sizes}",
    ]
    if record.get("citation"):
        return [*lines, "", "Cite the source dataset:", "", "```bibtex", record["citation"], "```"]
    return [*lines, "", "The source dataset names no citation."]
