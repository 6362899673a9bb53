"""What a step of ``objective: rank`` costs against a step of ``objective: generate``: same model, same images.

``rank_objective_step_over_generate_step``: CPU seconds of one optimizer step of the rank objective with ALL 102
Flowers102 names as candidates / one step of the generate objective (teacher-forced answer, loss on the answer
tokens), both built by ``fgvlm sft``'s own setup and objective classes (``load_setup``, ``Objective.prepare``,
``collator``, ``loss``; AdamW, backward, step), on ``small-qwen3-vl`` (28 M params, random, vision tower frozen: the
default), real Flowers102 images at its 224-px budget, ``BATCH`` images per step, 1 thread. Each variant runs
``WARMUP`` untimed steps then ``TIMED`` timed ones over the same images, in ``ROUNDS`` interleaved rounds; each step's
fastest round counts (process CPU time, robust to neighbours on a shared machine).

Where the time goes (printed): a rank step runs, per image, the image+prompt prefix once (as generate does) and
then one packed row of every candidate's tokens after the shared KV cache, forward and backward; the generate step
runs the prefix and the answer's few tokens. The ratio is therefore about (prefix + candidate tokens) / (prefix +
answer tokens), plus the frozen vision tower both pay. On Qwen3-VL-4B at Flowers102's native resolution the prefix
is ~360 tokens (336 image tokens), the 102 names ~510 candidate tokens: ~2.4x the tokens of a generate step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLOWERS_MINI = REPO.parent / "shared" / "data" / "flowers102-mini"
THREADS = 1
BATCH = 4
WARMUP = 1
TIMED = 2
ROUNDS = 2


def objective_setup(objective: str, model_dir: str, run_dir: Path) -> tuple[Any, Any]:
    """(setup, objective) of ``fgvlm sft`` for ``objective`` on the mini Flowers102 train split."""
    from fgvlm.config import resolve_config
    from fgvlm.runs import RunDir
    from fgvlm.sft.config import SFTConfig
    from fgvlm.sft.objectives import objective_class
    from fgvlm.sft.setup import load_setup

    flags = {"model.name": model_dir, "data.dataset": "flowers102", "data.root": str(FLOWERS_MINI)}
    sets = [f"objective={objective}", "train.lr=1e-4", "report_to=none", f"limit={BATCH * (WARMUP + TIMED)}"]
    cfg = resolve_config(SFTConfig, None, flags, sets)
    setup = load_setup(cfg, RunDir(run_dir))
    for record in setup.train_records:  # decode once: both sides pay the processor, not the JPEG
        record.image = record.load_image()
    instance = objective_class(objective)(setup)
    instance.prepare()
    return setup, instance


def step_seconds(setup: Any, objective: Any, optimizer: Any) -> tuple[list[float], list[int]]:
    """CPU seconds and tokens (prefix + scored continuation, summed over the batch) of each step."""
    import torch

    model = objective.training_model.train()
    seconds, tokens = [], []
    records = setup.train_records
    for step in range(WARMUP + TIMED):
        start = time.process_time()
        batch = objective.collator(records[step * BATCH : (step + 1) * BATCH])
        loss = objective.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.process_time() - start)
        tokens.append(batch_tokens(setup, batch))
        torch.manual_seed(step)
    return seconds[WARMUP:], tokens[WARMUP:]


def batch_tokens(setup: Any, batch: dict[str, Any]) -> int:
    """Tokens a step runs through the language model (generate: the padded batch's real tokens; rank: each image's
    prompt plus every candidate's rendered answer)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    backend, total = setup.backend, 0
    for image, prompt, candidates in zip(batch["images"], batch["prompts"], batch["candidates"], strict=True):
        text = backend.render_prompt(prompt)
        total += int(backend.encode([image], [text])["input_ids"].shape[1])
        total += sum(len(backend.tokenizer(backend.render_answer(prompt, name))["input_ids"]) for name in candidates)
    return total


def run() -> list[dict[str, Any]]:
    import tempfile

    import torch

    from fgvlm.models.tiny import cached_tiny_model

    if not (FLOWERS_MINI / "setid.mat").is_file():
        raise FileNotFoundError(f"bench_rank_objective needs the real Flowers102 mini set at {FLOWERS_MINI}")
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        model_dir = str(cached_tiny_model("small-qwen3-vl", "qwen3-vl", size="small"))
        with tempfile.TemporaryDirectory() as tmp:
            variants = {name: objective_setup(name, model_dir, Path(tmp) / name) for name in ("generate", "rank")}
            optimizers = {
                name: torch.optim.AdamW([p for p in obj.training_model.parameters() if p.requires_grad], lr=1e-4)
                for name, (_, obj) in variants.items()
            }
            rounds: dict[str, list[list[float]]] = {name: [] for name in variants}
            tokens: dict[str, list[int]] = {}
            for _ in range(ROUNDS):
                for name, (setup, objective) in variants.items():
                    seconds, tokens[name] = step_seconds(setup, objective, optimizers[name])
                    rounds[name].append(seconds)
    finally:
        torch.set_num_threads(threads)
    fastest = {name: sum(min(times) for times in zip(*runs, strict=True)) for name, runs in rounds.items()}
    ratio = fastest["rank"] / fastest["generate"]
    token_ratio = sum(tokens["rank"]) / sum(tokens["generate"])
    return [
        {
            "name": "rank_objective_step_over_generate_step",
            "value": ratio,
            "op": "<=",
            "target": 4.0,
            "detail": f"rank objective (all 102 names) {fastest['rank'] / TIMED:.3f} vs generate "
            f"{fastest['generate'] / TIMED:.3f} CPU s per step of {BATCH} images; tokens through the language model "
            f"{sum(tokens['rank']) // TIMED} vs {sum(tokens['generate']) // TIMED} per step ({token_ratio:.1f}x); "
            f"small-qwen3-vl, Flowers102 mini images, {THREADS} thread",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
