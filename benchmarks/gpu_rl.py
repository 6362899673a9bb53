"""RL (``objective: rl``, GRPO) on Qwen3-VL-4B on one GPU: rollouts/s, step time for G = 8, LoRA and full, peak memory.

The model is Qwen3-VL-4B from its real config with random bf16 weights (``gpu_sft.build_model``: same shapes, so the
same FLOPs and memory as the checkpoint, no download), synthetic 667 x 500 images (~336 visual tokens). Per method
(lora, then full; vision tower frozen as ``fgvlm rl`` does by default):

- rollouts: ``fgvlm.models.sampling.sample_answers``, G = 8 answers per image from one shared prefill, up to
  ``--new-tokens`` tokens; rollouts/s = answers / s;
- a step: ``RLModel.forward`` (the rollouts, the reward, the right-padded training batch of images x G rows, the
  GRPO loss), backward and an AdamW step, as ``fgvlm rl`` runs it; the reward is a stand-in (1 when the first
  sampled token id is even: random weights name no class) so advantages are not all zero;
- peak GPU memory over the method's steps.

    python benchmarks/gpu_rl.py                          # lora and full, ~2 minutes on an H100/H200
    python benchmarks/gpu_rl.py --methods lora --images 4
    python benchmarks/gpu_rl.py --device cpu --tiny      # smoke test of the code path on tiny-qwen3-vl

Without CUDA (and without ``--device cpu``) it prints ``no CUDA: skipped`` and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUESTION = "What is the name of the flower in this image? Answer with the name only."


def stand_in_judge(record: Any, prompt: Any, tokens: list[int], finished: bool) -> tuple[Any, float]:
    from fgvlm.sft.objectives.rewards import Rollout

    return Rollout("", "", 1, None, None, finished), float(tokens[0] % 2 == 0)


def run_method(method: str, args: argparse.Namespace) -> str:
    """Rollout and step timings of one method on a freshly built model; the report line."""
    import torch
    from gpu_sft import build_model, cuda_available_or_say_so, prepare_for_training, synthetic_images

    from fgvlm.models.families import backend_class
    from fgvlm.models.sampling import sample_answers
    from fgvlm.sft.config import RLOptions
    from fgvlm.sft.data import InstructionRecord
    from fgvlm.sft.modeling import base_model
    from fgvlm.sft.objectives.rl_model import RLModel

    del cuda_available_or_say_so
    cuda = args.device.startswith("cuda")
    model, processor, what = build_model(args.tiny, args.device, "sdpa")
    model = prepare_for_training(model, method, False)
    backend = backend_class("qwen3-vl")(base_model(model), processor, {"family": "qwen3-vl"})
    images = synthetic_images(args.images * (args.steps + 1))
    text = backend.render_prompt(QUESTION)
    options = RLOptions(group_size=args.group, max_new_tokens=args.new_tokens)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator(device=backend.device).manual_seed(0)
    sample_answers(backend, images[0], text, args.group, args.new_tokens, generator=generator)  # warm-up
    start = time.perf_counter()
    answers = 0
    for image in images[: args.images]:
        answers += len(sample_answers(backend, image, text, args.group, args.new_tokens, generator=generator).tokens)
    if cuda:
        torch.cuda.synchronize()
    rollouts_per_s = answers / (time.perf_counter() - start)
    rl = RLModel(model, backend, options, stand_in_judge, 0, None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    times = []
    for step in range(args.steps + 1):  # step 0 is a warm-up
        batch = images[step * args.images : (step + 1) * args.images]
        records = [InstructionRecord(id=f"s{step}-{i}", image=im, question=QUESTION, answer="-", task="open-qa",
                                     label=0) for i, im in enumerate(batch)]  # fmt: skip
        start = time.perf_counter()
        rl.step = step
        loss = rl(records, batch, [None] * len(batch), [text] * len(batch))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    metrics = rl.drain_metrics()
    del model, backend, rl, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    step_s = sum(times[1:]) / max(1, len(times) - 1)
    return (
        f"method {method}: {what}, {trainable:.1f} M trainable; rollouts {rollouts_per_s:.1f} answers/s "
        f"(G={args.group}, <= {args.new_tokens} tokens); step {step_s:.2f} s for {args.images} images x G "
        f"({args.images * args.group / step_s:.1f} rollouts/s trained); answer length "
        f"{metrics.get('answer_length', float('nan')):.1f}; peak {peak:.1f} GiB"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny-qwen3-vl instead of Qwen3-VL-4B (smoke test)")
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--images", type=int, default=2, help="images per step (each gets G answers)")
    parser.add_argument("--group", type=int, default=8, help="G, answers per image")
    parser.add_argument("--new-tokens", type=int, default=16, help="longest answer")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method (after one warm-up)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from gpu_sft import cuda_available_or_say_so

    if not cuda_available_or_say_so(args.device, "gpu_rl"):
        return 0
    import torch

    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"gpu_rl: {name}", flush=True)
    for method in args.methods.split(","):
        if method not in ("lora", "full"):
            raise SystemExit(f"gpu_rl: unknown method {method!r}; use lora and/or full")
        print(f"gpu_rl {run_method(method, args)}", flush=True)
    print(f"gpu_rl: done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
