"""RL rollouts: ``n`` sampled answers per image from ONE prefill of image + prompt, its KV cache expanded.

The image + prompt prefix runs once per image (the backend's ``_prefill``, as rank mode does); its cache is copied
(tensors shared) and repeated ``n`` times, and the ``n`` answers decode together, one token per forward, through the
backend's ``_continue`` (which places each token at its position after the prefix, M-RoPE included). So the prefill
(the vision tower and the prompt: most of the cost for answers of a few tokens) is paid once, not ``n`` times as
``n`` independent ``generate`` calls would.

What may be sampled is the family's business: the record's ``never_sample`` tokens (image, video and
vision-boundary placeholders) and the config's image/video token ids get probability 0, since a sampled placeholder
makes the training forward fail ("Image features and image tokens do not match"). An answer ends at the FIRST of
any stop id (the generation config's eos ids: tiny Qwen3-VL has [2, 0]); one that reaches ``max_new_tokens``
without a stop is reported unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import copy_cache

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from fgvlm.models.backend import HFBackend


@dataclass
class Samples:
    """The ``n`` answers of one image: token ids up to and including the first stop id."""

    tokens: list[list[int]]
    finished: list[bool]
    """Whether the answer ended with a stop id (False: cut off by ``max_new_tokens``)."""


def stop_token_ids(backend: HFBackend) -> list[int]:
    """Ids that end an answer: the generation config's eos ids (one or several) and the tokenizer's eos."""
    ids = getattr(backend.model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = backend.tokenizer.eos_token_id
    return sorted({*ids, *([eos] if eos is not None else [])})


def never_sampled_ids(backend: HFBackend) -> list[int]:
    """Token ids a rollout may not draw: the family record's ``never_sample`` tokens present in the vocabulary, and
    the model config's image / video token ids."""
    from fgvlm.models.families import get_family

    tokenizer, config = backend.tokenizer, backend.model.config
    vocab = tokenizer.get_vocab()
    ids = {vocab[token] for token in get_family(backend.family).never_sample if token in vocab}
    for key in ("image_token_id", "image_token_index", "video_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int) and 0 <= value < len(tokenizer):
            ids.add(value)
    return sorted(ids)


def draw(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    banned: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``[n, V]``: banned ids removed, softmax at ``temperature``, nucleus ``top_p``
    (the smallest set of tokens whose probability reaches ``top_p``), drawn with ``generator``."""
    import torch

    scores = logits.float() / temperature
    scores[:, banned] = float("-inf")
    probs = torch.softmax(scores, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # the mass before the token already reaches p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def sample_answers(
    backend: HFBackend,
    image: Image.Image,
    prompt_text: str,
    n: int,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Samples:
    """``n`` answers to the rendered ``prompt_text`` about ``image`` from one shared prefill (no gradients, eval
    mode: the backend's inference context). ``generator`` (on the model's device) makes the draw reproducible."""
    import torch

    stops = torch.tensor(stop_token_ids(backend), device=backend.device)
    banned = torch.tensor(never_sampled_ids(backend), dtype=torch.long, device=backend.device)
    with backend._inference():
        prefix = backend._prefill(backend.encode([image], [prompt_text]))
        cache = copy_cache(prefix.cache)
        cache.batch_repeat_interleave(n)
        logits = prefix.last_logits[:1].expand(n, -1)  # [1, V]: one image
        done = torch.zeros(n, dtype=torch.bool, device=backend.device)
        steps: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = draw(logits, temperature, top_p, banned, generator)
            token = torch.where(done, stops[0], token)  # an ended answer feeds a stop id (never read)
            steps.append(token)
            done |= torch.isin(token, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            logits = backend._continue(prefix, cache, token[:, None], start=step)[:, -1]
    return _cut_at_stops(torch.stack(steps, dim=1).tolist(), set(stops.tolist()))


def _cut_at_stops(rows: list[list[int]], stops: set[int]) -> Samples:
    """Each row up to and including its first stop id (everything after it is dropped)."""
    tokens, finished = [], []
    for row in rows:
        end = next((i for i, token in enumerate(row) if token in stops), None)
        tokens.append(row if end is None else row[: end + 1])
        finished.append(end is not None)
    return Samples(tokens, finished)


def sample_independently(
    backend: HFBackend, image: Image.Image, prompt_text: str, n: int, max_new_tokens: int, **sampling: Any
) -> list[list[int]]:
    """The naive reference the benchmark times: ``n`` separate ``model.generate(do_sample=True)`` calls, each
    running the image + prompt prefill again."""
    inputs = backend.encode([image], [prompt_text])
    answers = []
    with backend._inference():
        for _ in range(n):
            output = backend.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                pad_token_id=stop_token_ids(backend)[0],
                **sampling,
            )
            answers.append(backend._new_tokens(output, inputs)[0].tolist())
    return answers
