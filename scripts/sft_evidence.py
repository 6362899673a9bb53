"""Evidence that ``fgvlm sft`` learns: on SynthFlowers, per model family, zero-shot vs SFT (open-qa and mixcut), a head
on the base model vs on the SFT model, and the classify and rank objectives. CPU, a few minutes per family.

    python scripts/sft_evidence.py --out runs/sft-evidence
    python scripts/sft_evidence.py --families qwen3-vl --steps 600 --out runs/sft-evidence-quick
    # families in parallel (one thread each), one table: run the script once per family with the same --out

Writes ``OUT/results.json`` and ``OUT/results.md`` (one row per family) and every run directory under ``OUT``.
Accuracies are on the test split (6 classes x --eval-per-class images; chance 16.7 %). The tiny models are random
(hidden size 64, 2 layers): they must learn the vision features too, so the runs train every part (``freeze: none``)
with a learning rate far above the reference 2e-5 (per family: the record's ``tiny_lr`` where it has one, else
--lr), and one torch thread (many times faster than oversubscribed threads for models this small on a busy machine).
The generate and rank objectives run the same steps at the same learning rate, so their rows compare like for like.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fgvlm.config import DataConfig, from_dict
from fgvlm.models.base import ModelConfig


def data_config(classes: int, train_per_class: int, image_size: int, eval_per_class: int = 8) -> DataConfig:
    per_class = [train_per_class, eval_per_class, eval_per_class]
    options = {"num_classes": classes, "image_size": image_size, "images_per_class": per_class}
    return DataConfig(dataset="synthflowers", options=options)


def sft_config(model: str, data: DataConfig, args: argparse.Namespace, **changes: Any):
    from fgvlm.sft.config import SFTConfig

    raw = {
        "model": {"name": model},
        "data": {"dataset": data.dataset, "options": data.options},
        "freeze": "none",
        "train": {
            "max_steps": args.steps,
            "lr": family_lr(model, args),
            "eval_every": max(1, args.steps // 5),
            "eval_limit": 96,
            "save_every": args.steps,
            "log_every": 50,
            "num_threads": 1,
            "seed": args.seed,
        },
        "report_to": "none",
        "seed": args.seed,
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    return from_dict(SFTConfig, raw)


def family_lr(model: str, args: argparse.Namespace) -> float:
    """The family record's ``tiny_lr`` (``model`` is ``tiny-<family>``), else --lr."""
    from fgvlm.models.families import get_family

    return get_family(model.removeprefix("tiny-")).tiny_lr or args.lr


def with_ci(metrics: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and its 95 % bootstrap interval from a metrics.json."""
    return {"accuracy": metrics["accuracy"], "ci95": metrics.get("ci95")}


def zero_shot(model: str, data: DataConfig, out: Path) -> float:
    from fgvlm.eval.zeroshot import EvalConfig, evaluate

    cfg = EvalConfig(data=data, model=ModelConfig(name=model), split="test", mode="rank", task="open-qa")
    return with_ci(evaluate(cfg, out))


def head_accuracy(model: str, data: DataConfig, out: Path) -> float:
    from fgvlm.heads.config import HeadTrainConfig
    from fgvlm.heads.pipeline import train_run

    cfg = HeadTrainConfig(data=data, model=ModelConfig(name=model), eval_split="test", lr=1e-3, steps=1000)
    return train_run(cfg, out, progress=False)["accuracy"]


def best_val(run: Path) -> float | None:
    values = [json.loads(line)["val_accuracy"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def family_row(family: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every measurement for one family; each run directory lands under ``out/family``."""
    from fgvlm.sft.run import run_sft

    model, root = f"tiny-{family}", out / family
    data = data_config(args.classes, args.train_per_class, args.image_size, args.eval_per_class)
    began = time.perf_counter()
    row: dict[str, Any] = {"family": family, "model": model, "steps": args.steps, "lr": family_lr(model, args)}
    row["zero_shot"] = zero_shot(model, data, root / "zero-shot")
    sft = run_sft(sft_config(model, data, args), root / "sft-open-qa")
    row["sft_open_qa"], row["sft_open_qa_best_val"] = with_ci(sft), best_val(root / "sft-open-qa")
    for score in filter(None, args.rank_scores.split(",")):
        name = f"sft-rank-{score}"
        rank = run_sft(sft_config(model, data, args, objective="rank", rank={"score": score}), root / name)
        row[f"sft_rank_{score}"], row[f"sft_rank_{score}_best_val"] = with_ci(rank), best_val(root / name)
    if not args.skip_mixcut:
        mix = run_sft(sft_config(model, data, args, task="open-qa-mixcut"), root / "sft-mixcut")
        row["sft_mixcut"], row["sft_mixcut_best_val"] = with_ci(mix), best_val(root / "sft-mixcut")
    if not args.skip_heads:
        row["head_base"] = head_accuracy(model, data, root / "head-base")
        row["head_sft"] = head_accuracy(str((root / "sft-open-qa" / "model").resolve()), data, root / "head-sft")
    if not args.skip_classify:
        classify_train = {"max_steps": args.classify_steps, "eval_every": max(1, args.classify_steps // 5)}
        cls_cfg = sft_config(model, data, args, objective="classify", train=classify_train)
        cls = run_sft(cls_cfg, root / "sft-classify")
        row["sft_classify"] = with_ci(cls)
    row["minutes"] = round((time.perf_counter() - began) / 60, 1)
    return row


COLUMNS = [
    ("family", "family"),
    ("zero_shot", "zero-shot"),
    ("sft_open_qa", "SFT open-qa (generate)"),
    ("sft_rank_sum", "SFT rank objective (sum)"),
    ("sft_rank_mean", "SFT rank objective (mean)"),
    ("sft_mixcut", "SFT mixcut"),
    ("head_base", "head on base"),
    ("head_sft", "head on SFT"),
    ("sft_classify", "classify"),
    ("minutes", "minutes"),
]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, dict):  # accuracy with its 95 % interval
            low, high = value["ci95"] or (value["accuracy"], value["accuracy"])
            return f"{100 * value['accuracy']:.1f} % ({100 * low:.1f}-{100 * high:.1f})"
        return f"{100 * value:.1f} %" if isinstance(value, float) and value <= 1 else str(value)

    lines = [
        f"SynthFlowers, {args.classes} classes, {args.image_size} px ({args.train_per_class} train and "
        f"{args.eval_per_class} test images per class), test accuracy (chance {100 / args.classes:.1f} %); "
        f"SFT {args.steps} steps (classify {args.classify_steps}), lr per row, freeze none, CPU 1 thread; "
        "zero-shot and both SFT objectives evaluated by rank on the test split, 95 % bootstrap intervals.",
        "",
        "| family | lr |",
        "| --- | --- |",
        *[f"| {row['family']} | {row['lr']} |" for row in rows],
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(row.get(key, "-")) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sft-evidence"))
    parser.add_argument("--families", default="qwen3-vl,idefics2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--classify-steps", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="families whose record has no tiny_lr")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--train-per-class", type=int, default=96)
    parser.add_argument("--eval-per-class", type=int, default=8, help="validation and test images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-mixcut", action="store_true")
    parser.add_argument("--skip-classify", action="store_true")
    parser.add_argument(
        "--rank-scores", default="sum", help="rank objective rows, one per score (sum, mean); empty: none"
    )
    parser.add_argument("--skip-heads", action="store_true", help="no head on the base / SFT model")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for family in args.families.split(","):
        row = family_row(family.strip(), args, args.out)
        (args.out / family.strip() / "row.json").write_text(json.dumps(row, indent=2) + "\n")
        # every family's row found under OUT (families may run as separate processes, in parallel)
        rows = [json.loads(path.read_text()) for path in sorted(args.out.glob("*/row.json"))]
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / "results.md").write_text(markdown(rows, args))
        print(markdown(rows, args), flush=True)


if __name__ == "__main__":
    main()
