"""Fine-tuning throughput of Qwen3-VL-4B on one GPU: samples/s, tokens/s, MFU, peak memory, time waiting for data.

The model is built from the real config (``../shared/data/hub-configs/Qwen__Qwen3-VL-4B-Instruct``) with random
weights in bf16, directly on the GPU: the same shapes, so the same FLOPs and memory as the real checkpoint, with no
download. Images are synthetic 667 x 500 (Flowers102's typical size: ~336 visual tokens at native resolution).
Each step runs what ``fgvlm sft`` runs: ``SFTCollator`` (padded, or packed with ``fgvlm.sft.packing``) in a
DataLoader, ``fgvlm.sft.trainer.answer_loss`` (the LM head on the answer positions only), backward, gradient
clipping and a fused AdamW step; the default freeze setting (vision tower frozen, full fine-tuning of the rest).

MFU = counted FLOPs / s / the GPU's dense bf16 peak (table below, by device name; ``--peak-tflops`` overrides).
FLOPs per step = 6 N_lm T + 6 N_head A + 2 N_vision P (see ``bench_sft.py``): N_lm the language model without the
token embedding (3.63 B), T the real tokens (pads not counted), N_head the LM head, A the answer positions, N_vision
the vision tower (0.42 B, forward only), P its input patches. Published anchors: lmms-engine 20-25 % MFU unpadded,
30-40 % packed (A800).

    python benchmarks/gpu_sft.py                      # both modes, ~2-3 minutes on an H100/H200
    python benchmarks/gpu_sft.py --modes packed --batch-size 4 --gradient-checkpointing   # 40 GB GPUs
    python benchmarks/gpu_sft.py --modes rank         # objective rank: all 102 names per image, batch 1
    python benchmarks/gpu_sft.py --device cpu --tiny  # smoke test of the code path on tiny-qwen3-vl

Without CUDA (and without ``--device cpu``) it prints ``no CUDA: skipped`` and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HUB_CONFIGS = Path(os.environ.get("FGVLM_HUB_CONFIGS", REPO.parent / "shared" / "data" / "hub-configs"))
HUB_CONFIG = HUB_CONFIGS / "Qwen__Qwen3-VL-4B-Instruct"
"""The real Qwen3-VL-4B config/processor/tokenizer files (no weights); ``FGVLM_HUB_CONFIGS`` names another folder
holding ``Qwen__Qwen3-VL-4B-Instruct/`` (a GPU machine that has no ``../shared`` beside the checkout)."""
IMAGE_SIZE = (667, 500)
QUESTION = "What is the name of the flower in this image? Answer with the name only."
PEAK_BF16_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("H20", 148.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A6000", 155.0),
    ("A10", 125.0),
    ("L4", 121.0),
    ("4090", 165.0),
)
"""Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets; the first name in the device name wins."""


def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (``torch.cuda.get_device_name()``), or None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name.upper():
            return tflops
    return None


def cuda_available_or_say_so(device: str, script: str) -> bool:
    """False (after printing the skip line) when a CUDA run is asked for on a machine without CUDA."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"{script}: no CUDA: skipped (run on a GPU machine, or --device cpu --tiny for a smoke test)")
        return False
    return True


def synthetic_images(count: int, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> list[Any]:
    """``count`` RGB images of ``size`` (width, height): smooth random colour fields plus noise (content is
    irrelevant to the cost; only the size decides the number of visual tokens)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 50 + 2, width // 50 + 2, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(field + rng.integers(-20, 21, field.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy))
    return images


def class_names() -> list[str]:
    from fgvlm.registry import resource_json

    return list(resource_json("flowers102_classes.json"))


def build_model(tiny: bool, device: str, attn: str, layers: int | None = None) -> tuple[Any, Any, str]:
    """(model, processor, description): Qwen3-VL-4B from its config in bf16 on ``device``, or tiny-qwen3-vl.

    ``layers`` keeps only that many decoder layers and vision blocks (real widths, vocabulary, tokenizer and
    processor): a smoke test of the real configuration on a machine too small for 4 B parameters.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if tiny:
        from fgvlm.models.tiny import cached_tiny_model

        path = cached_tiny_model("tiny-qwen3-vl", "qwen3-vl")
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).to(device)
        return model, AutoProcessor.from_pretrained(path), "tiny-qwen3-vl (random, fp32)"
    if not (HUB_CONFIG / "config.json").is_file():
        raise FileNotFoundError(f"the Qwen3-VL-4B config is expected at {HUB_CONFIG}")
    config = AutoConfig.from_pretrained(HUB_CONFIG)
    config._attn_implementation = attn
    what = "Qwen3-VL-4B from its config (random, bf16)"
    if layers is not None:
        config.text_config.num_hidden_layers = config.vision_config.depth = layers
        config.vision_config.deepstack_visual_indexes = list(range(layers - 1))
        what = f"Qwen3-VL-4B config cut to {layers} layers (random, bf16)"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    return model, AutoProcessor.from_pretrained(HUB_CONFIG), what


def instruction_records(count: int, image_size: tuple[int, int]) -> list[Any]:
    from fgvlm.sft.data import InstructionRecord

    names = class_names()
    images = synthetic_images(count, image_size)
    return [
        InstructionRecord(
            id=f"synthetic-{i}",
            image=image,
            question=QUESTION,
            answer=names[i % len(names)],
            task="open-qa",
            label=i % len(names),
        )  # fmt: skip
        for i, image in enumerate(images)
    ]


def prepare_for_training(model: Any, method: str, checkpointing: bool) -> Any:
    """``fgvlm sft``'s freeze setting (vision tower frozen) and method (full, or LoRA on the language model)."""
    from fgvlm.models.base import ModelConfig
    from fgvlm.sft.config import SFTConfig
    from fgvlm.sft.modeling import prepare_model

    cfg = SFTConfig(model=ModelConfig(name="qwen3-vl-4b"), method=method)
    model = prepare_model(model, cfg, "qwen3-vl")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.train()


def to_device(batch: dict[str, Any], device: str, dtype: Any) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if hasattr(value, "to"):
            value = value.to(device, non_blocking=True)
            if key == "pixel_values":
                value = value.to(dtype)
        moved[key] = value
    return moved


def timed_steps(model: Any, args: argparse.Namespace, step: Any) -> dict[str, float]:
    """``args.warmup`` untimed then up to ``args.steps`` timed optimizer steps (stopping at ``args.max_seconds``):
    ``step(i) -> (loss, counts)`` builds step ``i``'s loss; backward, clipping and a fused AdamW step follow. The
    timed steps' ``counts`` (samples, tokens, ...) are summed into the returned totals with the seconds, the peak
    memory and the last loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    cuda = args.device.startswith("cuda")
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=cuda)
    totals: dict[str, float] = {"steps": 0}
    start = None
    for index in range(args.warmup + args.steps):
        if index == args.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        loss, counts = step(index)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if start is not None:
            totals["steps"] += 1
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
            if time.perf_counter() - start > args.max_seconds:
                break
    if cuda:
        torch.cuda.synchronize()
    totals["seconds"] = time.perf_counter() - start
    totals["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    totals["loss"] = float(loss.detach())
    return totals


def train_steps(model: Any, loader: Any, args: argparse.Namespace, counts: dict[str, int]) -> dict[str, float]:
    """Generate-objective steps on the loader's batches: ``answer_loss``, with tokens, FLOPs and data wait."""
    from fgvlm.models.flops import batch_counts
    from fgvlm.sft.trainer import answer_loss

    sys.path.insert(0, str(HERE))
    from bench_sft import step_flops

    dtype = next(model.parameters()).dtype
    iterator = iter(loader)

    def step(_index: int) -> tuple[Any, dict[str, float]]:
        waited = time.perf_counter()
        batch = next(iterator)
        waited = time.perf_counter() - waited
        stats = batch_counts(batch)
        loss = answer_loss(model, to_device(batch, args.device, dtype))
        numbers = {"samples": args.batch_size, "tokens": stats["tokens"], "data_s": waited}
        return loss, {**numbers, "flops": step_flops(stats, counts)}

    return timed_steps(model, args, step)


def run_mode(mode: str, model: Any, processor: Any, args: argparse.Namespace, counts: dict[str, int]) -> dict:
    import torch

    from fgvlm.sft.collator import SFTCollator
    from fgvlm.sft.setup import RecordList

    records = instruction_records(args.batch_size * (args.warmup + args.steps), tuple(args.image_size))
    collator = SFTCollator(processor, "qwen3-vl", packing_model=model if mode == "packed" else None)
    loader = torch.utils.data.DataLoader(
        RecordList(records),
        batch_size=args.batch_size,
        collate_fn=collator,
        num_workers=args.workers,
        pin_memory=args.device.startswith("cuda"),
        persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers > 0 else None,
    )
    return train_steps(model, loader, args, counts)


def run_rank(model: Any, processor: Any, args: argparse.Namespace) -> dict[str, float]:
    """``objective: rank`` steps at batch 1: every Flowers102 name scored after the shared prefix cache, softmax
    cross-entropy, backward, AdamW (what ``fgvlm sft --objective rank`` trains per image)."""

    from fgvlm.models.families import backend_class
    from fgvlm.sft.config import RankOptions
    from fgvlm.sft.objectives.rank_model import RankModel

    names = class_names()
    backend = backend_class("qwen3-vl")(model, processor, {"family": "qwen3-vl"})
    rank = RankModel(model, backend, RankOptions(negatives=args.negatives))
    images = synthetic_images(args.warmup + args.steps, tuple(args.image_size))

    def step(index: int) -> tuple[Any, dict[str, float]]:
        return rank.image_loss(images[index], QUESTION, names, [(index % len(names), 1.0)]), {"samples": 1}

    return timed_steps(model, args, step)


def memory_text(totals: dict[str, float]) -> str:
    return f"{totals['peak_gib']:.1f} GiB" if totals["peak_gib"] == totals["peak_gib"] else "n/a (CPU)"


def report_rank(totals: dict[str, float], negatives: int | str) -> str:
    seconds = totals["seconds"]
    memory = memory_text(totals)
    return (
        f"mode rank (objective rank, {negatives} negatives, batch 1): {totals['steps']} steps in {seconds:.1f} s: "
        f"{seconds / max(1, totals['steps']):.3f} s/step, {totals['samples'] / seconds:.2f} images/s, peak memory "
        f"{memory}, last loss {totals['loss']:.3f}"
    )


def report(mode: str, totals: dict[str, float], peak_tflops: float | None) -> str:
    seconds = totals["seconds"]
    flop_rate = totals["flops"] / seconds
    mfu = f"MFU {100 * flop_rate / (peak_tflops * 1e12):.1f} % of {peak_tflops:g} TFLOP/s" if peak_tflops else "MFU n/a"
    memory = memory_text(totals)
    return (
        f"mode {mode}: {totals['steps']} steps in {seconds:.1f} s: {totals['samples'] / seconds:.2f} samples/s, "
        f"{totals['tokens'] / seconds:.0f} tokens/s, {flop_rate / 1e12:.1f} TFLOP/s counted, {mfu}, "
        f"peak memory {memory}, data wait {totals['data_s']:.2f} s "
        f"({100 * totals['data_s'] / seconds:.1f} %), last loss {totals['loss']:.3f}"
    )


def millions(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.2f} M"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny-qwen3-vl instead of Qwen3-VL-4B (smoke test)")
    parser.add_argument("--modes", default="padded,packed", help="comma-separated: padded, packed, rank")
    parser.add_argument(
        "--negatives", default="all", type=lambda v: v if v == "all" else int(v), help="rank mode: all or K"
    )
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument("--batch-size", type=int, default=8, help="samples per optimizer step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a mode's timed steps after this")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(IMAGE_SIZE), metavar=("W", "H"))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--layers", type=int, default=None, help="cut the 4B config to N layers (CPU smoke test)")
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, ...)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="bf16 dense peak if the GPU is not in the table"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not cuda_available_or_say_so(args.device, "gpu_sft"):
        return 0
    import torch

    sys.path.insert(0, str(HERE))
    from bench_sft import parameter_counts

    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    peak = args.peak_tflops or (bf16_peak_tflops(name) if args.device.startswith("cuda") else None)
    model, processor, what = build_model(args.tiny, args.device, args.attn, args.layers)
    counts = parameter_counts(model)
    model = prepare_for_training(model, args.method, args.gradient_checkpointing)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"gpu_sft: {name}; {what}: {millions(total)} params ({millions(trainable)} trainable, {args.method}, "
        f"vision frozen); N_lm {millions(counts['lm'])}, N_vision {millions(counts['vision'])}; "
        f"batch {args.batch_size}, images {args.image_size[0]}x{args.image_size[1]}, {args.workers} data workers",
        flush=True,
    )
    for mode in args.modes.split(","):
        if mode not in ("padded", "packed", "rank"):
            raise SystemExit(f"gpu_sft: unknown mode {mode!r}; use padded, packed and/or rank")
        if mode == "rank":
            print(f"gpu_sft {report_rank(run_rank(model, processor, args), args.negatives)}", flush=True)
            continue
        print(f"gpu_sft {report(mode, run_mode(mode, model, processor, args, counts), peak)}", flush=True)
    print(f"gpu_sft: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
