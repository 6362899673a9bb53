"""Experiment trackers for training runs: ``report_to`` = ``tensorboard`` (default), ``wandb``, ``mlflow``, or ``none``.

One comma-separated setting (``--set report_to=tensorboard,wandb``) names the trackers. TensorBoard writes
``RUN/tb/``; Weights & Biases and MLflow are imported only when named (``pip install 'fgvlm[wandb]'`` /
``'fgvlm[mlflow]'``) and work offline: ``WANDB_MODE=offline`` keeps wandb's files in ``RUN/wandb/`` to sync later, and
MLflow writes to ``RUN/mlruns/`` unless ``MLFLOW_TRACKING_URI`` points elsewhere. ``WANDB_PROJECT`` /
``MLFLOW_EXPERIMENT_NAME`` name the project (default ``fgvlm``).

The CNN loop calls ``Trackers.log(record, step)`` once per epoch; the transformers Trainer (SFT) takes
``transformers_report_to(report_to)``: always an explicit list, never "all" (which would log to every integration
that happens to be installed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from fgvlm.config import ConfigError

TRACKERS = ("tensorboard", "wandb", "mlflow")
DEFAULT = "tensorboard"


def parse_report_to(value: str | Sequence[str] | None) -> list[str]:
    """``"tensorboard,wandb"`` or a list -> checked names in order; ``None`` -> the default; ``"none"`` -> []."""
    if value is None:
        value = DEFAULT
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [str(p).strip().lower() for p in parts if str(p).strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or "none" in names:
        raise ConfigError(
            f"report_to: unknown tracker(s) {', '.join(map(repr, unknown or ['none']))}; "
            f"use a comma-separated subset of {', '.join(TRACKERS)}, or 'none'"
        )
    return list(dict.fromkeys(names))


def transformers_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """``TrainingArguments.report_to`` for our setting: an explicit list of integration names ([] = none)."""
    return parse_report_to(report_to)


class Tracker(Protocol):
    """What a training loop needs from a tracker."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"report_to {extra}: the {module} package is not installed; pip install 'fgvlm[{extra}]'"
        ) from None


class TensorBoardTracker:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        wandb = _require("wandb", "wandb")
        project = os.environ.get("WANDB_PROJECT", "fgvlm")
        self.run = wandb.init(project=project, name=run_name, dir=str(run_dir), config=config)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowTracker:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        self.mlflow = _require("mlflow", "mlflow")
        self.mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri())
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "fgvlm"))
        self.mlflow.start_run(run_name=run_name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in flatten(config).items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MLflowTracker}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (tracker parameter tables are flat)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Trackers:
    """The trackers of one run; ``log`` passes on a record's numeric values (strings, lists, None are left out)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, record: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            for tracker in self.trackers:
                tracker.log(numbers, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trackers(
    report_to: str | Sequence[str] | None,
    run_dir: str | Path,
    config: dict[str, Any] | None = None,
    *,
    run_name: str | None = None,
    exclude: Sequence[str] = (),
    enabled: bool = True,
) -> Trackers:
    """Start the named trackers for ``run_dir`` (none when ``enabled`` is false, e.g. on non-main ranks).

    ``exclude`` leaves out trackers the caller already feeds itself (the CNN loop writes ``tb/`` on its own).
    """
    names = [n for n in parse_report_to(report_to) if n not in exclude] if enabled else []
    run_dir = Path(run_dir)
    name = run_name or run_dir.name
    return Trackers([TRACKER_CLASSES[n](run_dir, name, config or {}) for n in names])
