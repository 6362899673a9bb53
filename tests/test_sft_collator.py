"""SFT samples for every tiny family: loss on exactly the answer + end-of-turn, the prompt `fgvlm eval` shows the model,
and the answer-positions-only loss equal to transformers' full-logits loss."""

from __future__ import annotations

import pytest
import torch

from fgvlm.config import ConfigError, DataConfig
from fgvlm.data import create_dataset
from fgvlm.eval.scoring import TaskScorer
from fgvlm.models.base import ModelConfig
from fgvlm.models.chat import render_prompt
from fgvlm.models.loading import load_backend
from fgvlm.prompts import object_word
from fgvlm.sft.collator import IGNORE, SFTCollator, SFTDataError, apply_prompt_format
from fgvlm.sft.config import SFTConfig
from fgvlm.sft.data import instruction_records
from fgvlm.sft.trainer import answer_loss

FAMILIES = ["qwen3-vl", "qwen2.5-vl", "idefics2", "smolvlm", "instructblip", "instructblip-t5"]
MODELS = [f"tiny-{family}" for family in FAMILIES] + ["tiny-like-qwen3-vl-4b", "tiny-like-qwen2.5-vl-3b"]
"""Every tiny family, and the shrunken real Qwen checkpoints (real tokenizer, processor and chat template)."""
DATA = DataConfig(dataset="synthflowers", options={"num_classes": 4, "images_per_class": [2, 1, 1]})


@pytest.fixture(scope="module")
def dataset():
    return create_dataset(DATA)


def _setup(family: str, dataset, task: str = "open-qa", limit: int = 3, **cfg_changes):
    """``family`` is a tiny family or a registry model name."""
    name = family if family.startswith("tiny-") else f"tiny-{family}"
    backend = load_backend(ModelConfig(name=name))
    cfg = SFTConfig(model=ModelConfig(name=name), data=DATA, task=task, **cfg_changes)
    records = instruction_records(cfg, dataset, "train", backend.family, limit=limit)
    collator = SFTCollator(
        backend.processor, backend.family, encoder_decoder=is_t5(backend.family), mix_loss=cfg.mixcut.loss
    )
    return backend, cfg, records, collator


def is_t5(family: str) -> bool:
    return family == "instructblip-t5"


@pytest.mark.parametrize("model", MODELS)
def test_loss_tokens_are_the_answer_and_prompt_is_the_eval_prompt(model, dataset, use_tiny_cache):
    backend, cfg, records, collator = _setup(model, dataset)
    family = backend.family
    scorer = TaskScorer("open-qa", dataset, backend.family, {"object": object_word("synthflowers")}, 0)
    record = records[0]
    sample = collator.encode_sample(record)
    labels = sample["labels"]
    carried = labels[labels != IGNORE].tolist()
    expected = backend.render_answer(record.question, record.answer)
    assert backend.tokenizer.decode(carried) == expected
    assert expected.strip().startswith(record.answer) and expected.strip() != record.answer  # + end-of-turn
    # the question and its rendering are byte-identical to what `fgvlm eval` shows the model
    eval_question = scorer.prompt(dataset.split("train").records[0]).text
    assert record.question == eval_question
    prompt_text = backend.render_prompt(eval_question)
    assert render_prompt(backend.processor, record.question) == prompt_text
    eval_ids = backend.encode([record.load_image()], [prompt_text])["input_ids"][0].tolist()
    if family == "instructblip-t5":
        assert sample["input_ids"].tolist() == eval_ids  # the encoder reads the prompt only
    else:
        assert sample["input_ids"][: len(eval_ids)].tolist() == eval_ids
        assert len(sample["input_ids"]) == len(eval_ids) + len(carried)
    if "qformer_input_ids" in sample:  # the Q-Former reads the prompt, never the answer
        eval_q = backend.encode([record.load_image()], [prompt_text])["qformer_input_ids"][0]
        assert sample["qformer_input_ids"].tolist() == eval_q.tolist()


@pytest.mark.parametrize("model", MODELS)
def test_answer_positions_loss_equals_full_logits_loss(model, dataset, use_tiny_cache):
    mix = {"open-qa": 0.5, "closed-negative-qa": 0.5}  # prompts and answers of different lengths: padding
    backend, _, records, collator = _setup(model, dataset, limit=4, mix=mix)
    family = backend.family
    pair = [next(r for r in records if r.task == task) for task in mix]
    batch = collator(pair)
    assert (batch["attention_mask"] == 0).any()
    if family != "instructblip-t5":  # decoder-only: the prompt is masked in every row
        assert (batch["labels"] == IGNORE).any(dim=1).all()
    assert batch["input_ids"].shape[0] == 2
    model = backend.model
    with torch.no_grad():
        ours = answer_loss(model, batch, encoder_decoder=family == "instructblip-t5")
        inputs = {k: v for k, v in batch.items() if k != "loss_weights"}
        reference = model(**inputs, use_cache=False).loss
    assert abs(ours.item() - reference.item()) < 1e-5


def test_mixcut_lambda_nll_is_the_weighted_sum_of_the_two_answers(dataset, use_tiny_cache):
    backend, cfg, records, collator = _setup("qwen3-vl", dataset, task="open-qa-mixcut")
    record = records[0]
    assert record.answer_b is not None and record.answer_b != record.answer and 0 < record.lam < 1
    image = record.load_image()
    model = backend.model

    def summed_nll(answer: str) -> tuple[float, int]:
        sample = collator.encode_sample(record, answer, 1.0, image)
        batch = collator.__class__.__call__.__globals__["pad_samples"]([sample], collator.pad_id)
        labels = batch.pop("labels")
        batch.pop("loss_weights")
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits[0, :-1]
        targets = labels[0, 1:]
        keep = targets != IGNORE
        nll = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
        return nll.item(), int(keep.sum())

    s_a, n_a = summed_nll(record.answer)
    s_b, n_b = summed_nll(record.answer_b)
    lam = record.lam
    expected = (lam * s_a + (1 - lam) * s_b) / (lam * n_a + (1 - lam) * n_b)
    batch = collator([record])
    assert batch["loss_weights"].tolist() == pytest.approx([lam, 1 - lam])
    with torch.no_grad():
        assert answer_loss(model, batch).item() == pytest.approx(expected, abs=1e-5)
    # the alternative rules: one sequence each
    collator.mix_loss = "dominant"
    dominant = record.answer if lam >= 0.5 else record.answer_b
    assert collator.answers(record) == [(dominant, 1.0)]
    collator.mix_loss = "both-names"
    ((answer, weight),) = collator.answers(record)
    assert answer.startswith(dominant) and " and " in answer and weight == 1.0


def test_too_long_sample_is_refused_naming_its_id(dataset, use_tiny_cache):
    backend, _, records, _ = _setup("qwen3-vl", dataset)
    collator = SFTCollator(backend.processor, backend.family, max_length=20)
    with pytest.raises(SFTDataError, match=records[0].id):
        collator.encode_sample(records[0])


def test_no_chat_template_is_a_clear_error(dataset, use_tiny_cache):
    backend, *_ = _setup("qwen3-vl", dataset)
    processor = backend.processor
    processor.chat_template = None
    processor.tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        SFTCollator(processor, "qwen3-vl", model_name="tiny-qwen3-vl")


def test_lmms_engine_format_has_system_turn_and_newline_after_image(dataset, use_tiny_cache):
    backend, _, records, _ = _setup("qwen3-vl", dataset)
    apply_prompt_format(backend.processor, "qwen3-vl", "lmms-engine")
    text = render_prompt(backend.processor, records[0].question)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "<|vision_end|>\n" + records[0].question in text
    assert backend.render_prompt(records[0].question) == text  # evaluation sees the same format
    with pytest.raises(ConfigError, match="lmms-engine"):
        apply_prompt_format(backend.processor, "idefics2", "lmms-engine")


def test_packed_batch_gives_the_padded_batch_loss(dataset, use_tiny_cache):
    """``packing: true`` wiring: the collator packs Qwen samples padding-free and the weighted loss is unchanged."""
    backend, _, records, collator = _setup("qwen3-vl", dataset, task="open-qa-mixcut")
    padded = collator(records[:2])  # two mixed images -> four weighted sequences
    collator.packing_model = backend.model
    packed = collator(records[:2])
    assert packed["input_ids"].shape[0] == 1 and packed["attention_mask"] is None
    with torch.no_grad():
        assert answer_loss(backend.model, packed).item() == pytest.approx(
            answer_loss(backend.model, padded).item(), abs=1e-5
        )


def test_a_model_that_does_not_reload_to_the_trained_one_is_refused(dataset, use_tiny_cache):
    import copy

    from fgvlm.sft.modeling import SFTSaveError, verify_reload

    backend, _, records, collator = _setup("qwen3-vl", dataset)
    batch = collator(records[:1])
    same = copy.deepcopy(backend.model)
    assert verify_reload(backend.model, same, batch) < 1e-6
    with torch.no_grad():
        same.lm_head.weight.add_(0.5)
    with pytest.raises(SFTSaveError, match="does not reload"):
        verify_reload(backend.model, same, batch)
