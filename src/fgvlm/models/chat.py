"""Chat rendering in one place: the text a VLM sees for a question, and the tokens of its answer.

Ranking scores exactly the tokens fine-tuning must put its loss on, so both go through these functions:
``render_prompt`` is the user turn plus the generation prompt (what generation and ranking feed the model),
``render_answer`` is the assistant turn as the template renders it (``'rose<|im_end|>'`` for Qwen,
``' rose<end_of_utterance>'`` for Idefics2), and ``answer_token_ids`` is what that answer adds to the prompt's
tokens, refusing templates whose answer merges with the prompt's last token. ``strip_reasoning`` removes the
``<think>...</think>`` block reasoning-capable checkpoints emit before their answer.

No torch here: the module works on any processor or tokenizer with ``apply_chat_template``.

Example::

    prompt = render_prompt(processor, "What flower is this?")
    answer = render_answer(processor, "What flower is this?", "pink primrose")  # 'pink primrose<|im_end|>'
    ids = answer_token_ids(processor.tokenizer, prompt, answer)  # labels of the answer's positions
"""

from __future__ import annotations

import re
from typing import Any

from fgvlm.config import ConfigError

REASONING = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
"""A reasoning block at the start of a generated answer (Qwen3 style), with the whitespace around it."""


class ChatTemplateError(ConfigError):
    """A processor without a chat template, or a template whose answer cannot be told apart from the prompt."""


def build_messages(question: str, answer: str | None = None, *, with_image: bool = True) -> list[dict]:
    """The chat conversation for ``question`` (one image first, then the text), optionally answered."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def apply_template(processor: Any, messages: list[dict], *, add_generation_prompt: bool, family: str) -> str:
    """``messages`` rendered by the processor's chat template (else its tokenizer's) as text."""
    tokenizer = getattr(processor, "tokenizer", processor)
    owner = processor if getattr(processor, "chat_template", None) else tokenizer
    if not getattr(owner, "chat_template", None):
        raise ChatTemplateError(
            f"{family}: the processor ({type(processor).__name__}) has no chat template; set one on the processor "
            "(processor.chat_template) or its tokenizer"
        )
    return owner.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def render_prompt(processor: Any, question: str, *, with_image: bool = True, family: str = "generic") -> str:
    """The exact text the model sees for ``question``: the chat template with the generation prompt added."""
    messages = build_messages(question, with_image=with_image)
    return apply_template(processor, messages, add_generation_prompt=True, family=family)


def render_answer(
    processor: Any, question: str, answer: str, *, with_image: bool = True, family: str = "generic"
) -> str:
    """The assistant turn as the template renders it, end-of-turn included (trailing newlines dropped).

    Taken as the suffix of the whole rendered conversation after the rendered prompt, so it is right for any
    template without knowing its conventions.
    """
    prompt_text = render_prompt(processor, question, with_image=with_image, family=family)
    messages = build_messages(question, answer, with_image=with_image)
    full = apply_template(processor, messages, add_generation_prompt=False, family=family)
    if not full.startswith(prompt_text):
        raise ChatTemplateError(
            f"{family}: the rendered conversation does not start with the rendered prompt, so the answer "
            f"cannot be isolated.\nprompt: {prompt_text!r}\nconversation: {full!r}"
        )
    return full[len(prompt_text) :].rstrip("\n")


def answer_token_ids(tokenizer: Any, prompt_text: str, answer_text: str) -> list[int]:
    """Token ids ``answer_text`` adds when tokenized after ``prompt_text`` (no special tokens added).

    Raises ``ValueError`` naming both texts when the prompt's ids are not a prefix of the whole text's ids (the
    answer merges with the prompt's last token) or the answer adds no token.
    """
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt_text + answer_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ValueError(
            f"answer {answer_text!r} merges with the end of prompt {prompt_text!r} when tokenized (or adds no "
            "token); the template's assistant turn must start on a token boundary"
        )
    return full_ids[len(prompt_ids) :]


def strip_reasoning(text: str) -> str:
    """``text`` without a leading ``<think>...</think>`` block (empty or not) and the whitespace after it.

    Qwen3's tokenizer marks ``<think>`` / ``</think>`` as added but not special tokens, so decoding with
    ``skip_special_tokens=True`` keeps them: ``'<think>\\n\\n</think>\\n\\npink primrose'`` -> ``'pink primrose'``.
    Text without such a block comes back unchanged.
    """
    return REASONING.sub("", text, count=1) if text.lstrip().startswith("<think>") else text
