"""The VLM backends on real tiny models of every family and drawn SynthFlowers images.

What is pinned: prefix-cached ranking equals brute-force ranking (one full forward per candidate), candidates are
scored as the template renders the assistant turn, batched generation equals one-at-a-time generation, pooled
embeddings match a hand computation from ``output_hidden_states`` and do not depend on the batch.
"""

from __future__ import annotations

import pytest
from models_fixtures import synth_flower_images

torch = pytest.importorskip("torch")

from fgvlm.models.base import POOLINGS, ModelConfig, RankScores  # noqa: E402
from fgvlm.models.families import backend_class, family_names  # noqa: E402
from fgvlm.registry import UnknownNameError  # noqa: E402

QUESTION = "What is the name of the flower in this image?"
# Flowers102 names of 1 to many tokens: the continuations have different lengths and need padding.
NAMES = ["rose", "lotus", "pink primrose", "bird of paradise", "canterbury bells", "hard-leaved pocket orchid"]
# How each family's template renders the assistant turn "pink primrose" (the string ranking must score).
RENDERED_ANSWER = {
    "qwen3-vl": "pink primrose<|im_end|>",
    "qwen2.5-vl": "pink primrose<|im_end|>",
    "idefics2": " pink primrose<end_of_utterance>",
    "smolvlm": " pink primrose<end_of_utterance>",
    "instructblip": " pink primrose</s>",
    "instructblip-t5": " pink primrose</s>",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models' ops are too small to split across threads; one thread is faster and immune to a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def images() -> list:
    """Drawn SynthFlowers images: the numerical checks need any images, not ../shared (one resized non-square)."""
    drawn = synth_flower_images()
    return [drawn[0], drawn[1].resize((200, 150)), drawn[2]]


@pytest.fixture(scope="module", params=family_names())
def backend(request, tmp_path_factory):
    from fgvlm.models.loading import load_backend
    from fgvlm.models.tiny import build_tiny_model

    family = request.param
    folder = build_tiny_model(family, tmp_path_factory.mktemp(family), seed=0)
    return load_backend(ModelConfig(name=str(folder)))


def test_backend_class_table_names_every_family_and_rejects_unknown():
    for family in family_names():
        assert backend_class(family).family == family
    with pytest.raises(UnknownNameError, match="qwen3-vl"):
        backend_class("qwen3vl")


def test_rendered_answer_is_the_assistant_turn(backend):
    assert backend.render_answer(QUESTION, "pink primrose") == RENDERED_ANSWER[backend.family]
    assert QUESTION in backend.render_prompt(QUESTION)
    assert backend.describe()["family"] == backend.family


def test_prefix_cached_rank_equals_brute_force(backend, images):
    cached = backend.rank(images[:2], QUESTION, NAMES)
    brute = backend.rank(images[:2], QUESTION, NAMES, reuse_prefix=False)
    # One candidate per forward: every chunk must start again from an intact copy of the prefix cache.
    one_by_one = backend.rank(images[:2], QUESTION, NAMES, candidate_batch=1)
    torch.testing.assert_close(one_by_one.sum, cached.sum, atol=1e-4, rtol=0)
    assert isinstance(cached, RankScores) and cached.sum.shape == (2, len(NAMES))
    assert len(set(cached.num_tokens)) >= 3, cached.num_tokens  # really different lengths
    assert cached.num_tokens == brute.num_tokens
    for kind in ("sum", "mean", "prior"):
        torch.testing.assert_close(cached.get(kind), brute.get(kind), atol=1e-4, rtol=0)
    assert torch.all(cached.sum < 0)
    # The prior (text only) differs from the image-conditioned score: it is a real second computation.
    assert not torch.allclose(cached.prior_subtracted, cached.sum)


def test_candidate_logprobs_are_rank_scores_with_gradients(backend, images):
    """What a rank objective trains on: ``rank``'s per-image sums and token counts, with a graph that reaches the
    vision tower through the shared prefix cache (several packs or groups, so the cache is copied per chunk)."""
    from fgvlm.models.families import get_family

    ranked = backend.rank(images[:1], QUESTION, NAMES)
    model = backend.model
    model.zero_grad(set_to_none=True)
    summed, counts = backend.candidate_logprobs(images[0], QUESTION, NAMES, candidate_batch=2)
    assert summed.requires_grad and summed.dtype == torch.float32 and counts.tolist() == ranked.num_tokens
    torch.testing.assert_close(summed.detach().cpu(), ranked.sum[0], atol=1e-4, rtol=0)
    torch.nn.functional.cross_entropy((summed / counts)[None], torch.tensor([2])).backward()
    record = get_family(backend.family)
    reached = {record.part_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    assert {"vision", "language"} <= reached, reached


def test_pooled_features_are_embed_with_gradients(backend, images):
    inputs = backend.encode(images[:2], [backend.render_prompt(QUESTION)] * 2)
    for pooling in POOLINGS:
        features = backend.pooled_features(inputs, pooling, layer=-2)
        assert features.requires_grad and features.dtype == torch.float32
        expected = backend.embed(images[:2], QUESTION, pooling=pooling, layer=-2)
        torch.testing.assert_close(features.detach().cpu(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        backend.pooled_features(inputs, "max")


def test_batched_generation_equals_one_at_a_time(backend, images):
    # InstructBLIP's processor puts the query tokens outside the padding: only identical prompts are guaranteed.
    same_prompt_only = backend.family.startswith("instructblip")
    prompts = [QUESTION] * 3 if same_prompt_only else [QUESTION, "Which flower is this?", "Name it."]
    batched = backend.generate(images, prompts, max_new_tokens=6)
    single = [
        backend.generate([image], [prompt], max_new_tokens=6)[0] for image, prompt in zip(images, prompts, strict=True)
    ]
    assert batched == single
    assert all(isinstance(text, str) for text in batched)


def test_embed_shapes_and_batch_independence(backend, images):
    hidden = backend.model.config.get_text_config().hidden_size
    for pooling, layer in [(pooling, -1) for pooling in POOLINGS] + [("mean", 1)]:
        batched = backend.embed(images, QUESTION, pooling=pooling, layer=layer)
        single = torch.cat([backend.embed([image], QUESTION, pooling=pooling, layer=layer) for image in images])
        assert batched.shape == (len(images), hidden)
        torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
        assert torch.isfinite(batched).all()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from fgvlm.models.loading import load_backend
    from fgvlm.models.tiny import build_tiny_model

    folder = build_tiny_model("qwen3-vl", tmp_path_factory.mktemp("qwen-by-hand"), seed=1)
    return load_backend(ModelConfig(name=str(folder)))


def test_rank_scores_by_hand(qwen, images):
    """sum = Σ log p(token) from one plain forward of prompt + answer; mean = sum / tokens; prior = text only."""
    scores = qwen.rank(images[:1], QUESTION, ["pink primrose"])
    answer = "pink primrose<|im_end|>"
    answer_ids = qwen.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert scores.num_tokens == [len(answer_ids)] and len(answer_ids) > 1

    def answer_logprob(inputs):
        with torch.no_grad():
            logits = qwen.model(**inputs).logits[0]
        assert inputs["input_ids"][0, -len(answer_ids) :].tolist() == answer_ids
        steps = torch.log_softmax(logits[-len(answer_ids) - 1 : -1], dim=-1)
        return sum(steps[i, token].item() for i, token in enumerate(answer_ids))

    with_image = answer_logprob(
        qwen.processor(images=images[:1], text=[qwen.render_prompt(QUESTION) + answer], return_tensors="pt")
    )
    text_only = answer_logprob(
        qwen.tokenizer([qwen.render_prompt(QUESTION, with_image=False) + answer], return_tensors="pt")
    )
    assert scores.sum.item() == pytest.approx(with_image, abs=1e-4)
    assert scores.mean.item() == pytest.approx(with_image / len(answer_ids), abs=1e-5)
    assert scores.prior_subtracted.item() == pytest.approx(with_image - text_only, abs=1e-4)
    # The prior is computed once per (prompt, candidates) and kept.
    assert (QUESTION, ("pink primrose",), qwen._weights_version()) in qwen._prior_cache


def test_embed_pooling_by_hand(qwen, images):
    """Left-padded batch of two differently sized images: pool the hidden states by hand."""
    texts = [qwen.render_prompt(QUESTION)] * 2
    inputs = qwen.processor(
        images=[images[0], images[2].resize((64, 200))],
        text=texts,
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    mask = inputs["attention_mask"]
    assert mask[:, 0].tolist().count(0) == 1, "the batch must contain left padding for this test to mean anything"
    with torch.no_grad():
        states = qwen.model(**inputs, output_hidden_states=True).hidden_states
    for layer in (-1, 1):
        hidden = states[layer]
        image_mask = (inputs["input_ids"] == qwen.model.config.image_token_id).float()
        expected = {
            "last": hidden[:, -1],
            "mean": (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True),
            "image-mean": (hidden * image_mask[..., None]).sum(1) / image_mask.sum(1, keepdim=True),
        }
        batch = [images[0], images[2].resize((64, 200))]
        for pooling, want in expected.items():
            got = qwen.embed(batch, QUESTION, pooling=pooling, layer=layer)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_bad_pooling_and_layer_are_named(qwen, images):
    with pytest.raises(ValueError, match="unknown pooling 'first'"):
        qwen.embed(images[:1], QUESTION, pooling="first")
    with pytest.raises(ValueError, match="layer 99 out of range"):
        qwen.embed(images[:1], QUESTION, layer=99)
    with pytest.raises(ValueError, match="at least one candidate"):
        qwen.rank(images[:1], QUESTION, [])


def test_qwen3_vision_speed_ups_compute_the_same_features(qwen, images):
    """The matmul patch embedding and the one-call batched vision attention equal transformers' own forwards; the
    batched attention runs only when every image has the same number of patches (else the original per-image one)."""
    from fgvlm.models.families.qwen3_vl import speed_up_qwen3_vision

    changed = [m for m in qwen.model.modules() if "_fgvlm_original_forward" in m.__dict__]
    assert len(changed) == 1 + qwen.model.config.vision_config.depth  # patch embedding + every block's attention
    assert speed_up_qwen3_vision(qwen.model) == 0  # a second call changes nothing (no self-wrapping)
    originals = {m: m._fgvlm_original_forward for m in changed if hasattr(m, "qkv")}
    fallbacks = []
    for module, original in originals.items():
        module._fgvlm_original_forward = lambda *a, _f=original, **k: fallbacks.append(1) or _f(*a, **k)
    visual = qwen.model.model.visual
    try:
        mixed = [images[0], images[2].resize((64, 200))]  # different patch counts (see test_embed_pooling_by_hand)
        for batch, expect_fallback in [([im.resize((96, 64)) for im in images], False), (mixed, True)]:
            inputs = qwen.encode(batch, [qwen.render_prompt(QUESTION)] * len(batch))
            fallbacks.clear()
            with torch.inference_mode():
                fast = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
                assert bool(fallbacks) == expect_fallback
                fast_forwards = {m: m.__dict__.pop("forward") for m in changed}  # back to the class's forward
                try:
                    slow = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
                finally:
                    for module, forward in fast_forwards.items():
                        module.forward = forward
            torch.testing.assert_close(fast.pooler_output, slow.pooler_output, atol=1e-5, rtol=0)
            for got, want in zip(fast.deepstack_features, slow.deepstack_features, strict=True):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    finally:
        for module, original in originals.items():
            module._fgvlm_original_forward = original


def test_prefill_and_embed_keep_only_the_last_logits(backend, images):
    """Prefill and embed ask for the last position's logits only where the forward they run takes logits_to_keep."""
    from fgvlm.models.backend import forward_takes_logits_to_keep

    with_image = backend.encode(images[:1], [backend.render_prompt(QUESTION)])
    text_only = backend.encode(None, [backend.render_prompt(QUESTION, with_image=False)])
    keep = {"logits_to_keep": 1}
    expected = {  # (with image, text only): InstructBLIP's wrapper and T5 take no logits_to_keep
        "instructblip": ({}, keep),
        "instructblip-t5": ({}, {}),
    }.get(backend.family, (keep, keep))
    assert (backend._last_logits_only(with_image), backend._last_logits_only(text_only)) == expected
    if backend.family.startswith("instructblip"):  # the decision follows the module's signature, not the family
        assert forward_takes_logits_to_keep(type(backend.model.language_model)) == bool(expected[1])
    if expected[0]:
        with torch.inference_mode():
            out = backend._forward(with_image, use_cache=False, **expected[0])
        assert out.logits.shape[1] == 1  # not [L, V] for the whole prompt


def test_grouped_rank_in_small_chunks_equals_brute_force(backend, images):
    """Equal-length groups split into chunks of group_size candidates (bounded cache copies) score the same.

    Families that rank packed are switched to the grouped path too: it is their fallback under other attention kernels.
    """
    brute = backend.rank(images[:1], QUESTION, NAMES, reuse_prefix=False)
    backend.group_size, backend.packed_rank = 1, False
    try:
        assert not backend.uses_packed_rank
        chunked = backend.rank(images[:1], QUESTION, NAMES)
    finally:
        del backend.group_size, backend.packed_rank  # back to the class defaults
    torch.testing.assert_close(chunked.sum, brute.sum, atol=1e-4, rtol=0)


def _tiny_qwen_backend(tmp_path_factory, attn_implementation: str):
    from fgvlm.models.loading import load_backend
    from fgvlm.models.tiny import build_tiny_model

    folder = build_tiny_model("qwen3-vl", tmp_path_factory.mktemp(f"qwen-{attn_implementation}"), seed=0)
    return load_backend(ModelConfig(name=str(folder), attn_implementation=attn_implementation))


def test_packed_rank_under_eager_attention_equals_brute_force(tmp_path_factory, images):
    eager = _tiny_qwen_backend(tmp_path_factory, "eager")
    assert eager.model.config._attn_implementation == "eager" and eager.uses_packed_rank
    packed = eager.rank(images[:1], QUESTION, NAMES)
    brute = eager.rank(images[:1], QUESTION, NAMES, reuse_prefix=False)
    torch.testing.assert_close(packed.sum, brute.sum, atol=1e-4, rtol=0)


def test_other_attention_implementations_rank_by_groups(tmp_path_factory, images, monkeypatch):
    """An attention that is neither sdpa nor eager may ignore the 4-D packed mask: the grouped path is used."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    from fgvlm.models.backend import HFBackend

    # a real, registered implementation under another name (as flash or flex attention would be on a GPU)
    AttentionInterface.register("fgvlm_other", sdpa_attention_forward)
    AttentionMaskInterface.register("fgvlm_other", sdpa_mask)
    other = _tiny_qwen_backend(tmp_path_factory, "fgvlm_other")
    assert other.packed_rank and not other.uses_packed_rank

    def refuse(*args, **kwargs):
        raise AssertionError("packed ranking used under a non-sdpa/eager attention")

    monkeypatch.setattr(HFBackend, "_score_packed", refuse)
    grouped = other.rank(images[:1], QUESTION, NAMES)
    brute = other.rank(images[:1], QUESTION, NAMES, reuse_prefix=False)
    torch.testing.assert_close(grouped.sum, brute.sum, atol=1e-4, rtol=0)


def test_render_and_prior_caches_are_bounded(qwen):
    from fgvlm.models.backend import BoundedCache

    cache = BoundedCache(maxsize=2)
    cache["a"], cache["b"] = 1, 2
    assert cache.recall("a") == 1  # "a" is now the most recently used
    cache["c"] = 3
    assert list(cache) == ["a", "c"] and cache.recall("b") is None
    assert isinstance(qwen._rendered, BoundedCache) and isinstance(qwen._prior_cache, BoundedCache)
    assert "parameters" not in qwen.describe() and qwen.describe()["num_parameters"] > 0
