"""The protocol in reports: each row's protocol phrase, rows grouped by protocol, and base-to-new harmonic means.

Accuracy moves more with the protocol (split, k-shot training set, class subset) than with the model, so a report
never lets two protocols blur: ``group_rows`` puts the rows of each (dataset, protocol phrase) under their own
heading, and ``harmonic_means`` pairs, for one model and setup, a run on the ``base`` classes with a run on the
``new`` classes of the same protocol (same dataset, split file, shots and seed, split) into CoOp's harmonic mean
HM = 2·B·N / (B + N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fgvlm.report.rundirs import RunInfo

ResultRow = Any
"""``fgvlm.report.tables.ResultRow`` (which imports this module, so it is not imported back)."""


def protocol_fields(run: RunInfo) -> dict[str, Any]:
    """A run's shots, shot seed and class subset: the metrics header's, else meta.json's dataset entry, else config."""
    described = run.meta.get("dataset") if isinstance(run.meta.get("dataset"), dict) else {}
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    out: dict[str, Any] = {}
    for key in ("shots", "shot_seed", "classes"):
        for source in (run.metrics or {}, described, data):
            if source.get(key) is not None:
                out[key] = source[key]
                break
        else:
            out[key] = None
    if out["shots"] is None:
        out["shot_seed"] = None  # a seed without a k-shot draw decides nothing
    return out


def protocol_label(row: ResultRow) -> str:
    """e.g. 'coop, 4-shot (seed 1), base classes' ('official' alone for the default protocol)."""
    parts = [row.protocol or "unknown protocol"]
    if row.shots is not None:
        parts.append(f"{row.shots}-shot (seed {row.shot_seed})")
    if row.classes not in (None, "all"):
        parts.append(f"{row.classes} classes")
    return ", ".join(parts)


def group_title(row: ResultRow) -> str:
    return f"{row.dataset or 'unknown dataset'} · {protocol_label(row)}"


def group_rows(rows: list[ResultRow]) -> list[tuple[str, list[ResultRow]]]:
    """Rows by (dataset, protocol phrase), groups in order of first appearance, rows in their order."""
    groups: dict[str, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(group_title(row), []).append(row)
    return list(groups.items())


@dataclass
class HarmonicMean:
    """One model's base and new accuracies on one protocol and their harmonic mean (fractions)."""

    setup: str
    dataset: str | None
    protocol: str
    base_run: str
    new_run: str
    base: float
    new: float
    harmonic_mean: float


def harmonic_mean(base: float, new: float) -> float:
    """2BN / (B + N); 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def _pair_key(row: ResultRow) -> tuple:
    return (row.kind, row.dataset, row.protocol, row.shots, row.shot_seed, row.split, row.setup)


def harmonic_means(rows: list[ResultRow]) -> list[HarmonicMean]:
    """Every (base, new) pair of complete rows with the same kind, dataset, protocol, shots, seed, split and setup
    (model, mode, task, ...). A setup with several base or several new runs pairs them in row order."""
    base: dict[tuple, list[ResultRow]] = {}
    new: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        if row.accuracy is None or row.state != "complete":
            continue
        if row.classes in ("base", "new"):
            (base if row.classes == "base" else new).setdefault(_pair_key(row), []).append(row)
    out = []
    for key, bases in base.items():
        for b, n in zip(bases, new.get(key, []), strict=False):
            label = protocol_label(b).replace(", base classes", "")
            out.append(
                HarmonicMean(
                    b.setup or b.configuration,
                    b.dataset,
                    label,
                    b.run_id,
                    n.run_id,
                    b.accuracy,
                    n.accuracy,
                    harmonic_mean(b.accuracy, n.accuracy),
                )  # fmt: skip
            )
    return out


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_groups(rows: list[ResultRow], table: Any) -> str:
    """``table(rows)`` once when every row shares one protocol; else one '### dataset · protocol' section each."""
    groups = group_rows(rows)
    if len(groups) <= 1:
        return table(rows)
    return "\n".join(f"### {title}\n\n{table(members)}" for title, members in groups)


def markdown_harmonic(means: list[HarmonicMean]) -> str:
    """The base-to-new table ('' when no model has both a base and a new run)."""
    if not means:
        return ""
    lines = [
        "### Base-to-new: harmonic mean HM = 2·B·N / (B + N)",
        "",
        "| setup | dataset | protocol | base % | new % | HM % | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in means:
        cells = [m.setup, m.dataset or "", m.protocol, _percent(m.base), _percent(m.new), _percent(m.harmonic_mean)]
        cells.append(f"{m.base_run} / {m.new_run}")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
