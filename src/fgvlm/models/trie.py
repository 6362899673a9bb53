"""The candidates of packed ranking as a token trie: each shared leading run of tokens is computed once.

Class names share leading tokens ("pink primrose" / "pink-yellow dahlia", "sweet pea" / "sweet william"). Packed
ranking feeds every candidate's tokens after the cached prompt in one row; as a trie, the row holds one node per
distinct token prefix instead of one copy of the shared tokens per candidate. A tree attention mask lets a node see
the prompt, its ancestors and itself, and its position is its depth after the prompt, so each node computes exactly
what the same token computes in its candidate's own row: the scores are those of one forward per candidate.

No torch import: the trie is plain data (tuples), built once per candidate set and kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class CandidateTrie:
    """The nodes of a packed row and, for every scored token, the node whose logits score it.

    Candidate ``c`` with tokens ``t0..tk`` feeds ``t0..t(k-1)`` (its first token is scored by the prompt's last
    logits, its last token is never an input); the node of ``t0..tj`` scores ``t(j+1)``.
    """

    tokens: tuple[int, ...]
    """Token id of each node, in insertion order (a node always comes after its parent)."""
    depths: tuple[int, ...]
    """Each node's offset after the prompt (0 = the first token after it): its position, whatever the packing."""
    mask_rows: tuple[int, ...]
    """With ``mask_cols``: the (node, node it attends to) pairs of the tree attention mask, ancestors and itself."""
    mask_cols: tuple[int, ...]
    nodes: tuple[int, ...]
    """For each scored token (candidate by candidate, in order): the node whose logits score it."""
    targets: tuple[int, ...]
    """The scored token ids."""
    owners: tuple[int, ...]
    """The candidate (index in the given list) each scored token belongs to."""

    @property
    def size(self) -> int:
        return len(self.tokens)


@functools.lru_cache(maxsize=64)
def candidate_trie(cont_ids: tuple[tuple[int, ...], ...]) -> CandidateTrie:
    """The trie of ``cont_ids`` (each candidate's token ids, at least two each); kept per candidate set, since
    ranking a dataset scores the same names for every image."""
    index: dict[tuple[int, ...], int] = {}
    tokens: list[int] = []
    depths: list[int] = []
    ancestors: list[tuple[int, ...]] = []
    nodes: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    for owner, ids in enumerate(cont_ids):
        if len(ids) < 2:
            raise ValueError(f"candidate {owner} has {len(ids)} token(s): the trie holds candidates of 2 or more")
        parent: tuple[int, ...] = ()
        for depth in range(len(ids) - 1):
            key = tuple(ids[: depth + 1])
            node = index.get(key)
            if node is None:
                node = index[key] = len(tokens)
                tokens.append(ids[depth])
                depths.append(depth)
                ancestors.append((*parent, node))
            parent = ancestors[node]
            nodes.append(node)
            targets.append(ids[depth + 1])
            owners.append(owner)
    pairs = [(node, seen) for node, seen_by in enumerate(ancestors) for seen in seen_by]
    return CandidateTrie(
        tokens=tuple(tokens),
        depths=tuple(depths),
        mask_rows=tuple(row for row, _ in pairs),
        mask_cols=tuple(col for _, col in pairs),
        nodes=tuple(nodes),
        targets=tuple(targets),
        owners=tuple(owners),
    )
