"""Run directories: the contract every result-producing command shares.

A run directory holds ``config.yaml`` (the resolved config), ``meta.json`` (what produced the results: versions,
seed, git revision, dataset protocol and split sizes, model id or local-path fingerprint, command line) and the
command's outputs. Files are written atomically (temp file + rename) so an interrupted run never leaves a
half-written JSON file behind; JSONL files are appended line by line and flushed.
"""

from __future__ import annotations

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

from fgvlm.config import save_yaml, to_dict

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

    Hashes every file's relative name and size, plus its full content when under 64 MiB or its first and last
    MiB otherwise: cheap on multi-GB checkpoints, and any re-save or edit changes it.
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
            else:
                digest.update(fh.read(chunk))
                fh.seek(-chunk, os.SEEK_END)
                digest.update(fh.read(chunk))
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

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, cfg: Any) -> None:
        save_yaml(to_dict(cfg) if not isinstance(cfg, dict) else cfg, self.path / "config.yaml")

    def write_meta(
        self, *, command: str, seed: int | None, dataset: dict | None = None, model: dict | None = None, **extra: Any
    ) -> dict[str, Any]:
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
