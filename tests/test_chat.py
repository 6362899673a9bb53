"""``fgvlm.models.chat``: the one place prompts and answers are rendered, for ranking and fine-tuning alike."""

from __future__ import annotations

import pytest

from fgvlm.config import ConfigError
from fgvlm.models.chat import (
    ChatTemplateError,
    answer_token_ids,
    build_messages,
    render_answer,
    render_prompt,
    strip_reasoning,
)

QUESTION = "What type of flower is in this image?"


def test_messages_put_the_image_first_and_the_answer_as_assistant_turn():
    assert build_messages(QUESTION, with_image=False) == [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    ]
    answered = build_messages(QUESTION, "rose")
    assert answered[0]["content"][0] == {"type": "image"}
    assert answered[1] == {"role": "assistant", "content": [{"type": "text", "text": "rose"}]}


def test_prompt_answer_and_answer_ids_agree_with_the_full_conversation(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir("idefics2"))
    prompt = render_prompt(processor, QUESTION, family="idefics2")
    answer = render_answer(processor, QUESTION, "pink primrose", family="idefics2")
    assert prompt == f"User:<image>{QUESTION}<end_of_utterance>\nAssistant:"
    assert answer == " pink primrose<end_of_utterance>"
    tokenizer = processor.tokenizer
    ids = answer_token_ids(tokenizer, prompt, answer)
    full = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    assert full[-len(ids) :] == ids and ids[-1] == tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert tokenizer.decode(ids) == answer


def test_an_answer_that_merges_with_the_prompt_is_refused(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("qwen3-vl"))
    assert len(tokenizer("rose", add_special_tokens=False)["input_ids"]) == 1  # "ro" + "se" becomes one token
    with pytest.raises(ValueError, match="answer 'se' merges with the end of prompt 'a ro'"):
        answer_token_ids(tokenizer, "a ro", "se")
    with pytest.raises(ValueError, match="adds no token"):
        answer_token_ids(tokenizer, "a rose", "")


def test_a_processor_without_chat_template_is_a_config_error(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("qwen3-vl"))
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="mine: the processor .* has no chat template"):
        render_prompt(tokenizer, QUESTION, family="mine")
    assert issubclass(ChatTemplateError, ConfigError)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>\n\n</think>\n\npink primrose", "pink primrose"),
        ("<think>It has pink petals.</think> pink primrose", "pink primrose"),
        ("  <think></think>rose", "rose"),
        ("pink primrose", "pink primrose"),
        ("rose <think>later</think>", "rose <think>later</think>"),  # only a leading block
        ("<think>unfinished thought", "<think>unfinished thought"),  # cut off: nothing to strip safely
    ],
)
def test_strip_reasoning(text, answer):
    assert strip_reasoning(text) == answer
