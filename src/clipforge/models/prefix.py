"""Shared-prefix packing for bulk text encoding.

The text tower is causal, so a token's hidden state at every layer depends only on the tokens before it:
texts that start alike ("<sot> a man ...", "<sot> a man ...") have identical states along their common
prefix. Packing merges the texts of a row into a prefix tree whose nodes are computed once; each node
attends to itself and its ancestors, exactly the keys it would see in its own padded sequence. On COCO
captions this computes ~11 token positions per caption where length-sorted padding computes ~15-18.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PrefixPack:
    """A batch of packed rows. R rows, N node slots per row, Q texts per row at most."""

    tokens: Tensor  # (R, N) token id of each node, 0 in padding slots
    positions: Tensor  # (R, N) depth of each node = its position in the texts through it
    mask: Tensor  # (R, 1, N, N) True where node i may attend node j (j is i or an ancestor of i)
    eot: Tensor  # (R, Q) node index of each text's end-of-text token in its row, 0 in padding slots
    slots: Tensor  # (T,) flat index row * Q + q of each packed text, in the order of `texts`
    texts: Tensor  # (T,) indices of the packed texts in the input


@dataclass
class _Row:
    tokens: list[int]
    parents: list[int]
    children: dict[tuple[int, int], int]  # (parent node, token) -> node
    eot: list[int]
    texts: list[int]

    @classmethod
    def empty(cls) -> _Row:
        return cls([], [], {}, [], [])

    def match(self, seq: tuple[int, ...]) -> tuple[int, int]:
        """(length of the longest prefix of `seq` already in the tree, its last node; -1 for none)."""
        node = -1
        for depth, token in enumerate(seq):
            child = self.children.get((node, token))
            if child is None:
                return depth, node
            node = child
        return len(seq), node

    def add(self, seq: tuple[int, ...], text: int, matched: tuple[int, int]) -> None:
        """Add `seq` given its `match`: only the unmatched tail becomes new nodes."""
        depth, node = matched
        for token in seq[depth:]:
            child = len(self.tokens)
            self.children[(node, token)] = child
            self.tokens.append(token)
            self.parents.append(node)
            node = child
        self.eot.append(node)
        self.texts.append(text)


def _rows(tokens: Tensor, row_nodes: int) -> list[_Row]:
    """Texts in lexicographic order (neighbours share prefixes), greedily filled into rows of <= row_nodes
    nodes. tokens: (T, L) ids with EOT the largest id of each row."""
    lengths = (tokens.argmax(dim=-1) + 1).tolist()
    seqs = [tuple(row[:n]) for row, n in zip(tokens.tolist(), lengths)]
    row_nodes = max(row_nodes, max(lengths, default=1))
    rows, row = [], _Row.empty()
    for text in sorted(range(len(seqs)), key=seqs.__getitem__):
        seq = seqs[text]
        matched = row.match(seq)
        if row.texts and len(row.tokens) + len(seq) - matched[0] > row_nodes:
            rows.append(row)
            row = _Row.empty()
            matched = (0, -1)
        row.add(seq, text, matched)
    if row.texts:
        rows.append(row)
    return rows


def _collate(rows: list[_Row]) -> PrefixPack:
    R, N, Q = len(rows), max(len(r.tokens) for r in rows), max(len(r.texts) for r in rows)
    tokens = torch.zeros(R, N, dtype=torch.long)
    parents = torch.arange(N).repeat(R, 1)  # padding nodes are their own parents: they see only themselves
    eot = torch.zeros(R, Q, dtype=torch.long)
    slots, texts = [], []
    for i, row in enumerate(rows):
        n = len(row.tokens)
        tokens[i, :n] = torch.tensor(row.tokens)
        parents[i, :n] = torch.tensor([p if p >= 0 else j for j, p in enumerate(row.parents)])  # root: itself
        eot[i, : len(row.eot)] = torch.tensor(row.eot)
        slots += [i * Q + q for q in range(len(row.texts))]
        texts += row.texts
    # Walk every node up to the root, marking ancestors; depth = number of steps taken before the root.
    mask = torch.zeros(R, N, N, dtype=torch.bool)
    positions = torch.zeros(R, N, dtype=torch.long)
    rows_index, nodes = torch.arange(R)[:, None], torch.arange(N).repeat(R, 1)  # (R, 1), (R, N)
    ancestor = nodes.clone()
    while True:
        mask[rows_index, nodes, ancestor] = True
        parent = parents.gather(1, ancestor)
        moved = parent != ancestor
        if not moved.any():
            break
        positions += moved
        ancestor = parent
    return PrefixPack(tokens, positions, mask.unsqueeze(1), eot, torch.tensor(slots), torch.tensor(texts))


def pack_prefixes(tokens: Tensor, texts_per_batch: int = 256, row_nodes: int = 128) -> Iterator[PrefixPack]:
    """(T, L) token ids -> batches of packed rows holding about `texts_per_batch` texts each.
    `row_nodes` bounds a row's tree (at least the longest text); attention costs grow with it."""
    rows = _rows(tokens.cpu(), row_nodes)
    batch: list[_Row] = []
    texts = 0
    for row in rows:
        batch.append(row)
        texts += len(row.texts)
        if texts >= texts_per_batch:
            yield _collate(batch)
            batch, texts = [], 0
    if batch:
        yield _collate(batch)
