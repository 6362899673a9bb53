"""Fetch dataset files: md5-checked downloads, safe archive extraction, and the official Flowers102 files.

``download_file`` streams a URL to ``<dest>.part`` and renames it only after the md5 matches, so an interrupted or
corrupted download never looks complete; a file already in place with the right md5 is not fetched again.
``safe_extract`` checks every member of a tar archive before writing anything (absolute paths, ``..``, links that
leave the target or pass through another link, device files) and then extracts with tarfile's ``data`` filter as a
second line of defence. ``download_archives`` combines them for any list of archives and writes a marker after a
complete extraction, so a second run makes no request at all (the torchvision-backed datasets fetch the files
torchvision's own tables name, but extract them with ``safe_extract``); Flowers102's own downloader
(``fgvlm.data.flowers102.download_flowers102``) does the same for its three official files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PureWindowsPath
from typing import Any

from fgvlm.data.base import DatasetError

EXTRACTED_MARKER = ".fgvlm-extracted.json"
CHUNK = 1 << 20


class DownloadError(DatasetError):
    """A download that failed (HTTP error, unreachable host, wrong md5); the message names the URL or file."""


class UnsafeArchiveError(DownloadError):
    """An archive member that would write outside the target or create a device file; the message names it."""


def md5_file(path: str | Path) -> str:
    digest = hashlib.md5()
    with Path(path).open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _progress_bar(description: str, total: float | None, *, enabled: bool = True, unit: str = "bytes"):
    """A rich progress bar (size, speed and ETA for bytes; a count for items); yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    sized = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    with Progress(TextColumn("{task.description}"), BarColumn(), *sized, TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


def download_file(
    url: str, dest: str | Path, md5: str | None = None, *, progress: bool = True, timeout: float = 60.0
) -> bool:
    """Download ``url`` to ``dest`` unless ``dest`` already holds it; returns True when something was fetched.

    With ``md5``, an existing file is kept only if its md5 matches, and a fresh download must match or it is
    deleted and ``DownloadError`` names the file, the expected and the actual md5. Without ``md5``, an existing
    file counts as complete (nothing to check it against).
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5_file(dest) == md5):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as fh:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress_bar(dest.name, total, enabled=progress) as advance:
                while block := response.read(CHUNK):
                    fh.write(block)
                    digest.update(block)
                    advance(len(block))
    except urllib.error.HTTPError as err:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download failed: HTTP {err.code} {err.reason} for {url}") from None
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DownloadError(f"download failed for {url} -> {part}: {reason}") from None
    actual = digest.hexdigest()
    if md5 is not None and actual != md5:
        part.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)  # a stale file with the wrong content must not look complete either
        raise DownloadError(
            f"md5 mismatch for {dest.name} from {url}: expected {md5}, got {actual}; "
            f"the file was deleted (wrong base URL, or a changed or damaged file on the server)"
        )
    os.replace(part, dest)
    return True


def _resolve(path: str, links: set[str]) -> tuple[str, str | None]:
    """Lexically resolve an archive-relative POSIX path: (normalised path, what is wrong with it or None).

    Wrong means: it climbs above the target with '..', or any of its components is a symlink member (a chain of
    links that each stay inside can still lead outside, so we do not follow them at all).
    """
    stack: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return path, "climbs out of the target with '..'"
            stack.pop()
            continue
        stack.append(part)
        if "/".join(stack) in links:
            return path, f"passes through the symlink member {'/'.join(stack)!r}"
    return "/".join(stack), None


def check_members(members: list[tarfile.TarInfo], archive: str = "archive") -> None:
    """Refuse any member that could write outside the target: checked for all members before extracting any.

    Raises ``UnsafeArchiveError`` naming the archive and the member for: absolute names, ``..`` that climbs out,
    symlinks or hardlinks whose target is absolute or lies outside, names or link targets that pass through a
    symlink member, and device files or FIFOs.
    """
    links: set[str] = set()
    for member in members:
        name = member.name
        where = f"{archive}: refusing member {name!r}"
        if posixpath.isabs(name) or PureWindowsPath(name).is_absolute() or name.startswith("\\"):
            raise UnsafeArchiveError(f"{where}: absolute path")
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchiveError(f"{where}: device file or FIFO")
        normal, problem = _resolve(name, links)
        if problem:
            raise UnsafeArchiveError(f"{where}: path {problem}")
        if member.issym() or member.islnk():
            kind = "symlink" if member.issym() else "hardlink"
            if posixpath.isabs(member.linkname):
                raise UnsafeArchiveError(f"{where}: {kind} to the absolute path {member.linkname!r}")
            # A symlink's target is relative to its own folder; a hardlink's to the archive root.
            base = posixpath.dirname(normal) if member.issym() else ""
            _, problem = _resolve(posixpath.join(base, member.linkname), links | {normal})
            if problem:
                raise UnsafeArchiveError(f"{where}: {kind} to {member.linkname!r} {problem}")
            if member.issym():
                links.add(normal)


def safe_extract(archive: str | Path, target: str | Path, *, progress: bool = True) -> list[str]:
    """Extract a tar archive (any compression tarfile reads) into ``target`` after checking every member.

    Nothing is written when any member is refused. Returns the names of the regular files extracted.
    """
    archive, target = Path(archive), Path(target)
    # Python >= 3.11.4 / 3.10.12 ship tarfile's own "data" filter: a second, independent line of defence.
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(members, archive.name)
            target.mkdir(parents=True, exist_ok=True)
            with _progress_bar(f"extracting {archive.name}", len(members), enabled=progress, unit="files") as advance:
                for member in members:
                    tar.extract(member, target, **options)
                    advance(1)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        if isinstance(err, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchiveError(f"{archive.name}: refusing member {err.tarinfo.name!r}: {err}") from None
        raise DownloadError(f"cannot read archive {archive}: {err}") from None
    return [m.name for m in members if m.isfile()]


def download_archives(
    target: str | Path,
    archives: list[tuple[str, str | None]],
    base_url: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch each ``(url, md5)`` archive into ``target`` and extract it there safely, once.

    ``base_url`` (a mirror) replaces each URL's folder. An archive is neither fetched nor extracted again once a
    marker ``.fgvlm-extracted-<name>.json`` in ``target`` records a complete extraction of that md5 (or, with no
    md5 published, of that file) and every file it listed is still there. Returns what was done.
    """
    target = Path(target).expanduser()
    summary: dict[str, Any] = {"root": str(target), "base_url": base_url, "downloaded": [], "skipped": []}
    summary["extracted"] = False
    for url, md5 in archives:
        name = url.rsplit("/", 1)[-1]
        source = (base_url.rstrip("/") + "/" + name) if base_url else url
        marker = target / f".fgvlm-extracted-{name}.json"
        if _marker_complete(marker, target, md5 or name):
            summary["skipped"].append(name)
            continue
        fetched = download_file(source, target / name, md5, progress=progress)
        summary["downloaded" if fetched else "skipped"].append(name)
        extracted = safe_extract(target / name, target, progress=progress)
        marker.write_text(json.dumps({"archive": name, "md5": md5 or name, "files": sorted(extracted)}))
        summary["extracted"] = True
    return summary


def _marker_complete(marker: Path, root: Path, identity: str) -> bool:
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("md5") == identity and all((root / name).is_file() for name in info.get("files", []))
