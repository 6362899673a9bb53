"""``fgvlm publish``: a trained run as a Hub model repository, or instruction data as a dataset repository."""

from __future__ import annotations

from pathlib import Path

import typer

from fgvlm.commands.common import config_option, resume_option, set_option


def command(
    source: str = typer.Argument(
        None, help="A finished run directory (sft, rl, head train, cnn train), or `fgvlm prompts build` output."
    ),
    repo_id: str = typer.Option(None, "--repo-id", help="The Hub repository, ORG/NAME (created when missing)."),
    dataset: bool = typer.Option(False, "--dataset", help="SOURCE is instruction data: publish a dataset repository."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    revision: str = typer.Option(None, "--revision", help="Branch to commit to (made when missing) [default: main]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only write the folder that would be uploaded; list it."),
    adapter: bool = typer.Option(False, "--adapter", help="LoRA runs: also upload the adapter alone (adapter/)."),
    license_: str = typer.Option(None, "--license", help="Licence id (e.g. apache-2.0) [default: the base model's]."),
    base_model: str = typer.Option(None, "--base-model", help="Hub id of the base model when the run used a folder."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Publish run dir; OUT/upload is what is uploaded [default: SOURCE/publish-NAME]."
    ),
    limit: int = typer.Option(None, "--limit", help="Instruction data: only the first N records of each file."),
    resume: bool = resume_option(),
    config: Path = config_option("YAML file of PublishConfig fields; flags and --set override it."),
    overrides: list[str] = set_option("datasets=[my-org/flowers-instructions]"),
) -> None:
    """Publish a run or instruction data on the Hugging Face Hub: one commit, with a card that carries the results.

    A model repository gets the weights (safetensors), processor and chat template (or timm's config, or a head and
    a pointer to its base model), the resolved training config, train_log.jsonl, the training-curve PNG and a
    README.md whose model-index holds the run's accuracy, 95 % CI, top-5, protocol, classes and n. A dataset
    repository gets the records with their images as Parquet, one configuration per task, and a card with the task
    mix, question wording, MixUp/CutMix settings and the source dataset's protocol and citation. The token comes
    from HF_TOKEN or `hf auth login`, never from a file; a failed upload is one line, and the same command again
    resumes it.

    Examples:

      fgvlm publish runs/sft-qwen3 --repo-id my-org/qwen3-vl-4b-flowers102 --dry-run --out publish/sft

      fgvlm publish runs/sft-lora --repo-id my-org/qwen3-vl-4b-flowers102-lora --adapter --private

      fgvlm publish runs/cnn --repo-id my-org/resnet50-flowers102 --license mit

      fgvlm publish runs/probe --repo-id my-org/qwen3-vl-4b-flowers102-probe --base-model Qwen/Qwen3-VL-4B-Instruct

      fgvlm publish data/instructions --dataset --repo-id my-org/flowers102-instructions --dry-run
    """
    from fgvlm.config import resolve_config
    from fgvlm.publish.config import PublishConfig
    from fgvlm.publish.run import default_out, publish_run

    flags = {
        "source": source,
        "repo_id": repo_id,
        "dataset": True if dataset else None,
        "private": True if private else None,
        "revision": revision,
        "dry_run": True if dry_run else None,
        "adapter": True if adapter else None,
        "license": license_,
        "base_model": base_model,
        "limit": limit,
    }
    cfg = resolve_config(PublishConfig, config, flags, overrides)
    out = out if out is not None else default_out(cfg.source, cfg.repo_id)
    record = publish_run(cfg, out, resume=resume)
    print_record(record, out)


def print_record(record: dict, out: Path) -> None:
    """The files and sizes (a dry run), or where the commit went."""
    from fgvlm.publish.staging import human_size
    from fgvlm.publish.upload import repo_url

    for entry in record["files"]:
        typer.echo(f"{human_size(entry['bytes']):>10}  {entry['path']}")
    total = f"{len(record['files'])} files, {human_size(record['total_bytes'])}"
    url = repo_url(record["repo_id"], record["repo_type"])
    if record["state"] == "dry-run":
        message = record["commit_message"]
        typer.echo(f"dry run: {total} in {record['folder']} would be committed to {url} as {message!r}")
        return
    commit = record["commit"]
    again = "" if commit.get("made", True) else " (an earlier attempt had already made this commit)"
    typer.echo(f"published {total} to {url} (commit {commit['oid'][:10]}: {commit['url']}){again}; record: {out}")
