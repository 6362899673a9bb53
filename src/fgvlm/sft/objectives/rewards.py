"""RL rewards (``rl.reward``): one function per name in ``REWARDS``, each mapping a judged rollout to a number.

A rollout is judged once (``Rollout``): its decoded text, the answer after stripping a ``<think>`` block, the strict
and lenient readings of fgvlm's answer matcher (``TaskScorer.parse``: canonical names or the option key for
closed-qa; aliases and the conservative fuzzy fallback for lenient; ambiguous answers read as None), the target
(the true class, or yes/no for verification) and whether it ended before ``max_new_tokens``. An answer cut off
there scores 0 whatever it says, or the policy learns to ramble until a lenient matcher finds a name in it.

Adding a reward = a function ``(Rollout) -> float`` and one entry here (a ``"module:function"`` string, so the
config can check names without importing torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fgvlm.registry import import_object

THINK_FORMAT = re.compile(r"\s*<think>.*?</think>\s*\S.*", re.DOTALL)
"""A thinking reply: a reasoning block, then a non-empty answer."""


@dataclass(frozen=True)
class Rollout:
    """One sampled answer, judged."""

    text: str
    """The decoded answer (special tokens dropped), reasoning block included."""
    answer: str
    """What the matcher reads: ``text`` without a leading reasoning block."""
    target: int
    """The prediction that is right: the class id (open, closed) or 1/0 for yes/no (verification)."""
    strict: int | None
    lenient: int | None
    finished: bool
    """The answer ended with a stop token (False: cut off by max_new_tokens)."""


def match_reward(rollout: Rollout) -> float:
    """1 when the strict matcher reads the true class (canonical name, or option key/name) in a finished answer."""
    return float(rollout.finished and rollout.strict == rollout.target)


def lenient_reward(rollout: Rollout) -> float:
    """1 when the lenient matcher (aliases, botanical synonyms, misspellings) reads the true class."""
    return float(rollout.finished and rollout.lenient == rollout.target)


def format_ok(text: str) -> bool:
    """The reply is ``<think>...</think>`` followed by an answer (thinking on)."""
    return THINK_FORMAT.fullmatch(text) is not None


REWARDS: dict[str, str] = {
    "match": "fgvlm.sft.objectives.rewards:match_reward",
    "lenient": "fgvlm.sft.objectives.rewards:lenient_reward",
}
"""Reward name (``rl.reward``) -> its function."""


def get_reward(name: str) -> Any:
    """The reward function called ``name`` (unknown names list the known ones)."""
    from fgvlm.registry import unknown_name

    if name not in REWARDS:
        raise unknown_name("reward", name, list(REWARDS))
    return import_object(REWARDS[name])
