"""Run directories: the contract every result-producing command shares.

A run directory holds ``config.yaml`` (the resolved config), ``meta.json`` (what produced the results: versions,
seed, git revision, dataset protocol and split sizes, model id or local-path fingerprint, command line), the
command's outputs and, written last, ``done.json`` (the completion marker: finish time, wall time, config hash).
Files are written atomically (temp file + rename) so an interrupted run never leaves a half-written JSON file
behind; JSONL files are appended line by line and flushed.

One lifecycle for every command that writes a run (``start_run`` ... ``finish_run``): for a resolved config a run
directory is *absent*, *partial* (started, no ``done.json``), *complete* (``done.json`` of the same config) or
*conflicting* (another config). With ``resume`` (the default) a complete run is skipped and its stored results
returned, a partial one is continued, a conflicting one is refused naming the differing keys. ``resume=False``
starts over: the old directory is moved aside to ``<out>.replaced-<time>`` (never deleted), and a fresh one made.

``write_results`` writes ``metrics.json`` with its fixed header; ``TrainLogger`` writes ``train_log.jsonl`` in the
one schema every trainer shares (``TRAIN_LOG_KEYS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError, config_differences, from_dict, load_yaml, save_yaml, to_dict

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

TRACKED_PACKAGES = (
    "fgvlm",
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "timm",
    "datasets",
    "numpy",
    "pillow",
    "safetensors",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: Path | None = None) -> str | None:
    """The fgvlm source checkout's commit (with '-dirty' if it has local changes), or None outside git."""
    here = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint_path(path: str | Path, chunk: int = 1 << 20) -> str:
    """A content fingerprint of a local file or folder (e.g. a model directory).

    Hashes every file's relative name and size, plus its full content when under 64 MiB, or else its first and last
    MiB and its modification time: cheap on multi-GB checkpoints, and any re-save or edit changes it (a copied
    checkpoint may get a new fingerprint, which costs a cache miss, never a wrong hit).
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{size}\0".encode())
        with file.open("rb") as fh:
            if size <= 64 * chunk:
                digest.update(fh.read())
            else:  # the ends only, plus the modification time: a re-save that changes middle layers still counts
                digest.update(fh.read(chunk))
                fh.seek(-chunk, os.SEEK_END)
                digest.update(fh.read(chunk))
                digest.update(str(file.stat().st_mtime_ns).encode())
    return "sha256:" + digest.hexdigest()[:16]


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    """A folder of results for one command invocation."""

    def __init__(self, path: str | Path, status: RunStatus | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.status = status
        """How ``start_run`` found the directory (None for a RunDir opened directly)."""
        self.started = time.time()
        """When this invocation began (``finish_run`` reports the wall time from here)."""

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
        path = self.path / name
        if not path.exists():
            return []
        raw = path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end != len(raw):
            with path.open("r+b") as fh:
                fh.truncate(end)
        return [json.loads(line) for line in raw[:end].splitlines() if line.strip()]

    def append_jsonl(self, name: str, records: list[dict[str, Any]]) -> None:
        with (self.path / name).open("a") as fh:
            for record in records:
                fh.write(json.dumps(record, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


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
def write_results(run: RunDir | str | Path, header: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``metrics.json``: the fixed header (``HEADER_KEYS``, in order) first, then the metrics.

    The header says what was measured: ``kind`` (eval, head-train, cnn-train, ...), ``dataset``, ``protocol``,
    ``shots`` and ``shot_seed`` (k-shot training sets; null for all images), ``classes`` (all, base or new),
    ``split``, ``model``, ``num_classes`` and ``seconds`` (this invocation's wall time). Returns the written dict.
    """
    missing = [key for key in HEADER_KEYS if key not in header]
    unknown = [key for key in header if key not in HEADER_KEYS]
    if missing or unknown:
        raise ValueError(f"results header: missing {missing}, unknown {unknown}; the header is {list(HEADER_KEYS)}")
    path = run.path if isinstance(run, RunDir) else Path(run)
    path.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in metrics.items() if k not in HEADER_KEYS}
    results = {**{key: header[key] for key in HEADER_KEYS}, **body}
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
