"""Per-item speed of the two paths every run goes through many times: answer matching and synthflowers drawing.

- ``match_answers_per_s``: lenient ``match_answer`` on typical free-text answers against the 102 Flowers102 names
  and aliases (the matcher is built once and reused, as evaluation does). 10,000/s keeps matching invisible next
  to a model.
- ``synthflowers_ms_per_image``: drawing one 64-px synthflowers image; 5 ms keeps the synthetic data far cheaper than
  any backbone forward, so tests and benchmarks on it are bound by the model, not by the data.
Best of three timed passes each (the least disturbed by other work on the machine). These were test assertions
once; a busy machine made the suite fail, so they live here.
"""

from __future__ import annotations

import time
from typing import Any

ANSWERS = [
    "The flower in this image is a pink primrose.",
    "lotus",
    "Answer: water lily",
    "tree mallow",
    "It's a gerbera",
] * 1000
IMAGES = 100


def best_time(fn: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[dict]:
    from fgvlm.data.flowers102 import Flowers102
    from fgvlm.data.synthflowers import SynthFlowers
    from fgvlm.eval.matching import match_answer

    flowers = Flowers102(root="/nonexistent")  # naming data only; no files are read
    names, aliases = flowers.class_names, flowers.aliases
    match_answer("warm up", names, aliases)

    def match_all() -> None:
        for answer in ANSWERS:
            match_answer(answer, names, aliases)

    rate = len(ANSWERS) / best_time(match_all)
    train = SynthFlowers(seed=1).split("train")
    train[0]

    def draw_all() -> None:
        for index in range(IMAGES):
            train[index]

    per_image_ms = best_time(draw_all) / IMAGES * 1000
    return [
        {"name": "match_answers_per_s", "value": rate, "op": ">=", "target": 10_000,
         "detail": f"lenient match_answer, 102 names, {len(ANSWERS)} typical answers"},
        {"name": "synthflowers_ms_per_image", "value": per_image_ms, "op": "<=", "target": 5,
         "detail": f"{IMAGES} default 64-px synthflowers images drawn"},
    ]  # fmt: skip
