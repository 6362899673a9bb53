"""The shared Hugging Face backend: ``generate``, prefix-cached ``rank`` and ``embed`` for any chat-templated VLM.

Everything that is the same across families lives here: prompt rendering through the processor's chat template,
left-padded batching, greedy generation, candidate log-likelihoods and pooled hidden states. A family file
(``fgvlm/models/families/``) overrides only the few hooks that differ (``_prefill``/``_continue`` for M-RoPE
positions or an encoder-decoder language model, where hidden states live, which token marks an image).

Ranking reuses the image+prompt prefix: one forward with the KV cache on per image, then the candidates'
continuations either packed in one row that shares the prefix cache (families with ``packed_rank``), or with the
cache repeated per candidate and one forward per group of equal-length candidates. ``rank(..., reuse_prefix=False)`` is
the brute-force reference (one full forward per candidate) that the tests and the benchmark compare against.

Public API beyond the three requests, for training code (heads, ``objective: classify``, a rank objective): ``encode``
and ``to_model`` (processor inputs on the model), ``hidden_states`` / ``pool`` / ``pooled_features`` (what ``embed``
computes, with gradients) and ``candidate_logprobs`` (what ``rank`` computes for one image, with gradients). Code
outside ``fgvlm.models`` uses these, never the underscore hooks (``tests/test_layers.py`` checks).
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fgvlm.models import chat
from fgvlm.models.base import POOLINGS, RankScores, VLMBackend
from fgvlm.models.helpers import BoundedCache, forward_takes_logits_to_keep, unwrap_model

__all__ = ["HFBackend", "Prefix", "BoundedCache", "copy_cache", "forward_takes_logits_to_keep", "unwrap_model"]

if TYPE_CHECKING:
    import torch
    from PIL import Image

PACKED_ATTENTION = ("sdpa", "eager")
"""Attention implementations that honour the 4-D additive mask packed ranking relies on (flash attention and
others take a padding mask only, so they fall back to the grouped path)."""


def copy_cache(cache: Any) -> Any:
    """A copy of a KV cache that continuations can extend while ``cache`` stays as it was, sharing its tensors.

    The dynamic caches a prefill returns (``DynamicCache``, ``EncoderDecoderCache``) grow by ``torch.cat`` and
    repeat by reassignment, never in place, so new containers are enough: the prefix's tensors are not copied
    per chunk, and a prefix computed with gradients keeps its graph (``copy.deepcopy`` refuses non-leaf tensors).
    """
    import torch

    shared: dict[int, Any] = {}
    seen: set[int] = set()
    stack = [cache]
    while stack:  # every tensor reachable through containers and attributes is shared, not copied
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            shared[id(obj)] = obj
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            stack.extend(vars(obj).values())  # cache and layer objects (classes, modules, functions: not walked)
    return copy.deepcopy(cache, shared)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Scores are computed in float32 from bf16/fp16/fp32 logits, and in float64 from a float64 model (the
    exactness tests of training on these scores run in float64)."""
    import torch

    return tensor if tensor.dtype == torch.float64 else tensor.float()


def check_pooling(pooling: str) -> None:
    """Refuse a pooling that is not one of ``POOLINGS``."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


@dataclass
class Prefix:
    """State after running a prompt (with or without its image) once: what the continuations start from."""

    last_logits: torch.Tensor
    """``[V]`` logits after the prompt's last token: they score each candidate's first token."""
    cache: Any
    """The KV cache (``DynamicCache``; ``EncoderDecoderCache`` for encoder-decoder models), batch 1."""
    length: int
    """Tokens already in the cache (the prompt, or the decoder start token for encoder-decoder models)."""
    extra: dict[str, Any]
    """Family state the continuation needs (M-RoPE deltas, encoder outputs and mask)."""


class HFBackend(VLMBackend):
    """A transformers ``AutoModelForImageTextToText`` + ``AutoProcessor`` pair answering the three requests."""

    family = "generic"
    nested_images = False
    """Pass images to the processor as one list per sample (Idefics2/SmolVLM) rather than one flat list."""
    packed_rank = False
    """Rank with all candidates packed in one row after the shared prefix cache (``_score_packed``): needs a
    text module that takes a 4-D additive attention mask and explicit position ids; otherwise the cache is
    repeated per candidate (``_score_grouped``). Used only under an attention implementation in ``PACKED_ATTENTION``."""
    group_size = 16
    """Grouped path: candidates per forward (each holds its own copy of the prefix KV cache, so this bounds memory)."""

    def __init__(self, model: Any, processor: Any, info: dict[str, Any]):
        # The model and processor may belong to a trainer: the backend changes neither (no eval(), no permanent
        # padding side); each request switches to eval mode and back (``_inference``) and pads per call.
        self.model = model
        self.processor = processor
        self.info = dict(info)
        self.family = self.info.get("family") or type(self).family
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._prior_cache: BoundedCache = BoundedCache()  # (prompt, candidates, weights) -> [C] text-only scores
        self._rendered: BoundedCache = BoundedCache()  # (prompt, candidates, with_image) -> text, answers, ids

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Run under ``torch.inference_mode`` in eval mode (no dropout), restoring a training model's mode after."""
        import torch

        training = self.model.training
        if training:
            self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if training:
                self.model.train()

    def _weights_version(self) -> int:
        """Changes whenever a trainable parameter is updated in place (an optimiser step): keys the prior cache."""
        return sum(p._version for p in self.model.parameters() if p.requires_grad)

    # -- prompt rendering (``fgvlm.models.chat``) ------------------------------------------------------------------
    def build_messages(self, prompt: str, answer: str | None = None, with_image: bool = True) -> list[dict]:
        """The chat conversation for ``prompt`` (one image first, then the question), optionally answered."""
        return chat.build_messages(prompt, answer, with_image=with_image)

    def render_prompt(self, prompt: str, with_image: bool = True) -> str:
        """The exact text the model sees for ``prompt`` (chat template, generation prompt added)."""
        return chat.render_prompt(self.processor, prompt, with_image=with_image, family=self.family)

    def render_answer(self, prompt: str, answer: str, with_image: bool = True) -> str:
        """The assistant turn as the template renders it (e.g. ``'rose<|im_end|>'``, ``' rose<end_of_utterance>'``)."""
        return chat.render_answer(self.processor, prompt, answer, with_image=with_image, family=self.family)

    def _render_candidates(
        self, prompt: str, candidates: tuple[str, ...], with_image: bool
    ) -> tuple[str, list[str], list[list[int]]]:
        """Rendered prompt, rendered answers and their token ids; kept per (prompt, candidates): ranking a
        dataset renders the same 102 answers for every image."""
        key = (prompt, candidates, with_image)
        cached = self._rendered.recall(key)
        if cached is not None:
            return cached
        prompt_text = self.render_prompt(prompt, with_image)
        suffixes, ids = [], []
        for name in candidates:
            suffix = self.render_answer(prompt, name, with_image)
            try:
                ids.append(chat.answer_token_ids(self.tokenizer, prompt_text, suffix))
            except ValueError as err:
                raise ValueError(f"{self.family}: {err}") from None
            suffixes.append(suffix)
        self._rendered[key] = (prompt_text, suffixes, ids)
        return prompt_text, suffixes, ids

    # -- inputs ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _padding(self) -> Iterator[None]:
        """A pad token while batching: a tokenizer without one (Llama/Mistral-style) pads with eos, else unk, as
        ``fgvlm.models.loading.ensure_pad_token`` does at load; restored after, since the tokenizer is not ours."""
        missing = self.tokenizer.pad_token is None
        if missing:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        try:
            yield
        finally:
            if missing:
                self.tokenizer.pad_token = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to_model(self, batch: Any) -> dict[str, Any]:
        """A processor batch (``encode``'s, or a collator's) on the model's device; floating tensors (pixels) also in
        its dtype."""
        moved = {}
        for key, value in dict(batch).items():
            if hasattr(value, "to"):
                value = value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            moved[key] = value
        return moved

    def encode(self, images: list[Image.Image] | None, texts: list[str]) -> dict[str, Any]:
        """Processor inputs for rendered ``texts`` (one image each, or text only), left-padded, on the model."""
        # Left padding keeps every prompt's last token at position -1: generation and `last` pooling rely on it.
        # Passed per call: the tokenizer's own padding side (a trainer may pad right) stays as it is.
        padding = {"return_tensors": "pt", "padding": True, "padding_side": "left"}
        with self._padding():
            if images is None:
                return self.to_model(self.tokenizer(texts, **padding))
            if len(images) != len(texts):
                raise ValueError(f"{self.family}: {len(images)} images but {len(texts)} prompts")
            images_arg = [[image] for image in images] if self.nested_images else list(images)
            return self.to_model(self.processor(images=images_arg, text=texts, **padding))

    # -- generate --------------------------------------------------------------------------------------------------
    def generate(
        self, images: list[Image.Image], prompts: list[str], max_new_tokens: int = 32, *, return_raw: bool = False
    ) -> list[str] | list[tuple[str, str]]:
        """Greedy answers, one per (image, prompt), batched with left padding; the new text only.

        Special tokens are dropped and a leading ``<think>...</think>`` block is stripped (``chat.strip_reasoning``):
        the answer is what answer matching sees. ``return_raw=True`` returns ``(answer, raw)`` pairs, ``raw`` being
        the decoded text before stripping the reasoning block (equal to ``answer`` when there was none).

        Batched output equals one-at-a-time output for families whose processor pads the whole prompt
        (Qwen, Idefics2, SmolVLM). InstructBLIP's processor prepends its query tokens outside the padding, so only
        batches of identical prompts are guaranteed to match one-at-a-time answers there.
        """
        inputs = self.encode(images, [self.render_prompt(p) for p in prompts])
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:  # as in _padding: eos, else unk
            pad_id = (
                self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.unk_token_id
            )
        with self._inference():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        return self.decode(self._new_tokens(output, inputs), return_raw=return_raw)

    def decode(self, new_tokens: Any, *, return_raw: bool = False) -> list[str] | list[tuple[str, str]]:
        """Generated ids ``[B, T]`` -> answers: special tokens dropped, whitespace and a leading reasoning block
        stripped (``(answer, raw)`` pairs with ``return_raw``, ``raw`` keeping the reasoning block)."""
        raw = [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        answers = [chat.strip_reasoning(text) for text in raw]
        return list(zip(answers, raw, strict=True)) if return_raw else answers

    def _new_tokens(self, output: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Generated ids without the prompt (decoder-only models echo the prompt; encoder-decoder ones do not)."""
        return output[:, inputs["input_ids"].shape[1] :]

    # -- rank ------------------------------------------------------------------------------------------------------
    def rank(
        self,
        images: list[Image.Image],
        prompt: str,
        candidates: list[str],
        reuse_prefix: bool = True,
        candidate_batch: int = 128,
    ) -> RankScores:
        """Log-likelihood of every candidate as the assistant's answer to ``prompt`` about each image.

        With ``reuse_prefix`` (the default) the image+prompt runs once per image and its KV cache is shared by
        all candidates, ``candidate_batch`` continuations per forward; without it every candidate runs a full
        forward (the slow reference). ``prior_subtracted`` subtracts the text-only log-likelihood, computed once
        per (prompt, candidates) and kept on the backend until a trainable weight changes.

        Images are scored one prefix at a time: passing several images batches the candidates, not the image
        prefill (each image's cache is batch 1), so a larger eval ``batch_size`` groups images per progress and
        record step without running their prefixes together.
        """
        import torch

        if not candidates:
            raise ValueError(f"{self.family}: rank needs at least one candidate")
        prompt_text, suffixes, cont_ids = self._render_candidates(prompt, tuple(candidates), with_image=True)
        rows = []
        for image in images:
            if reuse_prefix:
                with self._inference():
                    rows.append(self.candidate_logprobs(image, prompt, candidates, candidate_batch)[0].cpu())
            else:
                rows.append(self._score_brute_force([image], prompt_text, suffixes, cont_ids))
        summed = torch.stack(rows) if rows else torch.zeros(0, len(candidates))
        num_tokens = [len(ids) for ids in cont_ids]
        prior = self._prior(prompt, candidates, reuse_prefix, candidate_batch)
        mean = summed / torch.tensor(num_tokens, dtype=summed.dtype)
        return RankScores(sum=summed, mean=mean, prior_subtracted=summed - prior, num_tokens=num_tokens)

    def candidate_logprobs(
        self, image: Image.Image, prompt: str, candidates: list[str], candidate_batch: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability ``[C]`` (float32) and token count ``[C]`` (long) of every candidate as the answer to
        ``prompt`` about ``image``, on the model's device, with gradients when autograd is on.

        What ``rank`` computes per image (it calls this under inference mode, in eval mode): one prefill of
        image + prompt with the KV cache on, then the candidates' tokens after it, packed in one row sharing the
        prefix cache (``packed_rank`` families under sdpa/eager attention; ``candidate_batch`` candidates per
        forward) or by groups of equal length. Nothing is detached and no mode is switched: called in a training
        step, the model runs in its current mode (dropout on in train mode) and ``sum.backward()`` reaches the
        weights. ``sum / count`` is the per-token mean; the same ``prompt`` and ``candidates`` render the same
        tokens as ``rank`` and ``SFTCollator``.
        """
        import torch

        if not candidates:
            raise ValueError(f"{self.family}: candidate_logprobs needs at least one candidate")
        prompt_text, _, cont_ids = self._render_candidates(prompt, tuple(candidates), with_image=True)
        summed = self._score_from_prefix(self._prefill(self.encode([image], [prompt_text])), cont_ids, candidate_batch)
        return summed, torch.tensor([len(ids) for ids in cont_ids], device=summed.device)

    def _prior(self, prompt: str, candidates: list[str], reuse_prefix: bool, candidate_batch: int) -> torch.Tensor:
        """``[C]`` log-likelihood of each candidate given the prompt without the image (cached per prompt+set)."""
        key = (prompt, tuple(candidates), self._weights_version())
        prompt_text, suffixes, cont_ids = self._render_candidates(prompt, key[1], with_image=False)
        if not reuse_prefix:
            return self._score_brute_force(None, prompt_text, suffixes, cont_ids)
        prior = self._prior_cache.recall(key)
        if prior is None:
            with self._inference():
                prefix = self._prefill(self.encode(None, [prompt_text]))
                prior = self._prior_cache[key] = self._score_from_prefix(prefix, cont_ids, candidate_batch).cpu()
        return prior

    def _score_from_prefix(self, prefix: Prefix, cont_ids: list[list[int]], candidate_batch: int) -> torch.Tensor:
        """``[C]`` summed log-probs (float32, on the prefix's device) of the continuations after one cached prefix.

        The first token of every candidate is scored by the prefix's last logits; the rest run in packs of at most
        ``candidate_batch`` candidates (``_score_packed``) or, for families without packing or under another
        attention implementation, in groups of equal length (``_score_grouped``). Differentiable: no mode switch,
        no detaching (callers choose inference mode).
        """
        import torch

        first = torch.log_softmax(at_least_float32(prefix.last_logits), dim=-1)
        scores = first[torch.tensor([ids[0] for ids in cont_ids], device=first.device)]
        rest = [index for index, ids in enumerate(cont_ids) if len(ids) > 1]  # one-token candidates are done
        score = self._score_packed if self.uses_packed_rank else self._score_grouped
        for start in range(0, len(rest), candidate_batch):
            chunk = torch.tensor(rest[start : start + candidate_batch], device=scores.device)
            scores = scores.index_add(0, chunk, score(prefix, [cont_ids[i] for i in chunk.tolist()]).to(scores.device))
        return scores

    @property
    def uses_packed_rank(self) -> bool:
        """Packed ranking needs the family's support and an attention that applies a 4-D additive mask."""
        return self.packed_rank and getattr(self.model.config, "_attn_implementation", None) in PACKED_ATTENTION

    def _score_packed(self, prefix: Prefix, cont_ids: list[list[int]]) -> torch.Tensor:
        """``[n]`` log-probs of tokens 2..k of ``n`` candidates packed in ONE row after the prefix.

        The prefix's KV cache is shared instead of repeated per candidate: a 4-D additive mask lets each packed
        token see the whole prefix and, causally, its own candidate's earlier tokens only, and positions restart at
        the prefix's end for every candidate. So each candidate computes exactly what it would alone, without
        padding, in one forward whatever the lengths.
        """
        import torch

        inputs = [ids[:-1] for ids in cont_ids]  # tokens 1..k-1 go in; their logits score tokens 2..k
        tokens = torch.tensor([t for ids in inputs for t in ids], device=self.device)
        targets = torch.tensor([t for ids in cont_ids for t in ids[1:]], device=self.device)
        segment = torch.cat([torch.full((len(ids),), j, device=self.device) for j, ids in enumerate(inputs)])
        offsets = torch.cat([torch.arange(len(ids), device=self.device) for ids in inputs])
        same = segment[:, None] == segment[None, :]
        allowed = torch.cat(
            [same.new_ones(len(tokens), prefix.length), same & (offsets[None, :] <= offsets[:, None])], dim=1
        )
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        cache = copy_cache(prefix.cache)  # the packed tokens extend a copy; the prefix stays intact
        positions = self._continuation_positions(prefix, offsets.unsqueeze(0))
        out = self._text_module(prefix)(
            input_ids=tokens.unsqueeze(0),
            attention_mask=mask[None, None],
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        logprobs = torch.log_softmax(at_least_float32(out.logits[0]), dim=-1)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return torch.zeros(len(cont_ids), device=picked.device, dtype=picked.dtype).index_add_(0, segment, picked)

    def _score_grouped(self, prefix: Prefix, cont_ids: list[list[int]]) -> torch.Tensor:
        """``[n]`` log-probs of tokens 2..k with the prefix cache repeated per candidate, one forward per length.

        Groups of equal token length carry no padding: 102 Flowers102 names fall into a handful of lengths, and
        padding to the longest name would more than double the tokens. A group runs in chunks of at most
        ``group_size`` candidates, since each one holds a full copy of the prefix cache.
        """
        import torch

        by_length: dict[int, list[int]] = {}
        for index, ids in enumerate(cont_ids):
            by_length.setdefault(len(ids), []).append(index)
        chunks = [
            group[start : start + self.group_size]
            for group in by_length.values()
            for start in range(0, len(group), self.group_size)
        ]
        scores = torch.zeros(
            len(cont_ids), device=self.device, dtype=at_least_float32(torch.zeros(0, dtype=self.dtype)).dtype
        )
        for chunk in chunks:
            tokens = torch.tensor([cont_ids[i] for i in chunk], device=self.device)
            cache = copy_cache(prefix.cache)  # each group extends its own copy of the prefix
            cache.batch_repeat_interleave(len(chunk))
            logprobs = torch.log_softmax(at_least_float32(self._continue(prefix, cache, tokens[:, :-1])), dim=-1)
            picked = logprobs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
            # .to: under device_map='auto' the logits may sit on another device than the first parameters
            scores = scores.index_add(0, torch.tensor(chunk, device=self.device), picked.sum(dim=1).to(self.device))
        return scores

    def _forward(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        """One forward of processor ``inputs`` (with or without pixels); the output carries the language model's
        ``logits``, ``cache`` and ``hidden_states``."""
        return self.model(**inputs, **kwargs)

    def _last_logits_only(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """``logits_to_keep=1`` when the module ``_forward`` runs for ``inputs`` takes it: prefill and embed need
        the last position's logits at most, not ``[L, V]`` for the whole prompt."""
        return {"logits_to_keep": 1} if forward_takes_logits_to_keep(type(unwrap_model(self.model))) else {}

    def _prefill(self, inputs: dict[str, Any]) -> Prefix:
        """Run the prompt (batch 1) once with the cache on (in the caller's grad and train mode)."""
        out = self._forward(inputs, use_cache=True, **self._last_logits_only(inputs))
        return Prefix(out.logits[0, -1], out.cache, inputs["input_ids"].shape[1], {})

    def _continue(self, prefix: Prefix, cache: Any, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, L, V]`` of ``n`` equal-length continuations ``ids`` after the repeated prefix ``cache``."""
        import torch

        n, length = ids.shape
        mask = torch.ones(n, prefix.length + length, dtype=torch.long, device=ids.device)
        offsets = torch.arange(length, device=ids.device).unsqueeze(0).expand(n, length)
        positions = self._continuation_positions(prefix, offsets)
        out = self._text_module(prefix)(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        return out.logits

    def _continuation_positions(self, prefix: Prefix, offsets: torch.Tensor) -> torch.Tensor:
        """Position ids of continuation tokens at ``offsets`` ``[n, L]`` (0 = first token after the prefix)."""
        return offsets + prefix.length

    def _text_module(self, prefix: Prefix) -> Any:
        """The module that continues from the cache with token ids only (the whole model unless a family says)."""
        return self.model

    def _score_brute_force(
        self, images: list[Image.Image] | None, prompt_text: str, suffixes: list[str], cont_ids: list[list[int]]
    ) -> torch.Tensor:
        """``[C]`` summed log-probs with one full, cache-free forward of prompt + answer per candidate."""
        import torch

        scores = []
        with self._inference():
            for suffix, ids in zip(suffixes, cont_ids, strict=True):
                inputs = self._encode_answered(images, prompt_text, suffix)
                text = prompt_text + suffix
                tail = inputs["input_ids"][0, -len(ids) :].tolist()
                if tail != ids:
                    raise ValueError(f"{self.family}: {text!r} does not end with the continuation tokens {ids}")
                logits = self._forward(inputs, use_cache=False).logits[0, -len(ids) - 1 : -1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                scores.append(logprobs.gather(-1, torch.tensor(ids, device=logprobs.device)[:, None]).sum().cpu())
        return torch.stack(scores)

    def _encode_answered(self, images: list[Image.Image] | None, prompt_text: str, suffix: str) -> dict[str, Any]:
        """Inputs of the prompt followed by one rendered answer, for the brute-force reference."""
        return self.encode(images, [prompt_text + suffix])

    # -- embed ---------------------------------------------------------------------------------------------------
    def embed(self, images: list[Image.Image], prompt: str, pooling: str = "mean", layer: int = -1) -> torch.Tensor:
        """Pooled language-model hidden states ``[B, D]`` (float32, CPU) of ``layer`` for each image.

        ``pooled_features`` of the chat-templated ``prompt`` with each image, under inference mode in eval mode.
        """
        check_pooling(pooling)
        inputs = self.encode(images, [self.render_prompt(prompt)] * len(images))
        with self._inference():
            return self.pooled_features(inputs, pooling, layer).cpu()

    def hidden_states(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The language model's hidden states of processor ``inputs`` (embeddings output first; the encoder's for an
        encoder-decoder model): one cache-free forward in the caller's grad and train mode."""
        out = self._forward(inputs, output_hidden_states=True, use_cache=False, **self._last_logits_only(inputs))
        return self._hidden_states(out)

    def pool(self, inputs: dict[str, Any], hidden: torch.Tensor, pooling: str) -> torch.Tensor:
        """``[B, L, D]`` hidden states -> ``[B, D]`` (differentiable). ``last``: the last position (the prompt's last
        token under left padding); ``mean``: every real (unpadded) token of ``inputs["attention_mask"]``;
        ``image-mean``: the image tokens only."""
        check_pooling(pooling)
        if pooling == "last":
            return hidden[:, -1]
        if pooling == "mean":
            weights = inputs["attention_mask"].to(hidden.dtype)
        else:
            weights = (inputs["input_ids"] == self.image_token_id).to(hidden.dtype)
        return (hidden * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1)

    def pooled_features(self, inputs: dict[str, Any], pooling: str = "mean", layer: int = -1) -> torch.Tensor:
        """What ``embed`` returns, for processor ``inputs`` already on the model (``encode``, or a collator's batch
        through ``to_model``): ``[B, D]`` float32 on the model's device, with gradients when autograd is on.

        ``layer`` indexes ``hidden_states`` (0 = embeddings, -1 = final, already normed); the states are pooled in
        float32 (``pool``), so training features equal ``embed``'s at any model dtype.
        """
        check_pooling(pooling)
        states = self.hidden_states(inputs)
        if not -len(states) <= layer < len(states):
            raise ValueError(f"layer {layer} out of range: the language model has {len(states)} hidden states")
        return self.pool(inputs, states[layer].float(), pooling)

    def _hidden_states(self, out: Any) -> tuple[torch.Tensor, ...]:
        """The language model's hidden states (embeddings output first) from a ``_forward`` output."""
        return out.hidden_states

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        token = getattr(config, "image_token_id", None)
        return token if token is not None else config.image_token_index

    # -- describe --------------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The loader's info (with its ``num_parameters``) plus family, dtype, device and a rendered example prompt."""
        return {
            **self.info,
            "family": self.family,
            "backend": f"{type(self).__module__}:{type(self).__name__}",
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "prompt_example": self.render_prompt("{question}"),
        }
