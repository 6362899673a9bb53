"""The study file: a list of runs with their kinds, configs, dependencies, launchers and published numbers.

A study YAML looks like::

    name: flowers102-demo
    reference: zs-generate            # the row every other row is compared with
    defaults:                         # merged under every run's config
      data: {dataset: synthflowers}   #   a config key: applied to every run whose config has it
      eval: {batch_size: 8}           #   a kind name: applied to runs of that kind only
    runs:
      - id: zs-generate
        kind: eval
        label: Qwen3-VL-4B zero-shot  # the row's name in results.md (default: the id)
        config: ../eval/synthflowers-tiny-rank.yaml   # relative to this file
        set: {mode: generate}         # dotted keys (or a list of "KEY=VALUE")
        published: 20.78              # the reference study's number for this row (percent)
      - id: head-on-sft
        kind: head-train
        needs: [sft]
        set: {model.name: "${runs.sft.out}/model"}
        launch: {launcher: torchrun, nproc: 4}
        slurm: {gpus: 4, time: "02:00:00", cpus: 32}

This module checks the file's shape and the graph (unique ids, known kinds, known ``needs``, no cycle) before any
config is resolved; ``fgvlm.study.resolve`` resolves each run's config through its kind's config class.
"""

from __future__ import annotations

import dataclasses
import graphlib
import re
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError, from_dict, load_yaml
from fgvlm.kinds import KINDS

LAUNCHERS = ("python", "torchrun", "accelerate")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_IDS = ("report", "slurm", "results.csv", "results.md")
"""Names the runner itself writes in the study's output folder: a run directory of that name would collide."""


@dataclasses.dataclass
class LaunchSpec:
    """How the run's process starts: plain ``python -m fgvlm``, ``torchrun`` or ``accelerate launch``."""

    launcher: str = "python"
    """python (one process), torchrun (``--standalone --nproc_per_node nproc``) or accelerate (``launch``)."""
    nproc: int = 1
    """Processes (GPUs) on this machine; more than 1 with launcher python means torchrun."""
    args: list[str] = dataclasses.field(default_factory=list)
    """Extra launcher arguments, e.g. ["--config_file", "configs/accelerate/fsdp.yaml"] for accelerate."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launch.launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.nproc < 1:
            raise ConfigError(f"launch.nproc must be at least 1, got {self.nproc}")


@dataclasses.dataclass
class SlurmSpec:
    """Resources of the run's job under ``fgvlm study submit``."""

    gpus: int = 0
    cpus: int = 4
    """CPUs per task (data loading, the image cache)."""
    time: str = "04:00:00"
    mem: str | None = None
    """e.g. "64G"; None leaves the cluster's default."""
    extra: list[str] = dataclasses.field(default_factory=list)
    """More ``#SBATCH`` options, e.g. ["--constraint=a100"]."""


@dataclasses.dataclass
class RunSpec:
    """One row of the study: a run of one kind, written to ``OUT/<id>``."""

    id: str
    kind: str
    label: str | None = None
    """The row's name in the results table (default: the id)."""
    config: str | None = None
    """A config file of the kind's config class, relative to the study file."""
    set: dict[str, Any] | list[str] = dataclasses.field(default_factory=dict)
    """Overrides on top of defaults and the config file: {dotted.key: value} or ["dotted.key=value", ...]."""
    needs: list[str] = dataclasses.field(default_factory=list)
    """Runs that must be complete first; only these may be referred to as ``${runs.<id>.out}``."""
    requires: list[str] = dataclasses.field(default_factory=list)
    """Paths (placeholders allowed) that must exist; without them the run and its dependants are left out."""
    published: float | None = None
    """The reference study's accuracy for this row, in percent."""
    launch: LaunchSpec = dataclasses.field(default_factory=LaunchSpec)
    slurm: SlurmSpec = dataclasses.field(default_factory=SlurmSpec)

    @property
    def name(self) -> str:
        return self.label or self.id


@dataclasses.dataclass
class StudySpec:
    """A whole study file."""

    name: str
    runs: list[RunSpec]
    description: str = ""
    reference: str | None = None
    """Id of the row the "vs reference" column subtracts."""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Merged under every run's config: a kind name maps to defaults for that kind, any other key applies to every
    run whose config class has that top-level key (and must exist in at least one)."""


def parse_study(path: str | Path) -> StudySpec:
    """Read and check a study file: its shape, unique ids, known kinds and needs, no cycle (all before any run)."""
    path = Path(path)
    data = load_yaml(path)
    spec = from_dict(StudySpec, data, where=str(path))
    if not spec.runs:
        raise ConfigError(f"{path}: 'runs' is empty")
    check_graph(spec, path)
    return spec


def check_graph(spec: StudySpec, path: Path) -> None:
    """Unique well-formed ids, known kinds, known needs, a known reference row and an acyclic graph."""
    seen: set[str] = set()
    for run in spec.runs:
        if not RUN_ID.match(run.id):
            raise ConfigError(f"{path}: run id {run.id!r} must be letters, digits, '-', '_' or '.'")
        if run.id in RESERVED_IDS:
            raise ConfigError(
                f"{path}: run id {run.id!r} is taken by the study's own outputs ({', '.join(RESERVED_IDS)})"
            )
        if run.id in seen:
            raise ConfigError(f"{path}: run id {run.id!r} is listed twice")
        seen.add(run.id)
        if run.kind not in KINDS:
            raise ConfigError(f"{path}: run {run.id!r}: unknown kind {run.kind!r}; known kinds: {', '.join(KINDS)}")
    for run in spec.runs:
        unknown = [need for need in run.needs if need not in seen]
        if unknown:
            raise ConfigError(f"{path}: run {run.id!r} needs unknown run(s) {', '.join(map(repr, unknown))}")
    if spec.reference is not None and spec.reference not in seen:
        raise ConfigError(f"{path}: reference {spec.reference!r} is not a run id")
    topological_order(spec, path)


def topological_order(spec: StudySpec, path: Path) -> list[str]:
    """Run ids so that every run comes after the runs it needs (ties keep the file's order)."""
    sorter = graphlib.TopologicalSorter({run.id: run.needs for run in spec.runs})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = " needs ".join(repr(node) for node in reversed(err.args[1]))
        raise ConfigError(f"{path}: the runs' needs form a cycle: {cycle}") from None
    position = {run.id: i for i, run in enumerate(spec.runs)}
    order: list[str] = []
    ready: set[str] = set()
    while sorter.is_active():
        ready.update(sorter.get_ready())
        first = min(ready, key=position.__getitem__)
        ready.remove(first)
        order.append(first)
        sorter.done(first)
    return order
