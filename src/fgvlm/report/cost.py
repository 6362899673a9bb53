"""What each run cost, as reports show it: images/s and GPU- or CPU-hours per row, and a table's total.

The numbers come from the ``cost`` block every run kind writes into ``metrics.json`` (``fgvlm.runs``): wall
seconds, images and images/s, tokens, peak memory, ``device_type`` (``cuda`` or ``cpu``), devices and their count,
``device_hours`` (wall seconds x devices / 3600) and counted FLOPs. Runs written before the block existed, or with
keys missing, show blanks and are counted as such in the total; nothing here fails on them.
"""

from __future__ import annotations

from typing import Any

DEVICE_LABELS = {"cuda": "GPU", "cpu": "CPU"}
"""How a ``device_type`` is named in hours: GPU-hours, CPU-hours (another type shows in capitals)."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cost_block(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """``metrics.json``'s cost block, or {} for a run without one."""
    cost = (metrics or {}).get("cost")
    return cost if isinstance(cost, dict) else {}


def row_cost(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The result row's cost fields: ``images_per_second``, ``device_hours``, ``device_type`` (each None if absent)."""
    cost = cost_block(metrics)
    hours = _number(cost.get("device_hours"))
    if hours is None and _number(cost.get("wall_seconds")) is not None:  # the block's own definition
        count = _number(cost.get("device_count")) or 1.0
        hours = float(cost["wall_seconds"]) * count / 3600
    device_type = cost.get("device_type") if isinstance(cost.get("device_type"), str) else None
    return {
        "images_per_second": _number(cost.get("images_per_second")),
        "device_hours": hours,
        "device_type": device_type,
    }


def device_label(device_type: str | None) -> str:
    """'GPU' for cuda, 'CPU' for cpu, the type in capitals otherwise ('device' when unknown)."""
    if device_type is None:
        return "device"
    return DEVICE_LABELS.get(device_type, device_type.upper())


def hours_text(hours: float | None, device_type: str | None) -> str:
    """'0.0343 GPU-h', '1.25 CPU-h'; '–' when unknown."""
    if hours is None:
        return "–"
    return f"{hours:.3g} {device_label(device_type)}-h"


def rate_text(images_per_second: float | None) -> str:
    """'49.8', '0.312'; '–' when unknown."""
    if images_per_second is None:
        return "–"
    return f"{images_per_second:.3f}" if images_per_second < 1 else f"{images_per_second:,.1f}"


def total_hours(rows: list[Any]) -> dict[str, float]:
    """Device-hours summed per kind of device over rows that record them: {'GPU': 1.5, 'CPU': 0.2}."""
    totals: dict[str, float] = {}
    for row in rows:
        if row.device_hours is not None:
            label = device_label(row.device_type)
            totals[label] = totals.get(label, 0.0) + row.device_hours
    return totals


def cost_summary(rows: list[Any]) -> str:
    """One line for below a results table: 'Cost of this table: 0.25 GPU-h + 1.1 CPU-h over 9 runs (2 without a
    cost record).'; '' when no row records a cost."""
    totals = total_hours(rows)
    if not totals:
        return ""
    counted = sum(row.device_hours is not None for row in rows)
    text = " + ".join(f"{hours:.3g} {label}-h" for label, hours in sorted(totals.items()))
    text = f"Cost of this table: {text} over {counted} run{'s' if counted != 1 else ''}"
    missing = len(rows) - counted
    return text + (f" ({missing} without a cost record)." if missing else ".")


def export_fields(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """lm-eval-style ``"metric,filter"`` entries for a task's results: images/s and device-hours (none if absent)."""
    cost = row_cost(metrics)
    fields: dict[str, Any] = {}
    for name in ("images_per_second", "device_hours"):
        if cost[name] is not None:
            fields[f"{name},none"] = cost[name]
            fields[f"{name}_stderr,none"] = "N/A"
    return fields
