"""The folder to upload: files linked (or copied) in, listed with their sizes.

Large files (weights) are hard-linked from the run directory when both live on one filesystem, so staging a multi-GB
model costs no disk space and no time; otherwise they are copied. Either way the staged file has the run's bytes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_or_copy(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target``: a hard link when possible, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


def link_tree(source: Path, target: Path) -> list[Path]:
    """Every file under ``source`` into ``target`` (same relative paths); returns the target files."""
    placed = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        destination = target / path.relative_to(source)
        link_or_copy(path, destination)
        placed.append(destination)
    return placed


def list_files(folder: Path) -> list[dict[str, int | str]]:
    """``[{"path": relative POSIX path, "bytes": size}]`` of every file under ``folder``, sorted by path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size} for p in files]


def human_size(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"
