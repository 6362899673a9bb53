"""Prompt tasks: open-qa, closed-qa (multiple choice) and closed-negative-qa (yes/no verification).

Templates and per-family wording are data (``fgvlm/resources/tasks.json``); ``build_prompt`` renders one into a
``Prompt`` (text, expected answer, options shown) for zero-shot evaluation and SFT data alike.
"""

from fgvlm.prompts.distractors import confusable_classes, name_similarity
from fgvlm.prompts.tasks import (
    Prompt,
    build_prompt,
    check_options,
    get_task,
    item_seed,
    object_word,
    option_keys,
    task_names,
)

__all__ = [
    "Prompt",
    "build_prompt",
    "check_options",
    "confusable_classes",
    "get_task",
    "item_seed",
    "name_similarity",
    "object_word",
    "option_keys",
    "task_names",
]
