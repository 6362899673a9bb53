"""Run directories: the contract every result-producing command shares.

A run directory holds ``config.yaml`` (the resolved config), ``meta.json`` (what produced the results: versions,
seed, git revision, dataset protocol and split sizes, model id or local-path fingerprint, command line), the
command's outputs and, written last, ``done.json`` (the completion marker: finish time, wall time, config hash).
Files are written atomically (temp file + rename) so an interrupted run never leaves a half-written JSON file
behind; JSONL files are appended line by line and flushed (``fgvlm.runfiles``: also the one way to rewrite or
truncate them).

One lifecycle for every command that writes a run (``start_run`` ... ``finish_run``): for a resolved config a run
directory is *absent*, *partial* (started, no ``done.json``), *complete* (``done.json`` of the same config) or
*conflicting* (another config). With ``resume`` (the default) a complete run is skipped and its stored results
returned, a partial one is continued, a conflicting one is refused naming the differing keys. ``resume=False``
starts over: the old directory is moved aside to ``<out>.replaced-<time>`` (never deleted), and a fresh one made.
Under several processes ``ordered_start_run`` lets rank 0 decide and tells the others; ``run_done`` is the one
"finished" rule (``done.json`` exists).

``write_results`` writes ``metrics.json``: the fixed header (``results_header``), the metrics, and the ``cost``
block of the run's ``CostMeter`` (``fgvlm.cost``); ``TrainLogger`` writes ``train_log.jsonl`` in the one schema
every trainer shares (``TRAIN_LOG_KEYS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError, config_differences, from_dict, load_yaml, save_yaml, to_dict
from fgvlm.cost import COST_KEY, CostMeter
from fgvlm.provenance import fingerprint_path as fingerprint_path  # re-exported: run and model provenance
from fgvlm.provenance import git_revision, package_versions
from fgvlm.runfiles import append_jsonl, read_json, read_jsonl, write_json

DONE_FILE = "done.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"
STATES = ("absent", "partial", "complete", "conflicting")
HEADER_KEYS = (
    *("kind", "dataset", "protocol", "shots", "shot_seed", "classes"),
    *("split", "model", "num_classes", "seconds"),
)
"""The fixed first keys of every ``metrics.json``, in this order (see ``write_results``): the protocol travels with
every number (``Dataset.protocol_header()`` gives its four keys)."""
TRAIN_LOG_KEYS = ("step", "epoch", "train_loss", "lr", "val_accuracy", "val_top5", "val_loss")
"""The keys of every ``train_log.jsonl`` line, in this order (null where not measured); extra keys follow."""


class RunDir:
    """A folder of results for one command invocation."""

    def __init__(self, path: str | Path, status: RunStatus | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.status = status
        """How ``start_run`` found the directory (None for a RunDir opened directly)."""
        self.started = time.time()
        """When this invocation began (``finish_run`` reports the wall time from here)."""
        self.cost = CostMeter()
        """What this invocation's work cost; ``write_results`` writes it as metrics.json's ``cost`` block."""

    @property
    def complete(self) -> bool:
        """True when ``start_run`` found a finished run of the same config (the caller returns its results)."""
        return self.status is not None and self.status.state == "complete"

    def read_results(self, name: str = METRICS_FILE) -> Any:
        """A finished run's stored results (``metrics.json`` unless the command writes another file)."""
        return read_json(self.path / name)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, cfg: Any) -> None:
        save_yaml(to_dict(cfg) if not isinstance(cfg, dict) else cfg, self.path / "config.yaml")

    def write_meta(
        self, *, command: str, seed: int | None, dataset: dict | None = None, model: dict | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Write ``meta.json``; refuses (``RunConflictError``) when the run recorded another data selection."""
        check_same_data(self, dataset)
        meta = {
            "command": command,
            "argv": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seed": seed,
            "git_revision": git_revision(),
            "versions": package_versions(),
            "platform": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()},
            "dataset": dataset,
            "model": model,
            **extra,
        }
        write_json(self.path / "meta.json", meta)
        return meta

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Complete lines only: a trailing partial line (from a killed writer) is dropped and truncated away."""
        return read_jsonl(self.path / name)

    def append_jsonl(self, name: str, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.path / name, records)


# -- the run lifecycle ------------------------------------------------------------------------------------------------
class RunConflictError(ConfigError):
    """A run directory that holds a run of another config: resuming it would mix two experiments."""


@dataclasses.dataclass
class RunStatus:
    """What a run directory holds for a given resolved config."""

    state: str
    """absent (nothing there), partial (started, not finished), complete (finished, same config) or conflicting."""
    differences: list[str] = dataclasses.field(default_factory=list)
    """For a conflicting run: 'key: saved -> now' per differing config key."""
    progress: str | None = None
    """For a partial run: how far it got, e.g. '412 of 6149 predictions' or 'epoch 3 of 30 checkpointed'."""


SELECTION_KEYS = ("selected_ids", "class_labels", "split_file_sha256")
"""``Dataset.describe()`` entries that say which images and classes a run used beyond its config: the k-shot ids,
the class subset's labels and the split file's content hash."""


def check_same_data(run: RunDir, dataset: dict[str, Any] | None) -> None:
    """Refuse to continue a run whose ``meta.json`` records another data selection than ``dataset`` (a
    ``Dataset.describe()``): other k-shot ids, classes or split-file content, as a changed config is refused."""
    path = run.path / "meta.json"
    if not dataset or not path.is_file():
        return
    try:
        saved = read_json(path).get("dataset") or {}
    except (OSError, ValueError):
        return
    differing = [key for key in SELECTION_KEYS if saved.get(key) != dataset.get(key)]
    if differing:
        raise RunConflictError(
            f"{run.path} was run on other data than this invocation selects ({', '.join(differing)} differ in "
            "meta.json: a changed split file or dataset); cannot resume. Use another --out, or --no-resume to start "
            "over (the old run is moved aside)."
        )


def _with_defaults(saved: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """A saved config.yaml read through ``cfg``'s config class: a key added to the class after the run was written
    takes its default (the behaviour the run had), so adding an option never orphans finished runs. A saved config
    the class cannot read (a key since removed) is compared as it is."""
    if isinstance(cfg, dict) or not dataclasses.is_dataclass(cfg):
        return saved
    try:
        return _plain_config(from_dict(type(cfg), saved))
    except (ConfigError, TypeError, ValueError):
        return saved


def _plain_config(cfg: Any) -> dict[str, Any]:
    """The config as config.yaml stores it (YAML round trip: tuples become lists), ``resume`` aside."""
    import yaml

    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    data = yaml.safe_load(yaml.safe_dump(data, sort_keys=False))
    return {k: v for k, v in data.items() if k != "resume"}


def config_hash(cfg: Any) -> str:
    """A short content hash of a resolved config (dataclass or dict): equal configs, equal hashes."""
    text = json.dumps(_plain_config(cfg), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def run_progress(path: Path) -> str | None:
    """How far a partial run got, read from its files (checkpoint, predictions, training log)."""
    last = path / "checkpoints" / "last.json"
    saved = load_yaml(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    if last.is_file():
        epochs = saved.get("epochs")
        return f"epoch {read_json(last).get('epoch')}" + (f" of {epochs}" if epochs else "") + " checkpointed"
    if (path / "predictions.jsonl").is_file():
        meta = read_json(path / "meta.json") if (path / "meta.json").is_file() else {}
        total = meta.get("images")
        done = _count_lines(path / "predictions.jsonl")
        return f"{done}" + (f" of {total}" if total else "") + " predictions"
    if (path / TRAIN_LOG).is_file():
        return f"{_count_lines(path / TRAIN_LOG)} training-log lines"
    return None


def run_status(out: str | Path, cfg: Any) -> RunStatus:
    """Whether ``out`` is absent, partial, complete or conflicting for the resolved config ``cfg``.

    A folder with files but no ``config.yaml`` is conflicting too: it is not a run directory, and writing a run
    into it would mix unrelated files.
    """
    path = Path(out)
    if not path.is_dir() or not any(path.iterdir()):
        return RunStatus("absent")
    if not (path / CONFIG_FILE).is_file():
        return RunStatus("conflicting", [f"{CONFIG_FILE}: missing (the folder holds other files)"])
    saved = load_yaml(path / CONFIG_FILE)
    differences = config_differences(_with_defaults(saved, cfg), _plain_config(cfg))
    if differences:
        return RunStatus("conflicting", differences)
    done = path / DONE_FILE
    if done.is_file():
        saved_hash, now = read_json(done).get("config_hash"), config_hash(cfg)
        if saved_hash not in (now, config_hash(saved)):  # done.json was written for this very config.yaml
            return RunStatus("conflicting", [f"config_hash: {saved_hash} -> {now}"])
        return RunStatus("complete")
    return RunStatus("partial", progress=run_progress(path))


def _move_aside(path: Path) -> Path:
    """Rename an old run directory to ``<name>.replaced-<time>`` beside it (numbered if that exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{number}")
    os.replace(path, target)
    return target


def say(message: str) -> None:
    """A one-line notice on stderr (results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def start_run(out: str | Path, cfg: Any, *, resume: bool = True) -> RunDir:
    """Open ``out`` for a run of ``cfg``: the one place that decides skip, resume, refuse or start over.

    resume=True: absent -> start; partial -> continue (the caller resumes from its files); complete -> the returned
    RunDir has ``complete`` set and the caller returns ``read_results()``; conflicting -> ``RunConflictError``
    naming the keys. resume=False: any existing directory is moved aside (``<out>.replaced-<time>``) and a fresh
    one started. ``config.yaml`` is (re)written at the start, so a killed run is recognised as partial.
    """
    path = Path(out)
    status = run_status(path, cfg)
    if not resume and status.state != "absent":
        moved = _move_aside(path)
        say(f"{path}: --no-resume, the previous run ({status.state}) was moved to {moved}")
        status = RunStatus("absent")
    elif status.state == "conflicting":
        raise RunConflictError(
            f"{path} holds a run with a different config; cannot resume. Differing keys: "
            f"{'; '.join(status.differences)}. Use another --out, or --no-resume to start over "
            "(the old run is moved aside)."
        )
    run = RunDir(path, status)
    if status.state == "complete":
        done = read_json(path / DONE_FILE)
        say(f"{path}: already complete (finished {done.get('finished')}); skipped. --no-resume runs it again.")
        return run
    if status.state == "partial" and status.progress:  # a config.yaml alone (written by a study runner) is no progress
        say(f"{path}: resuming a partial run ({status.progress})")
    run.write_config(cfg)
    return run


@dataclasses.dataclass
class OpenedRun:
    """What ``ordered_start_run`` tells every process about the run it opened."""

    run: RunDir
    """The run directory (every rank; rank 0's has the ``status`` it was found in, the others a copy of it)."""
    stored: Any = None
    """A complete run's stored results (every rank); None when there is work to do."""
    prepared: Any = None
    """What ``prepare(run)`` returned on rank 0 (e.g. how far a partial run got), on every rank."""


def ordered_start_run(
    out: str | Path,
    cfg: Any,
    *,
    resume: bool = True,
    group: Any = None,
    prepare: Callable[[RunDir], Any] | None = None,
    results: str = METRICS_FILE,
) -> OpenedRun:
    """``start_run`` on rank 0 alone, first; then every rank learns the outcome: one way to open a run for any kind.

    Rank 0 decides skip, resume, refuse or start over (it may move an old run aside), reads a complete run's
    ``results`` file, or else calls ``prepare(run)`` (e.g. drop an unfinished batch, report the resume point).
    ``group`` (a ``fgvlm.distributed.ProcessGroup``; None: a single process) broadcasts that to the other ranks, so
    they start only once rank 0 is done, and a refusal (``ConfigError``) is raised on every rank instead of leaving
    the others waiting. Every rank gets a ``RunDir`` (only rank 0 writes files).
    """
    if group is None or group.world_size <= 1:
        run = start_run(out, cfg, resume=resume)
        if run.complete:
            return OpenedRun(run, stored=run.read_results(results))
        return OpenedRun(run, prepared=prepare(run) if prepare else None)
    shared: Any = None
    if group.is_main:
        try:
            opened = ordered_start_run(out, cfg, resume=resume, prepare=prepare, results=results)
            shared = (opened.run.status, opened.stored, opened.prepared)
        except ConfigError as err:
            shared = err
    shared = group.broadcast(shared)
    if isinstance(shared, Exception):
        raise shared
    status, stored, prepared = shared
    return OpenedRun(opened.run if group.is_main else RunDir(out, status), stored, prepared)


def run_done(out: str | Path) -> bool:
    """Whether a run directory finished: its ``done.json`` (written last, after every result file) exists.

    The one "is this run done" rule; ``run_status`` adds whether it is done *for a given config*.
    """
    return (Path(out) / DONE_FILE).is_file()


def finish_run(run: RunDir, started: float | None = None) -> dict[str, Any]:
    """Write ``done.json`` -- last, after every other file -- with the wall time since ``started``.

    ``started`` is a ``time.time()`` value; default: when this invocation opened the run (``run.started``).
    """
    saved = load_yaml(run / CONFIG_FILE)
    done = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(time.time() - (run.started if started is None else started), 3),
        "config_hash": config_hash(saved),
    }
    write_json(run / DONE_FILE, done)
    return done


# -- results and training logs ----------------------------------------------------------------------------------------
def results_header(
    kind: str, dataset: Any, split: str, model: str, seconds: float, *, num_classes: int | None = None
) -> dict[str, Any]:
    """The fixed ``metrics.json`` header (``HEADER_KEYS``) of a run of ``kind`` on ``dataset``'s ``split``.

    ``dataset`` is a ``fgvlm.data.Dataset``: its name, class count and protocol fields (``protocol_header()``:
    protocol, k-shot draw, class subset); ``num_classes`` overrides the count where the scored classes differ (a
    yes/no task, a head trained on another class list). ``seconds``: this invocation's wall time
    (``time.time() - run.started``).
    """
    return {
        "kind": kind,
        "dataset": dataset.name,
        **dataset.protocol_header(),
        "split": split,
        "model": model,
        "num_classes": dataset.num_classes if num_classes is None else num_classes,
        "seconds": round(seconds, 3),
    }


def write_results(
    run: RunDir | str | Path, header: dict[str, Any], metrics: dict[str, Any], *, cost: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``metrics.json``: the fixed header (``HEADER_KEYS``, in order) first, then the metrics, then ``cost``.

    The header says what was measured: ``kind`` (eval, head-train, cnn-train, ...), ``dataset``, ``protocol``,
    ``shots`` and ``shot_seed`` (k-shot training sets; null for all images), ``classes`` (all, base or new),
    ``split``, ``model``, ``num_classes`` and ``seconds`` (this invocation's wall time); ``results_header`` builds
    it. ``cost`` (``fgvlm.cost``) defaults to the block of ``run.cost`` when ``run`` is a ``RunDir`` (a path alone
    gets none). Returns the written dict.
    """
    missing = [key for key in HEADER_KEYS if key not in header]
    unknown = [key for key in header if key not in HEADER_KEYS]
    if missing or unknown:
        raise ValueError(f"results header: missing {missing}, unknown {unknown}; the header is {list(HEADER_KEYS)}")
    path = run.path if isinstance(run, RunDir) else Path(run)
    path.mkdir(parents=True, exist_ok=True)
    if cost is None and isinstance(run, RunDir):
        cost = run.cost.block(wall_seconds=header["seconds"])
    body = {k: v for k, v in metrics.items() if k not in (*HEADER_KEYS, COST_KEY)}
    results = {**{key: header[key] for key in HEADER_KEYS}, **body}
    if cost is not None:
        results[COST_KEY] = cost
    write_json(path / METRICS_FILE, results)
    return results


def limit_split(split: Any, limit: int | None) -> Any:
    """The first ``limit`` items of a dataset split (``--limit`` of every command), as a split of the same type."""
    if limit is None or limit >= len(split):
        return split
    return type(split)(split.dataset, split.name, split.records[:limit])


def check_limit(limit: int | None) -> None:
    """``limit`` is None (all images) or at least 1."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 (or unset), got {limit}")


def train_log_record(step: int, **values: Any) -> dict[str, Any]:
    """One ``train_log.jsonl`` line: every ``TRAIN_LOG_KEYS`` key (None where not measured), then the extras."""
    record = {key: values.pop(key, None) for key in TRAIN_LOG_KEYS[1:]}
    return {"step": step, **record, **values}


class TrainLogger:
    """Appends ``train_log.jsonl`` lines in the shared schema (CNN loop, heads, fine-tuning).

    ``log(step, epoch=..., train_loss=..., lr=..., val_accuracy=..., val_top5=..., val_loss=..., **extra)``
    writes one line and returns it; ``enabled=False`` (non-zero ranks) only returns it.
    """

    def __init__(self, run: RunDir | None, name: str = TRAIN_LOG, *, enabled: bool = True):
        self.run, self.name, self.enabled = run, name, enabled and run is not None

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        record = train_log_record(step, **values)
        if self.enabled:
            self.run.append_jsonl(self.name, [record])
        return record

    def clear(self) -> None:
        """Start the log over (a run restarted from its first step)."""
        if self.enabled:
            (self.run / self.name).unlink(missing_ok=True)
