"""``fgvlm prompts build``: write the instruction conversations a fine-tuning run would see, as a file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(help="Build instruction data (question/answer conversations) from a dataset.", no_args_is_help=True)


class Format(str, Enum):
    messages = "messages"
    llava = "llava"


class MixMode(str, Enum):
    mixup = "mixup"
    cutmix = "cutmix"
    both = "both"


@app.command()
def build(
    out: Path = typer.Option(..., "--out", "-o", help="File to write (messages: JSONL; llava: a JSON list)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registry name (`fgvlm list datasets`)."),
    root: str = typer.Option(None, help="Folder holding the data (default: the dataset's own)."),
    protocol: str = typer.Option("official", help="Split protocol (flowers102: official, trainval, swapped)."),
    split: str = typer.Option("train", help="Split to build from."),
    task: str = typer.Option(
        None,
        help="open-qa, closed-qa, closed-negative-qa; add -mixcut for MixUp/CutMix images (open-qa-mixcut) "
        "[default: open-qa].",
    ),
    mix: str = typer.Option(None, help="Tasks by weight instead of --task, e.g. open-qa=0.5,closed-qa=0.5."),
    fmt: Format = typer.Option(Format.messages, "--format", help="messages (lmms-engine JSONL) or llava (JSON)."),
    seed: int = typer.Option(0, help="Seed of every random choice (prompts, task mix, mixcut pairs and lambda)."),
    limit: int = typer.Option(None, help="Only the first N images of the split."),
    image_dir: Path = typer.Option(
        None, help="Where drawn and mixed images are written [default: beside OUT, e.g. data/x.jsonl -> data/x-images]."
    ),
    family: str = typer.Option(None, help="Model family whose prompt wording to use (e.g. instructblip)."),
    alpha: float = typer.Option(1.0, help="-mixcut tasks: lambda ~ Beta(alpha, alpha)."),
    mixcut_mode: MixMode = typer.Option(MixMode.both, help="-mixcut tasks: mixup, cutmix, or both (half each)."),
    mixcut_prob: float = typer.Option(1.0, help="-mixcut tasks: probability that an image is mixed."),
    task_option: list[str] = typer.Option(
        [], "--task-option", help="TASK.KEY=VALUE prompt option, e.g. closed-qa.num_options=10; repeatable."
    ),
    data_option: list[str] = typer.Option([], "--data-option", help="Dataset option KEY=VALUE; repeatable."),
) -> None:
    """Build question/answer conversations from a split, exactly as evaluation asks them, and write them to OUT.

    Each image gets one task (with --mix, the weights' exact shares); open-qa-mixcut mixes each image with one of
    another class (MixUp or CutMix), writes the mixed image, answers with the first class's name and records
    lambda, the box, the pair and the second answer under each entry's "meta". Beside OUT, OUT's stem + .build.json
    records how it was built (dataset, protocol, citation, tasks, seed, MixUp/CutMix settings: `fgvlm publish
    --dataset` reads it).

    Examples:

      fgvlm prompts build --dataset flowers102 --root ../shared/data/flowers102-mini --split train --task open-qa
      --out data/flowers-openqa.jsonl

      fgvlm prompts build --dataset flowers102 --mix open-qa=0.5,closed-qa=0.3,closed-negative-qa=0.2
      --format llava --out data/flowers-mix.json

      fgvlm prompts build --dataset synthflowers --task open-qa-mixcut --alpha 1.0 --limit 100 --out data/mixcut.jsonl

      fgvlm prompts build --dataset synthflowers --task closed-qa-mixcut --limit 100 --out data/closed-mixcut.jsonl
    """
    from fgvlm.config import ConfigError
    from fgvlm.data import create_dataset
    from fgvlm.prompts.build_record import BuildSettings, write_build_record
    from fgvlm.prompts.instructions import build_instructions, check_tasks, export_instructions, parse_mix
    from fgvlm.prompts.mixcut import MixCutOptions

    if task and mix:
        raise ConfigError(f"give --task or --mix, not both (got --task {task} and --mix {mix})")
    tasks = check_tasks(parse_mix(mix) if mix else task or "open-qa")
    try:
        mixcut = MixCutOptions(alpha=alpha, mode=mixcut_mode.value, prob=mixcut_prob)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    data = create_dataset(dataset=dataset, root=root, protocol=protocol, options=_options(data_option))
    total = len(data.split(split))
    total = min(total, limit) if limit is not None else total
    image_dir = image_dir or out.parent / f"{out.stem}-images"
    with _progress_bar(total) as advance:
        records = build_instructions(
            data,
            split,
            tasks,
            seed,
            image_dir,
            mixcut=mixcut,
            family=family,
            task_options=_task_options(task_option),
            limit=limit,
            progress=advance,
        )
    export_instructions(records, fmt.value, out)
    settings = BuildSettings(
        data, split, tasks, seed, fmt.value, family, _task_options(task_option), mixcut, limit, _options(data_option)
    )
    write_build_record(out, records, settings)
    counts = ", ".join(f"{name} {n}" for name, n in sorted(Counter(r.task for r in records).items()))
    typer.echo(f"wrote {len(records)} conversations ({counts}) to {out}")


def _options(items: list[str]) -> dict:
    from fgvlm.config import parse_override

    return {".".join(path): value for path, value in map(parse_override, items)}


def _task_options(items: list[str]) -> dict[str, dict]:
    """``closed-qa.num_options=10`` -> ``{"closed-qa": {"num_options": 10}}``."""
    from fgvlm.config import ConfigError, parse_override

    out: dict[str, dict] = {}
    for item in items:
        path, value = parse_override(item)
        if len(path) != 2:
            raise ConfigError(f"--task-option {item!r}: expected TASK.KEY=VALUE")
        out.setdefault(path[0], {})[path[1]] = value
    return out


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` records; yields the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("building"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("build", total=total)
        yield lambda n: bar.advance(task, n)
