"""The offline demo (``make demo``): every capability that exists, on CPU, with no download.

It runs the real CLI, one command at a time (printed before it runs), on the embedded synthetic dataset
(synthflowers) and on the real Flowers102 images in ``../shared/data/flowers102-mini`` when they are there, with
tiny random models built locally. Tiny random models know nothing about flowers: their zero-shot accuracy sits at
chance, which is what a true demo must print. The CNN and the linear head do learn. Results land in ``runs/demo/``
(one run directory per step) and the summary table is read back from each run's ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "demo"
FLOWERS_MINI = REPO.parent / "shared" / "data" / "flowers102-mini"


def fgvlm(*args: str) -> float:
    """Run one ``fgvlm`` command as a user would; stop the demo if it fails. Returns seconds taken."""
    command = [sys.executable, "-m", "fgvlm", *args]
    print(f"\n$ fgvlm {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - start


def steps() -> list[tuple[str, list[str], str]]:
    """(what, fgvlm arguments, run directory) for each step; a run directory of '' means no metrics."""
    synth = ["--dataset", "synthflowers"]
    plan = [
        ("dataset", ["data", "info", *synth], ""),
        (
            "zero-shot rank, tiny Qwen3-VL",
            ["eval", "--model", "tiny-qwen3-vl", *synth, "--mode", "rank", "--out", str(OUT / "zs-rank-synth")],
            "zs-rank-synth",
        ),
        (
            "zero-shot generate, tiny Qwen3-VL",
            ["eval", "--model", "tiny-qwen3-vl", *synth, "--mode", "generate", "--out", str(OUT / "zs-gen-synth")],
            "zs-gen-synth",
        ),
        (
            "linear head on tiny Qwen3-VL",
            ["head", "train", "--config", "configs/heads/synthflowers-tiny.yaml", "--out", str(OUT / "head-synth")],
            "head-synth",
        ),
        (
            "CNN test_resnet",
            ["cnn", "train", "--config", "configs/cnn/test-resnet-synthflowers.yaml", "--out", str(OUT / "cnn-synth")],
            "cnn-synth",
        ),
        (
            "CNN test_resnet + MixUp/CutMix",
            [
                "cnn",
                "train",
                "--config",
                "configs/cnn/test-resnet-synthflowers.yaml",
                "--mixup",
                "--cutmix",
                "--out",
                str(OUT / "cnn-mix-synth"),
            ],
            "cnn-mix-synth",
        ),
    ]
    if (FLOWERS_MINI / "setid.mat").is_file():
        mini = ["--dataset", "flowers102", "--root", str(FLOWERS_MINI)]
        plan += [
            ("Flowers102 mini set", ["data", "info", *mini], ""),
            (
                "zero-shot rank of 102 names",
                [
                    "eval",
                    "--model",
                    "tiny-qwen3-vl",
                    *mini,
                    "--mode",
                    "rank",
                    "--limit",
                    "60",
                    "--out",
                    str(OUT / "zs-rank-flowers"),
                ],
                "zs-rank-flowers",
            ),
        ]
    return plan


def summary(rows: list[tuple[str, str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fgvlm demo — test accuracy with 95 % bootstrap interval")
    for column in ("step", "dataset", "n", "accuracy", "95 % CI", "top-5", "chance", "seconds"):
        table.add_column(column, justify="left" if column in ("step", "dataset") else "right")
    for what, run, seconds in rows:
        metrics = json.loads((OUT / run / "metrics.json").read_text())  # fixed header: kind, dataset, ...
        lo, hi = metrics["ci95"]
        top5 = metrics.get("top5_accuracy")
        classes = metrics["num_classes"]
        table.add_row(
            what,
            metrics["dataset"],
            str(metrics["n"]),
            f"{100 * metrics['accuracy']:.1f} %",
            f"{100 * lo:.1f}–{100 * hi:.1f}",
            "—" if top5 is None else f"{100 * top5:.1f} %",
            f"{100 / classes:.1f} %",
            f"{seconds:.0f}",
        )
    Console(width=140).print(table)
    print(f"Run directories (config.yaml, meta.json, predictions.jsonl, metrics.json, …, done.json): {OUT}")


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FGVLM_CACHE", str(REPO / ".cache"))
    shutil.rmtree(OUT, ignore_errors=True)  # a fresh study each time (eval runs would otherwise resume)
    OUT.mkdir(parents=True)
    rows = []
    for what, args, run in steps():
        print(f"\n=== {what}", flush=True)
        seconds = fgvlm(*args)
        if run:
            rows.append((what, run, seconds))
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
