"""Text normalisation shared by answer matching (``fgvlm.eval.matching``) and prompt building
(``fgvlm.prompts.distractors``): it sits below both so neither imports the other.

Unicode NFKC, accents and case folded, apostrophes dropped so "colt's" = "colts", hyphens and other punctuation ->
space, simple plurals -> singular, an immediately repeated word collapsed so "lotus lotus" = "lotus".
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = re.compile(r"['\u2019\u02bc`\u00b4]")
_NON_WORD = re.compile(r"[\W_]+")
# Endings whose final "s" is not a plural (iris, lotus, crocus, grass, cosmos) and plural endings that add "es".
_NOT_PLURAL = ("ss", "us", "is", "os")
_ES_PLURAL = ("sses", "shes", "ches", "xes", "zes", "uses", "ises")


def singular(word: str) -> str:
    """A crude but consistent singular: lilies -> lily, irises -> iris, roses -> rose; iris, lotus stay."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(_ES_PLURAL):
        return word[:-2]
    if word.endswith(_NOT_PLURAL) or not word.endswith("s"):
        return word
    return word[:-1]


def normalize_words(text: str) -> tuple[str, ...]:
    """The normalised word sequence that both answers and names are compared as (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    words: list[str] = []
    for raw in _NON_WORD.split(_APOSTROPHES.sub("", text)):
        if raw:
            word = singular(raw)
            if not words or words[-1] != word:
                words.append(word)
    return tuple(words)


def normalize(text: str) -> str:
    """``normalize_words`` joined by single spaces."""
    return " ".join(normalize_words(text))
