"""``publish_run(cfg, out, *, resume=True)``: stage a source into ``OUT/upload`` and commit it (the kind "publish").

A publish run is a run directory like any other (``fgvlm.runs.start_run`` ... ``finish_run``): ``config.yaml``,
``meta.json``, ``upload/`` (exactly the files the repository gets), ``publish.json`` (the record below) and, last,
``done.json``. ``publish.json`` says ``state``: ``staged`` (the folder is complete, nothing committed yet),
``dry-run`` (finished without uploading) or ``published`` (the commit exists: its id and URL are recorded). A failed
upload leaves ``staged``; running the same command again reuses the staged folder and makes (or finds) the same
commit. A complete run is not published twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fgvlm.publish.config import PublishConfig
from fgvlm.publish.sources import Source, open_source
from fgvlm.publish.staging import list_files
from fgvlm.runs import RunDir, finish_run, read_json, say, start_run, write_json

RECORD = "publish.json"
UPLOAD_DIR = "upload"


def default_out(source: str | Path, repo_id: str) -> Path:
    """Where a publish run goes without ``--out``: ``RUN/publish-NAME`` beside a run's files, or
    ``FILE-publish-NAME`` beside an instruction file."""
    path, name = Path(source).expanduser(), repo_id.split("/")[-1]
    return path / f"publish-{name}" if path.is_dir() else path.with_name(f"{path.stem}-publish-{name}")


def _staged(run: RunDir, source: Source) -> Path | None:
    """``OUT/upload`` when an earlier attempt staged this very content completely (its record lists the files)."""
    folder, record_path = run / UPLOAD_DIR, run / RECORD
    if not (folder.is_dir() and record_path.is_file()):
        return None
    record = read_json(record_path)
    same = record.get("content_hash") == source.content_hash() and record.get("files") == list_files(folder)
    return folder if same else None


def stage(run: RunDir, source: Source) -> Path:
    """Write the repository's files into ``OUT/upload`` (through ``upload.partial``, renamed when complete)."""
    partial, folder = run / f"{UPLOAD_DIR}.partial", run / UPLOAD_DIR
    for old in (partial, folder):
        if old.exists():
            shutil.rmtree(old)
    partial.mkdir(parents=True)
    source.stage(partial)
    partial.rename(folder)
    return folder


def publish_run(cfg: PublishConfig, out: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Stage ``cfg.source``, then (unless ``dry_run``) upload it as one commit; returns the ``publish.json`` record."""
    source = open_source(cfg)  # an unpublishable source is refused before anything is written
    run = start_run(out, cfg, resume=resume)
    if run.complete:
        return run.read_results(RECORD)
    folder = _staged(run, source) if resume else None
    if folder is None:
        folder = stage(run, source)
    else:
        say(f"{run.path}: reusing the folder staged by an earlier attempt ({folder})")
    for note in source.notes:
        say(f"note: {note}")
    files = list_files(folder)
    record: dict[str, Any] = {
        "state": "staged",
        "repo_id": cfg.repo_id,
        "repo_type": source.repo_type,
        "revision": cfg.revision,
        "private": cfg.private,
        "source": str(source.path.resolve()),
        "content_hash": source.content_hash(),
        "commit_message": source.commit_message(),
        "folder": str(folder),
        "files": files,
        "total_bytes": sum(int(f["bytes"]) for f in files),
        "commit": None,
    }
    write_json(run / RECORD, record)
    run.write_meta(command="publish", seed=None, source=record["source"], repo_id=cfg.repo_id)
    if not cfg.dry_run:
        from fgvlm.publish.upload import upload

        record["commit"] = upload(
            folder,
            repo_id=cfg.repo_id,
            repo_type=source.repo_type,
            private=cfg.private,
            revision=cfg.revision,
            message=record["commit_message"],
            description=f"Published with `fgvlm publish` from {source.path.name}.",
        )
    record["state"] = "dry-run" if cfg.dry_run else "published"
    write_json(run / RECORD, record)
    finish_run(run)
    return record
