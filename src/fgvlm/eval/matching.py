"""Answer matching: a model's free-text answer -> a class id, or None when it names no class or several.

Both the answer and every class name are normalised the same way (``fgvlm.text.normalize_words``: Unicode NFKC,
accents and case folded, apostrophes dropped so "colt's" = "colts", hyphens and other punctuation -> space, simple
plurals -> singular, an immediately repeated word collapsed so "lotus lotus" = "lotus"), then names are found as
whole-word runs:

- the longest name wins, and a name inside a longer matched name does not count ("rose" in "lenten rose");
- two different classes left standing -> None (ambiguous), so "a rose or a tulip" never scores;
- a *generic head word* standing alone — the last word that two or more multi-word class names share ("lily",
  "orchid", "poppy", ...) — that is not part of the matched class's own name also makes the answer ambiguous:
  "a rose and a lily" names two flowers even though "lily" alone is no class.

Two modes: **strict** counts canonical names only; **lenient** also counts aliases (common and botanical synonyms)
and, when nothing matches exactly, a conservative fuzzy fallback (rapidfuzz ``ratio`` >= 90 on space-free word
windows of >= 5 characters, with a clear margin over any other class) for misspellings such as "barbeton daisey".
``match_answer`` defaults to lenient because a caller asking "which class did it say?" wants the best reading;
evaluation reports both (``pred`` strict, ``pred_lenient`` lenient).

For multiple-choice prompts an option key ("B", "(B)", "B.", "Answer: B", "3") maps to its option; a key followed
by a name of a *different* class, or by an ambiguous name ("B. rose and a lily"), is a contradiction and gives None.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from fgvlm.text import normalize, normalize_words

IGNORED_HEAD_WORDS = ("flower", "plant", "bloom", "blossom")
"""Default head words too general to signal a second class ("balloon flower" and "cape flower" share "flower"):
the flower words, for ``fgvlm.match_answer`` on flower names. Evaluation passes its dataset's own
(``Dataset.ignored_head_words``: "bird", "species" on cub200)."""
FUZZY_CUTOFF = 90.0
FUZZY_MARGIN = 3.0
FUZZY_MIN_CHARS = 5

_KEY_PREFIX = re.compile(
    r"^\s*(?:(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)+",
    re.IGNORECASE,
)
_KEY = re.compile(r"([(\[]?)([A-Za-z]{1,2}|\d{1,3})([)\]]?)([.:)]?)(?=\s|$|[,;!?])")
_YES = {"yes", "yeah", "yep", "yup", "true", "correct", "right"}
_NO = {"no", "nope", "nah", "false", "incorrect", "wrong"}
# Normalised word runs that open a clear denial ("It isn't.", "This is not a rose"); apostrophes are dropped.
_NEGATED_OPENINGS = tuple(
    tuple(phrase.split())
    for phrase in ("it is not", "it isnt", "its not", "this is not", "this isnt", "that is not", "that isnt")
)
# Words that may follow a leading "not" for it to read as a denial ("Not a rose", "Not."), unlike "not sure".
_AFTER_NOT = {"a", "an", "the", "it", "this", "that", "one"}
_ANSWER_OPENING = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\b", re.IGNORECASE)


def option_key(text: str) -> str | None:
    """The option key an answer opens with ("B", "(B)", "B.", "Answer: B", "3)"), upper-cased, or None.

    A bare key followed by more words ("A rose") is read as prose, not as option A: only a key standing alone or
    marked by brackets or ".", ":", ")" counts.
    """
    rest = _KEY_PREFIX.sub("", unicodedata.normalize("NFKC", text)).strip()
    match = _KEY.match(rest)
    if match is None:
        return None
    marked = any(match.group(i) for i in (1, 3, 4))
    alone = not rest[match.end() :].strip(" .!\n\t")
    return match.group(2).upper() if (marked or alone) else None


def match_yes_no(text: str) -> bool | None:
    """Yes -> True, no -> False, read only from how the reply opens; anything less clear -> None (unmatched).

    Conservative on purpose, since a wrong reading scores as an answer: a leading yes-word ("Yes", "Yeah, it is",
    "Correct") or no-word ("No, it is a rose", "Nope") decides, after an optional "Answer:"/"The answer is". A
    "not" counts only at the very start ("Not.", "Not a rose" -- but "Not sure" is None) or in an opening denial
    ("It is not", "This isn't a tulip"). A "not" later on decides nothing: "I am not sure" and "It is a rose, not
    a tulip." are None. A reply holding both the words "yes" and "no" ("Yes and no") is None too.
    """
    words = normalize_words(_ANSWER_OPENING.sub("", text.strip(), count=1))
    if not words or ("yes" in words and "no" in words):
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    if words[0] == "not" and (len(words) == 1 or words[1] in _AFTER_NOT):
        return False
    if any(words[: len(opening)] == opening for opening in _NEGATED_OPENINGS):
        return False
    return None


def _alias_items(aliases: Mapping, class_names: Sequence[str]) -> list[tuple[int, str]]:
    """Aliases keyed by label id or by class name -> (label, alias) pairs; unknown keys are an error."""
    index = {name: label for label, name in enumerate(class_names)}
    items = []
    for key, names in aliases.items():
        label = key if isinstance(key, int) else index.get(key)
        if label is None or not 0 <= label < len(class_names):
            raise KeyError(f"aliases: {key!r} is neither a label id nor one of the {len(class_names)} class names")
        items.extend((label, name) for name in names)
    return items


class AnswerMatcher:
    """Class names (and aliases) compiled once; ``match`` maps one answer to a label id or None."""

    def __init__(
        self,
        class_names: Sequence[str],
        aliases: Mapping | None = None,
        *,
        lenient: bool = True,
        ignored_head_words: Sequence[str] = IGNORED_HEAD_WORDS,
    ):
        self.class_names = list(class_names)
        self.lenient = lenient
        names: dict[tuple[str, ...], set[int]] = {}
        for label, name in enumerate(self.class_names):
            names.setdefault(normalize_words(name), set()).add(label)
        if lenient and aliases:
            alias_names: dict[tuple[str, ...], set[int]] = {}
            for label, alias in _alias_items(aliases, self.class_names):
                alias_names.setdefault(normalize_words(alias), set()).add(label)
            # a canonical name is never taken over by another class's alias; an alias two classes share is ambiguous
            names.update({words: labels for words, labels in alias_names.items() if words not in names})
        names.pop((), None)
        self._by_first: dict[str, list[tuple[tuple[str, ...], frozenset[int]]]] = {}
        for words, labels in sorted(names.items(), key=lambda item: -len(item[0])):
            self._by_first.setdefault(words[0], []).append((words, frozenset(labels)))
        self._label_words: dict[int, set[str]] = {}
        for words, labels in names.items():
            for label in labels:
                self._label_words.setdefault(label, set()).update(words)
        heads: dict[str, set[int]] = {}  # from canonical names only: aliases carry Latin epithets ("vulgare")
        for label, name in enumerate(self.class_names):
            words = normalize_words(name)
            if len(words) > 1:
                heads.setdefault(words[-1], set()).add(label)
        ignored = {normalize(w) for w in ignored_head_words}
        self.generic_words = {w for w, labels in heads.items() if len(labels) > 1 and (w,) not in names} - ignored
        self._fuzzy_choices = ["".join(words) for words in names]
        self._fuzzy_labels = list(names.values())
        self._max_words = max((len(words) for words in names), default=1)

    def _exact(self, words: tuple[str, ...]) -> set[int] | None:
        """Labels of the non-overlapping longest matches; None when a stray generic head word adds doubt."""
        spans = []
        for start, word in enumerate(words):
            for name, labels in self._by_first.get(word, ()):
                if words[start : start + len(name)] == name:
                    spans.append((len(name), start, labels))
        covered = [False] * len(words)
        found: set[int] = set()
        for length, start, labels in sorted(spans, key=lambda s: (-s[0], s[1])):
            if not any(covered[start : start + length]):
                covered[start : start + length] = [True] * length
                found |= labels
        stray = {w for w, c in zip(words, covered, strict=True) if not c and w in self.generic_words}
        if stray and not (len(found) == 1 and stray <= self._label_words[next(iter(found))]):
            return None if found else set()
        return found

    def _fuzzy(self, words: tuple[str, ...]) -> int | None:
        """Best near-miss over space-free word windows, if clearly ahead of every other class (one C call)."""
        from rapidfuzz import fuzz, process

        windows = {
            "".join(words[start : start + size])
            for size in range(1, self._max_words + 1)
            for start in range(len(words) - size + 1)
        }
        windows = [w for w in windows if len(w) >= FUZZY_MIN_CHARS]
        if not windows:
            return None
        scores = process.cdist(windows, self._fuzzy_choices, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF).max(axis=0)
        best: dict[int, float] = {}
        for index in scores.nonzero()[0]:
            for label in self._fuzzy_labels[index]:
                best[label] = max(best.get(label, 0.0), float(scores[index]))
        ranked = sorted(best.items(), key=lambda item: -item[1])
        if not ranked or (len(ranked) > 1 and ranked[1][1] > ranked[0][1] - FUZZY_MARGIN):
            return None
        return ranked[0][0]

    def match(self, text: str, options: Mapping[str, int] | None = None) -> int | None:
        """The class the answer names, or None (nothing, or more than one class). ``options``: key -> label."""
        key = option_key(text) if options else None
        words = normalize_words(text)
        found = self._exact(words)
        if key is not None and key in options:
            # the words after the key must agree with it: a different class, or an ambiguous name (None), refutes it
            return options[key] if found is not None and found <= {options[key]} else None
        if found is None or len(found) > 1:
            return None
        if found:
            return next(iter(found))
        return self._fuzzy(words) if self.lenient else None


_MATCHERS: dict[tuple, tuple[Mapping | None, AnswerMatcher]] = {}


def get_matcher(
    class_names: Sequence[str],
    aliases: Mapping | None = None,
    *,
    lenient: bool = True,
    ignored_head_words: Sequence[str] = IGNORED_HEAD_WORDS,
) -> AnswerMatcher:
    """A compiled matcher, cached per (class names, aliases object, mode, ignored head words): one lookup a call.

    The aliases mapping is read when its matcher is first built (keyed by identity; the cache keeps a reference
    so the id stays valid): build a new mapping rather than editing one in place between calls.
    """
    key = (tuple(class_names), id(aliases) if lenient else None, lenient, tuple(ignored_head_words))
    cached = _MATCHERS.get(key)
    if cached is None:
        if len(_MATCHERS) >= 32:
            _MATCHERS.pop(next(iter(_MATCHERS)))
        matcher = AnswerMatcher(class_names, aliases, lenient=lenient, ignored_head_words=ignored_head_words)
        cached = _MATCHERS[key] = (aliases, matcher)
    return cached[1]


def match_answer(
    text: str,
    class_names: Sequence[str],
    aliases: Mapping | None = None,
    *,
    lenient: bool = True,
    options: Mapping[str, int] | None = None,
) -> int | None:
    """The label id that ``text`` names among ``class_names``, or None (no class, or two different classes).

    ``lenient=True`` (default) also accepts ``aliases`` ({label id or class name: [synonyms]}) and near-miss
    spellings; ``lenient=False`` is strict: canonical names only, exact words only. ``options`` maps the option
    keys of a multiple-choice prompt ("A", "B", ... or "1", "2", ...) to label ids.
    """
    return get_matcher(class_names, aliases, lenient=lenient).match(text, options)
