"""What sharing the image + prompt prefill across an RL group saves: ``rl_rollout_speed_over_naive``.

G = 8 sampled answers per image with the prefix run once and its KV cache expanded to the group
(``fgvlm.models.sampling.sample_answers``, what ``objective: rl`` samples with) against 8 independent
``model.generate(do_sample=True)`` calls per image (``sample_independently``: the prefill paid 8 times), same model
(``small-qwen3-vl``, random), same real Flowers102 images at its pixel budget, the same number of new tokens
(``max_new_tokens`` with the stop ids never reached on a random model). CPU process time, 1 thread, the faster of
``ROUNDS`` interleaved rounds per side.
"""

from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOWERS_MINI = REPO.parent / "shared" / "data" / "flowers102-mini"
GROUP = 8
IMAGES = 2
NEW_TOKENS = 8
ROUNDS = 2
QUESTION = "What is the name of the flower in this image? Answer with the name only."


def run() -> list[dict]:
    import torch

    from fgvlm.data import create_dataset
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend
    from fgvlm.models.sampling import sample_answers, sample_independently

    if not FLOWERS_MINI.is_dir():
        raise FileNotFoundError(f"bench_rl needs the real Flowers102 mini set at {FLOWERS_MINI}")
    torch.set_num_threads(1)
    backend = load_backend(ModelConfig(name="small-qwen3-vl"))
    backend.model.generation_config.eos_token_id = None  # never stop early: both sides decode NEW_TOKENS tokens
    split = create_dataset(dataset="flowers102", root=str(FLOWERS_MINI)).split("train")
    images = [split[i].image for i in range(IMAGES)]
    text = backend.render_prompt(QUESTION)
    best = {"shared": float("inf"), "naive": float("inf")}
    for _ in range(ROUNDS):
        for side in ("shared", "naive"):
            start = time.process_time()
            for image in images:
                if side == "shared":
                    sample_answers(backend, image, text, GROUP, NEW_TOKENS, generator=torch.Generator().manual_seed(0))
                else:
                    sample_independently(backend, image, text, GROUP, NEW_TOKENS, min_new_tokens=NEW_TOKENS)
            best[side] = min(best[side], time.process_time() - start)
    ratio = best["naive"] / best["shared"]
    detail = (
        f"G={GROUP}, {IMAGES} images, {NEW_TOKENS} new tokens, small-qwen3-vl: shared prefix {best['shared']:.2f} s, "
        f"8 generate calls {best['naive']:.2f} s"
    )
    return [{"name": "rl_rollout_speed_over_naive", "value": ratio, "op": ">=", "target": 3.0, "detail": detail}]
