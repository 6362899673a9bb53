"""Zero-shot evaluation throughput of Qwen3-VL-4B on one GPU: images/s in rank and generate mode.

The model is built as in ``gpu_sft.py`` (the real Qwen3-VL-4B config, random bf16 weights, on the GPU) and wrapped
in fgvlm's own backend (``Qwen3VLBackend``, what ``fgvlm eval`` uses), on synthetic 667 x 500 images:

- rank: the log-likelihood of all 102 Flowers102 class names per image, ``--rank-images`` images at each of
  ``--rank-batch-sizes`` images per call (as ``fgvlm eval --mode rank --set batch_size=N``: one left-padded prefill of
  the N images, then one forward of the candidates packed as a token trie per image, sharing its KV cache);
- generate: greedy answers of ``--max-new-tokens`` tokens, batches of ``--batch-size`` images.

Random weights give random answers; the cost per image is that of the real model (same shapes, same token counts;
generation always runs the full ``--max-new-tokens`` unless an end token comes first). Peak memory is printed too.

    python benchmarks/gpu_eval.py                      # ~2 minutes on an H100/H200
    python benchmarks/gpu_eval.py --device cpu --tiny  # smoke test of the code path on tiny-qwen3-vl

Without CUDA (and without ``--device cpu``) it prints ``no CUDA: skipped`` and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_sft import (  # noqa: E402  (benchmarks/ is not a package)
    IMAGE_SIZE,
    QUESTION,
    build_model,
    class_names,
    cuda_available_or_say_so,
    millions,
    synthetic_images,
)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_rank(
    backend: Any, images: list[Any], names: list[str], batch: int, device: str, max_seconds: float
) -> tuple[int, float]:
    """Images ranked and seconds, ``batch`` images per ``rank`` call (``fgvlm eval``'s ``batch_size`` in rank mode)."""
    backend.rank(images[:batch], QUESTION, names)  # warm-up; also computes the text-only prior, kept on the backend
    synchronize(device)
    start, done = time.perf_counter(), 0
    for first in range(0, len(images) - batch + 1, batch):
        backend.rank(images[first : first + batch], QUESTION, names)
        done += batch
        if time.perf_counter() - start > max_seconds:
            break
    synchronize(device)
    return done, time.perf_counter() - start


def time_generate(
    backend: Any, images: list[Any], batch: int, new_tokens: int, device: str, max_seconds: float
) -> tuple[int, float]:
    """Images answered and seconds, ``batch`` images per ``generate`` call."""
    backend.generate(images[:batch], [QUESTION] * batch, max_new_tokens=2)  # warm-up
    synchronize(device)
    start, done = time.perf_counter(), 0
    for first in range(0, len(images) - batch + 1, batch):
        backend.generate(images[first : first + batch], [QUESTION] * batch, max_new_tokens=new_tokens)
        done += batch
        if time.perf_counter() - start > max_seconds:
            break
    synchronize(device)
    return done, time.perf_counter() - start


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny-qwen3-vl instead of Qwen3-VL-4B (smoke test)")
    parser.add_argument("--layers", type=int, default=None, help="cut the 4B config to N layers (CPU smoke test)")
    parser.add_argument("--rank-images", type=int, default=32, help="images ranked at each batch size")
    parser.add_argument(
        "--rank-batch-sizes", type=int, nargs="+", default=[1, 8], metavar="N", help="images per rank call"
    )
    parser.add_argument("--generate-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="images per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a mode after this")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(IMAGE_SIZE), metavar=("W", "H"))
    parser.add_argument("--attn", default="sdpa", help="attention implementation (packed ranking needs sdpa/eager)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not cuda_available_or_say_so(args.device, "gpu_eval"):
        return 0
    import torch

    from fgvlm.models.families import backend_class

    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    model, processor, what = build_model(args.tiny, args.device, args.attn, args.layers)
    info = {"name": what, "family": "qwen3-vl", "num_parameters": sum(p.numel() for p in model.parameters())}
    backend = backend_class("qwen3-vl")(model, processor, info)
    names = class_names()
    images = synthetic_images(max(args.rank_images, args.generate_images), tuple(args.image_size))
    print(
        f"gpu_eval: {name}; {what}: {millions(info['num_parameters'])} params; images "
        f"{args.image_size[0]}x{args.image_size[1]}",
        flush=True,
    )
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for batch in args.rank_batch_sizes:
        done, seconds = time_rank(backend, images[: args.rank_images], names, batch, args.device, args.max_seconds)
        print(
            f"gpu_eval rank batch {batch}: {done / seconds:.2f} images/s ({done} images x {len(names)} names, "
            f"{seconds:.1f} s)",
            flush=True,
        )
    done, seconds = time_generate(
        backend, images[: args.generate_images], args.batch_size, args.max_new_tokens, args.device, args.max_seconds
    )
    print(
        f"gpu_eval generate batch {args.batch_size}: {done / seconds:.2f} images/s ({done} images, batch "
        f"{args.batch_size}, {args.max_new_tokens} new tokens, {seconds:.1f} s)"
    )
    if args.device.startswith("cuda"):
        print(f"gpu_eval: peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"gpu_eval: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
