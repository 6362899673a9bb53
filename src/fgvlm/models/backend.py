"""The shared Hugging Face backend: ``generate``, prefix-cached ``rank`` and ``embed`` for any chat-templated VLM.

Everything that is the same across families lives here: prompt rendering through the processor's chat template,
left-padded batching, greedy generation, candidate log-likelihoods and pooled hidden states. A family file
(``fgvlm/models/families/``) overrides only the few hooks that differ (``_prefill``/``_continue`` for M-RoPE
positions or an encoder-decoder language model, where hidden states live, which token marks an image).

Ranking reuses the image+prompt prefix: one left-padded forward of every image's prompt with the KV cache on, then
the candidates' continuations either packed as a token trie in one row per image that shares its prefix cache
(families with ``packed_rank``; ``fgvlm.models.trie``), or with the cache repeated per candidate and one forward per
group of equal-length candidates. Continuation positions follow each row's left padding as the family's language
model placed the prefix (``_continuation_positions``). ``rank(..., reuse_prefix=False)`` is the brute-force reference
(one full forward per image and candidate) that the tests and the benchmark compare against.

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
from fgvlm.models.flops import VLM_FORWARD_RULE, ModelUsage, forward_flops, parameter_counts, vision_patch_size
from fgvlm.models.helpers import BoundedCache, forward_takes_logits_to_keep, unwrap_model
from fgvlm.models.trie import candidate_trie

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
    """State after running ``B`` prompts (with or without their images) once, left-padded to one length: what the
    continuations start from."""

    last_logits: torch.Tensor
    """``[B, V]`` logits after each prompt's last token: they score each candidate's first token."""
    cache: Any
    """The KV cache (``DynamicCache``; ``EncoderDecoderCache`` for encoder-decoder models), batch ``B``."""
    length: int
    """Tokens per row already in the cache, padding included (the padded prompt, or the decoder start token for
    encoder-decoder models)."""
    mask: torch.Tensor
    """``[B, length]`` 1 for a real token, 0 for padding: continuations must not attend to the padded slots."""
    extra: dict[str, Any]
    """Family state the continuation needs (M-RoPE deltas, encoder outputs and mask)."""

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def pads(self) -> torch.Tensor:
        """``[B]`` padded slots per row (left padding): where a language model counts positions from the attention
        mask, a row's continuation starts this much earlier than ``length``."""
        return self.length - self.mask.sum(dim=1)


class HFBackend(VLMBackend):
    """A transformers ``AutoModelForImageTextToText`` + ``AutoProcessor`` pair answering the three requests."""

    family = "generic"
    nested_images = False
    """Pass images to the processor as one list per sample (Idefics2/SmolVLM) rather than one flat list."""
    packed_rank = False
    """Rank with all candidates packed as a token trie in one row per image after the shared prefix cache
    (``_score_packed``): needs a text module that takes a 4-D additive attention mask and takes its positions from
    explicit position ids; otherwise the cache is repeated per candidate (``_score_grouped``). Used only under an
    attention implementation in ``PACKED_ATTENTION``."""
    group_size = 16
    """Grouped path: (image, candidate) rows per forward (each holds its own copy of an image's prefix KV cache, so
    this bounds memory)."""
    flops_rule = VLM_FORWARD_RULE

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
        self.usage = ModelUsage()
        """Tokens, LM-head positions and vision patches run so far (a run's cost block counts its share)."""
        self._parameter_counts: dict[str, int] | None = None

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
                batch = self.to_model(self.tokenizer(texts, **padding))
            elif len(images) != len(texts):
                raise ValueError(f"{self.family}: {len(images)} images but {len(texts)} prompts")
            else:
                images_arg = [[image] for image in images] if self.nested_images else list(images)
                batch = self.to_model(self.processor(images=images_arg, text=texts, **padding))
        self.usage.add_inputs(batch, vision_patch_size(self.model))  # every encoded batch is run once
        return batch

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
        new_tokens = self._new_tokens(output, inputs)
        generated = int((new_tokens != pad_id).sum())
        self.usage.generated_tokens += generated
        self.usage.head_positions += generated
        return self.decode(new_tokens, return_raw=return_raw)

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

        With ``reuse_prefix`` (the default) the images' image+prompt prefixes run in ONE left-padded forward and
        each image's KV cache is shared by all candidates, ``candidate_batch`` candidates per forward for all images
        together; without it every (image, candidate) runs a full forward of its own (the slow reference). So the
        number of images passed is the batch of a forward, as in ``generate``, and the scores equal those of one
        image at a time. ``prior_subtracted`` subtracts the text-only log-likelihood, computed once per (prompt,
        candidates) and kept on the backend until a trainable weight changes.
        """
        import torch

        if not candidates:
            raise ValueError(f"{self.family}: rank needs at least one candidate")
        prompt_text, suffixes, cont_ids = self._render_candidates(prompt, tuple(candidates), with_image=True)
        if not images:
            summed = torch.zeros(0, len(candidates))
        elif reuse_prefix:
            with self._inference():
                prefix = self._prefill(self.encode(list(images), [prompt_text] * len(images)))
                summed = self._score_from_prefix(prefix, cont_ids, candidate_batch).cpu()
        else:
            summed = torch.stack(
                [self._score_brute_force([image], prompt_text, suffixes, cont_ids) for image in images]
            )
        num_tokens = [len(ids) for ids in cont_ids]
        prior = self._prior(prompt, candidates, reuse_prefix, candidate_batch)
        mean = summed / torch.tensor(num_tokens, dtype=summed.dtype)
        return RankScores(sum=summed, mean=mean, prior_subtracted=summed - prior, num_tokens=num_tokens)

    def candidate_logprobs(
        self,
        image: Image.Image,
        prompt: str,
        candidates: list[str],
        candidate_batch: int = 128,
        keep: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability ``[C]`` (float32) and token count ``[C]`` (long) of every candidate as the answer to
        ``prompt`` about ``image``, on the model's device, with gradients when autograd is on.

        What ``rank`` computes for each image of a batch (it runs the same hooks under inference mode, in eval mode):
        one prefill of image + prompt with the KV cache on, then the candidates' tokens after it, packed as a trie in
        one row sharing the prefix cache (``packed_rank`` families under sdpa/eager attention; ``candidate_batch``
        candidates per forward) or by groups of equal length. Nothing is detached and no mode is switched: called
        in a training step, the model runs in its current mode (dropout on in train mode) and ``sum.backward()``
        reaches the weights. ``sum / count`` is the per-token mean; the same ``prompt`` and ``candidates`` render
        the same tokens as ``rank`` and ``SFTCollator``. ``keep``: score only these candidates (in this order); the
        whole list is rendered once and kept, so a subset drawn anew every training step is not tokenised again.
        """
        import torch

        if not candidates:
            raise ValueError(f"{self.family}: candidate_logprobs needs at least one candidate")
        prompt_text, _, cont_ids = self._render_candidates(prompt, tuple(candidates), with_image=True)
        if keep is not None:
            cont_ids = [cont_ids[index] for index in keep]
        prefix = self._prefill(self.encode([image], [prompt_text]))
        summed = self._score_from_prefix(prefix, cont_ids, candidate_batch)[0]
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
                prior = self._prior_cache[key] = self._score_from_prefix(prefix, cont_ids, candidate_batch)[0].cpu()
        return prior

    def _score_from_prefix(self, prefix: Prefix, cont_ids: list[list[int]], candidate_batch: int) -> torch.Tensor:
        """``[B, C]`` summed log-probs (float32, on the prefix's device) of the continuations after each row of a
        cached prefix.

        The first token of every candidate is scored by the prefix's last logits; the rest run in packs of at most
        ``candidate_batch`` candidates (``_score_packed``) or, for families without packing or under another
        attention implementation, in groups of equal length (``_score_grouped``), every image of the prefix in the
        same forward. Differentiable: no mode switch, no detaching (callers choose inference mode).
        """
        import torch

        first = torch.log_softmax(at_least_float32(prefix.last_logits), dim=-1)
        scores = first[:, torch.tensor([ids[0] for ids in cont_ids], device=first.device)]
        rest = [index for index, ids in enumerate(cont_ids) if len(ids) > 1]  # one-token candidates are done
        self.usage.head_positions += prefix.rows  # each prefix row's last position (the continuations count theirs)
        score = self._score_packed if self.uses_packed_rank else self._score_grouped
        for start in range(0, len(rest), candidate_batch):
            chunk = torch.tensor(rest[start : start + candidate_batch], device=scores.device)
            scores = scores.index_add(1, chunk, score(prefix, [cont_ids[i] for i in chunk.tolist()]).to(scores.device))
        return scores

    @property
    def uses_packed_rank(self) -> bool:
        """Packed ranking needs the family's support and an attention that applies a 4-D additive mask."""
        return self.packed_rank and getattr(self.model.config, "_attn_implementation", None) in PACKED_ATTENTION

    def _score_packed(self, prefix: Prefix, cont_ids: list[list[int]]) -> torch.Tensor:
        """``[B, n]`` log-probs of tokens 2..k of ``n`` candidates packed as a trie in ONE row per prefix row.

        The prefix's KV cache is shared instead of repeated per candidate: a 4-D additive mask lets each packed
        token see its row's real prefix tokens (not the padding) and, through the trie (``fgvlm.models.trie``), its
        own candidate's earlier tokens only; positions restart after the prefix along every branch. So each
        candidate computes exactly what it would alone, without padding, in one forward whatever the lengths, and
        tokens that candidates share at their start are computed once.
        """
        import torch

        trie = candidate_trie(tuple(tuple(ids) for ids in cont_ids))
        device, rows = self.device, prefix.rows
        self.usage.prompt_tokens += rows * trie.size  # what runs: one row of trie nodes per image, each scored
        self.usage.head_positions += rows * trie.size
        tree = torch.zeros(trie.size, trie.size, dtype=torch.bool, device=device)
        tree[torch.tensor(trie.mask_rows, device=device), torch.tensor(trie.mask_cols, device=device)] = True
        seen = prefix.mask.to(device=device, dtype=torch.bool)[:, None, :].expand(rows, trie.size, prefix.length)
        allowed = torch.cat([seen, tree.expand(rows, -1, -1)], dim=2)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        offsets = torch.tensor(trie.depths, device=device).expand(rows, -1)
        out = self._text_module(prefix)(
            input_ids=torch.tensor(trie.tokens, device=device).expand(rows, -1),
            attention_mask=mask[:, None],
            position_ids=self._continuation_positions(prefix, offsets),
            cache=copy_cache(prefix.cache),  # the packed tokens extend a copy; the prefix stays intact
            use_cache=True,
        )
        nodes, targets = torch.tensor(trie.nodes, device=device), torch.tensor(trie.targets, device=device)
        # one row at a time: a float32 [tokens, vocabulary] log-softmax per image, not [B, tokens, vocabulary] at once
        picked = torch.stack([torch.log_softmax(at_least_float32(row), -1)[nodes, targets] for row in out.logits])
        owners = torch.tensor(trie.owners, device=picked.device)
        return picked.new_zeros(rows, len(cont_ids)).index_add_(1, owners, picked)

    def _score_grouped(self, prefix: Prefix, cont_ids: list[list[int]]) -> torch.Tensor:
        """``[B, n]`` log-probs of tokens 2..k with the prefix cache repeated per candidate, one forward per length.

        Groups of equal token length carry no padding: 102 Flowers102 names fall into a handful of lengths, and
        padding to the longest name would more than double the tokens. A group runs in chunks of at most
        ``group_size`` (image, candidate) rows (but one candidate for every image at least), since each row holds a
        full copy of its image's prefix cache.
        """
        import torch

        by_length: dict[int, list[int]] = {}
        for index, ids in enumerate(cont_ids):
            by_length.setdefault(len(ids), []).append(index)
        per_forward = max(1, self.group_size // prefix.rows)
        chunks = [
            group[start : start + per_forward]
            for group in by_length.values()
            for start in range(0, len(group), per_forward)
        ]
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32  # as at_least_float32 computes
        scores = torch.zeros(prefix.rows, len(cont_ids), device=self.device, dtype=dtype)
        for chunk in chunks:
            # rows image-major: row b * len(chunk) + j is image b's candidate chunk[j], as batch_repeat_interleave lays
            # out the cache
            tokens = torch.tensor([cont_ids[i] for i in chunk], device=self.device).repeat(prefix.rows, 1)
            self.usage.prompt_tokens += tokens[:, :-1].numel()  # every (image, candidate) row runs and is scored
            self.usage.head_positions += tokens[:, :-1].numel()
            cache = copy_cache(prefix.cache)  # each group extends its own copy of the prefix
            cache.batch_repeat_interleave(len(chunk))
            logprobs = torch.log_softmax(at_least_float32(self._continue(prefix, cache, tokens[:, :-1])), dim=-1)
            picked = logprobs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(dim=1).view(prefix.rows, -1)
            # .to: under device_map='auto' the logits may sit on another device than the first parameters
            scores = scores.index_add(1, torch.tensor(chunk, device=self.device), picked.to(self.device))
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
        """Run the left-padded prompts once with the cache on (in the caller's grad and train mode)."""
        import torch

        out = self._forward(inputs, use_cache=True, **self._last_logits_only(inputs))
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        return Prefix(out.logits[:, -1], out.cache, ids.shape[1], torch.ones_like(ids) if mask is None else mask, {})

    def _continue(self, prefix: Prefix, cache: Any, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits ``[n, L, V]`` of ``n`` equal-length continuations ``ids`` after the repeated prefix ``cache``:
        ``n / B`` candidates per prefix row, image-major (as ``batch_repeat_interleave`` repeats the cache);
        ``start``: continuation tokens already in the cache (decoding steps of ``fgvlm.models.sampling``)."""
        import torch

        n, length = ids.shape
        per_row = n // prefix.rows
        mask = torch.cat([prefix.mask.repeat_interleave(per_row, dim=0), ids.new_ones(n, start + length)], dim=1)
        offsets = torch.arange(start, start + length, device=ids.device).expand(prefix.rows, length)
        positions = self._continuation_positions(prefix, offsets).repeat_interleave(per_row, dim=-2)
        out = self._text_module(prefix)(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        return out.logits

    def _continuation_positions(self, prefix: Prefix, offsets: torch.Tensor) -> torch.Tensor:
        """Position ids of continuation tokens at ``offsets`` ``[B, L]`` (0 = first token after the prefix; row ``b``
        continues prefix row ``b``).

        The default serves language models that number tokens by their cache index (RoPE Llama / Mistral / Qwen
        text models): a left-padded row's prompt sat at ``pads .. length - 1``, so its continuation goes on at
        ``length``; the shift against the unpadded prompt is the same for every token of the row, and rotary
        attention only sees relative distances. A language model that numbers tokens from the attention mask
        (learned absolute positions) would subtract ``prefix.pads`` instead; M-RoPE families add per-row deltas.
        """
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
                self.usage.head_positions += inputs["input_ids"].shape[1]
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
        last_only = self._last_logits_only(inputs)
        self.usage.head_positions += len(images) if last_only else int(inputs["input_ids"].numel())
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

    # -- cost ------------------------------------------------------------------------------------------------------
    def counted_flops(self, usage: ModelUsage) -> float:
        """FLOPs of ``usage`` by ``fgvlm.models.flops.VLM_FORWARD_RULE`` (parameter counts taken once)."""
        if self._parameter_counts is None:
            from fgvlm.models.families import all_families

            self._parameter_counts = parameter_counts(self.model, all_families().get(self.family))
        return forward_flops(self._parameter_counts, usage)

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
