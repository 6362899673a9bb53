"""Which classes are most confusable with a given one: hard distractors (closed-qa) and hard negatives (verify).

Without a similarity matrix, confusability is read from the names alone: two names are close when they share
words, each shared word weighted by its rarity among all names (IDF), so "tiger lily" ~ "fire lily" counts less
than "corn poppy" ~ "tree poppy" (9 lilies, 3 poppies); a character-level similarity (rapidfuzz ``ratio``) breaks
ties and ranks names that share no word ("bougainvillea" ~ "bromelia"). Pass a ``[C, C]`` similarity matrix instead
(e.g. a confusion matrix from an earlier run, or text-embedding cosine similarities) to rank by that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=8)
def _name_similarity(names: tuple[str, ...]) -> np.ndarray:
    from rapidfuzz import fuzz, process

    from fgvlm.text import normalize_words

    words = [set(normalize_words(name)) for name in names]
    document_frequency: dict[str, int] = {}
    for name_words in words:
        for word in name_words:
            document_frequency[word] = document_frequency.get(word, 0) + 1
    idf = {word: math.log(1 + len(names) / count) for word, count in document_frequency.items()}
    shared = np.array([[sum(idf[w] for w in a & b) for b in words] for a in words], dtype=np.float64)
    characters = process.cdist(list(names), list(names), scorer=fuzz.ratio) / 1000.0  # < 0.1: a tie-break only
    return shared + characters


def name_similarity(class_names: Sequence[str]) -> np.ndarray:
    """``[C, C]`` similarity of class names: IDF-weighted shared words plus a small character-level tie-break."""
    return _name_similarity(tuple(class_names)).copy()


def confusable_classes(label: int, class_names: Sequence[str], similarity: Any = None) -> list[int]:
    """Every other class id, most confusable with ``label`` first (ties broken by the lower id)."""
    num_classes = len(class_names)
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is outside 0..{num_classes - 1}")
    if similarity is None:
        row = _name_similarity(tuple(class_names))[label]
    else:
        matrix = np.asarray(similarity, dtype=np.float64)
        if matrix.shape != (num_classes, num_classes):
            raise ValueError(f"similarity matrix has shape {matrix.shape}; expected ({num_classes}, {num_classes})")
        row = matrix[label]
    return sorted((c for c in range(num_classes) if c != label), key=lambda c: (-row[c], c))
