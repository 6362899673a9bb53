"""Where a result came from: package versions, the fgvlm checkout's git revision, content fingerprints of files.

``meta.json`` of every run records the first two (``fgvlm.runs.RunDir.write_meta``); model and checkpoint sources
record a fingerprint of a local folder, so a re-saved checkpoint never passes for the one a result came from.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

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
