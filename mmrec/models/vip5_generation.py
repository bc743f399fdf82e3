"""Constrained decoding over valid item identifiers, and metrics of generated rankings.

:class:`ItemTrie` holds the tokenised identifier (plus eos) of every item; given the decoder tokens so far
it returns the tokens that continue at least one identifier, which ``generate``'s
``prefix_allowed_tokens_fn`` uses to mask every other token. Beam search therefore only ever completes
existing identifiers: with ``num_beams = num_return_sequences = K`` it returns K distinct items ranked by
likelihood.

Example:
    >>> trie = ItemTrie([[], [5, 7, 1], [5, 8, 1], [9, 1]])  # items 1..3, eos = 1
    >>> trie.allowed([]), trie.allowed([5]), trie.item([5, 8, 1])
    ([5, 9], [7, 8], 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch


class ItemTrie:
    """Prefix tree over token sequences of items.

    Args:
        sequences: ``sequences[i]`` = token ids of item ``i`` ending with eos (entry 0 is ignored).

    Raises:
        ValueError: two items share a token sequence, or one is a prefix of another (ambiguous decoding).
    """

    _END = -1

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.root: dict[int, Any] = {}
        self.num_items = 0
        self._count: dict[int, int] = {}  # node id -> items under it
        self._paths: dict[int, list[int]] = {}  # item -> ids of the nodes on its path (root excluded)
        for item, seq in enumerate(sequences):
            if item == 0 or not seq:
                continue
            node = self.root
            path: list[int] = []
            for tok in seq:
                if self._END in node:
                    raise ValueError(
                        f"item {item}'s identifier extends another item's identifier; end them with eos."
                    )
                node = node.setdefault(int(tok), {})
                path.append(id(node))
                self._count[id(node)] = self._count.get(id(node), 0) + 1
            if node:
                raise ValueError(
                    f"item {item}'s identifier is a prefix of another's or repeats it; check the item indexing."
                )
            node[self._END] = item
            self._paths[item] = path
            self.num_items += 1
        if self.num_items == 0:
            raise ValueError("no item sequences to build a trie from.")

    def _node(self, prefix: Sequence[int]) -> dict[int, Any] | None:
        node = self.root
        for tok in prefix:
            nxt = node.get(int(tok))
            if nxt is None or not isinstance(nxt, dict):
                return None
            node = nxt
        return node

    def allowed(self, prefix: Sequence[int], blocked: Mapping[int, int] | None = None) -> list[int]:
        """Tokens that may follow ``prefix`` (empty when ``prefix`` is complete or invalid).

        Args:
            prefix: decoder tokens so far (without the start token).
            blocked: from :meth:`blocked_counts`: tokens leading only to excluded items are not allowed.
        """
        node = self._node(prefix)
        if node is None:
            return []
        if not blocked:
            return sorted(k for k in node if k != self._END)
        return sorted(
            k for k, child in node.items() if k != self._END and blocked.get(id(child), 0) < self._count[id(child)]
        )

    def blocked_counts(self, items: Iterable[int]) -> dict[int, int]:
        """How many of ``items`` lie under each trie node (keyed by node id), for :meth:`allowed`.

        A node all of whose items are excluded is never entered, so constrained decoding cannot produce
        an excluded item (e.g. the user's history when it is masked).
        """
        out: dict[int, int] = {}
        for item in set(int(i) for i in items):
            path = self._paths.get(item)
            if path is None:
                continue
            for node_id in path:
                out[node_id] = out.get(node_id, 0) + 1
        return out

    def item(self, seq: Sequence[int]) -> int | None:
        """The item whose full sequence is ``seq`` (``None`` if it is not one)."""
        node = self._node(seq)
        if node is None:
            return None
        return node.get(self._END)


def prefix_allowed_fn(
    trie: ItemTrie, pad_id: int, eos_id: int, exclude: Sequence[Iterable[int]] | None = None
) -> Callable[[int, torch.Tensor], list[int]]:
    """A ``prefix_allowed_tokens_fn`` for ``generate`` (decoder inputs start with the start token).

    After an identifier is complete (eos emitted) only padding may follow.

    Args:
        trie: the item identifiers.
        pad_id, eos_id: the tokenizer's padding and end-of-sequence ids.
        exclude: per batch row, items that may not be generated (e.g. the user's history when history
            is masked); ``None`` allows every item.
    """
    blocked = [trie.blocked_counts(e) for e in exclude] if exclude is not None else None

    def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
        prefix = sent.tolist()[1:]
        if prefix and prefix[-1] in (eos_id, pad_id):
            return [pad_id]
        allowed = trie.allowed(prefix, blocked[batch_id] if blocked is not None else None)
        return allowed if allowed else [pad_id]

    return fn


def decode_items(trie: ItemTrie, sequences: torch.Tensor, pad_id: int, eos_id: int) -> list[int]:
    """Map generated decoder sequences ``(R, T)`` (with the start token) to item indices (-1 = invalid)."""
    out = []
    for row in sequences.tolist():
        toks = row[1:]
        if eos_id in toks:
            toks = toks[: toks.index(eos_id) + 1]
        else:
            toks = [t for t in toks if t != pad_id]
        item = trie.item(toks)
        out.append(item if item is not None else -1)
    return out


def ranked_list_metrics(
    ranked: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """HR@k / NDCG@k / MRR@K of generated top-K lists (one target per row).

    A generated list only ranks its ``K`` entries, so a target outside it has no rank: it is a miss at
    every cut-off and scores **0** in MRR. The reciprocal rank is therefore named ``mrr@K`` (K = the list
    length), never plain ``mrr``, which full-ranking evaluation reports over the whole catalogue.

    Args:
        ranked: ``(B, K)`` item indices, best first (``-1`` = empty slot).
        targets: ``(B,)`` target item indices.
        ks: cut-offs, each ``<= K`` (a cut-off beyond the list would silently count only ``K`` entries).

    Returns:
        ``{"hr@k", "ndcg@k" for k in ks, "mrr@K"}`` -> ``(B,)`` float32 per-row values.

    Raises:
        ValueError: a cut-off exceeds the list length.

    Example:
        >>> out = ranked_list_metrics(torch.tensor([[4, 2, 9], [1, 3, 5]]), torch.tensor([2, 7]), ks=(1, 2))
        >>> out["hr@2"].tolist(), [round(v, 4) for v in out["ndcg@2"].tolist()], out["mrr@3"].tolist()
        ([1.0, 0.0], [0.6309, 0.0], [0.5, 0.0])
    """
    k = int(ranked.shape[1])
    too_long = [c for c in ks if c > k]
    if too_long:
        raise ValueError(
            f"cut-offs {too_long} exceed the {k} generated items; raise num_beams to >= {max(too_long)} or "
            "lower eval_ks."
        )
    hit = (ranked == targets.unsqueeze(1)) & (ranked > 0)
    found = hit.any(dim=1)
    pos = (hit.float().argmax(dim=1) + 1).to(torch.float32)  # 1-based rank when found
    out: dict[str, torch.Tensor] = {}
    for c in ks:
        inside = found & (pos <= c)
        out[f"hr@{c}"] = inside.to(torch.float32)
        out[f"ndcg@{c}"] = torch.where(inside, 1.0 / torch.log2(pos + 1.0), torch.zeros_like(pos))
    out[f"mrr@{k}"] = torch.where(found, 1.0 / pos, torch.zeros_like(pos))
    return out
