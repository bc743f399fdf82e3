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

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmrec.metrics import metrics_from_ranks


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
        for item, seq in enumerate(sequences):
            if item == 0 or not seq:
                continue
            node = self.root
            for tok in seq:
                if self._END in node:
                    raise ValueError(
                        f"item {item}'s identifier extends another item's identifier; end them with eos."
                    )
                node = node.setdefault(int(tok), {})
            if node:
                raise ValueError(
                    f"item {item}'s identifier is a prefix of another's or repeats it; check the item indexing."
                )
            node[self._END] = item
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

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (empty when ``prefix`` is complete or invalid)."""
        node = self._node(prefix)
        if node is None:
            return []
        return sorted(k for k in node if k != self._END)

    def item(self, seq: Sequence[int]) -> int | None:
        """The item whose full sequence is ``seq`` (``None`` if it is not one)."""
        node = self._node(seq)
        if node is None:
            return None
        return node.get(self._END)


def prefix_allowed_fn(trie: ItemTrie, pad_id: int, eos_id: int) -> Callable[[int, torch.Tensor], list[int]]:
    """A ``prefix_allowed_tokens_fn`` for ``generate`` (decoder inputs start with the start token).

    After an identifier is complete (eos emitted) only padding may follow.
    """

    def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
        prefix = sent.tolist()[1:]
        if prefix and prefix[-1] in (eos_id, pad_id):
            return [pad_id]
        allowed = trie.allowed(prefix)
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
    """HR@K / NDCG@K / MRR of generated top-K lists.

    Args:
        ranked: ``(B, K)`` item indices, best first (``-1`` = empty slot).
        targets: ``(B,)`` target item indices.
        ks: cut-offs (each <= K for meaningful values).

    Returns:
        per-row metrics as :func:`mmrec.metrics.metrics_from_ranks`; a target absent from the list gets
        rank ``K + 1`` (a miss at every cut-off <= K; MRR is then truncated at ``1/(K+1)``).

    Example:
        >>> out = ranked_list_metrics(torch.tensor([[4, 2, 9]]), torch.tensor([2]), ks=(1, 2))
        >>> out["hr@1"].item(), out["hr@2"].item(), round(out["ndcg@2"].item(), 4)
        (0.0, 1.0, 0.6309)
    """
    hit = ranked == targets.unsqueeze(1)
    k = ranked.shape[1]
    pos = torch.where(hit.any(dim=1), hit.float().argmax(dim=1) + 1, torch.full_like(targets, k + 1))
    return metrics_from_ranks(pos.unsqueeze(1).long(), ks)
