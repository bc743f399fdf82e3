"""What can go wrong when serving a request, and the close ids offered when an id is unknown.

Every error is a :class:`RecommenderError` (a ``ValueError``) whose message says how to fix the request;
:func:`suggest` finds the "did you mean" ids, fast enough for catalogues of millions.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrec.protocols import ItemTower, QueryBatchSource, QueryTower


class RecommenderError(ValueError):
    """A request or a checkpoint / index combination that cannot be served; the message says how to fix it."""


class UnknownUserError(RecommenderError):
    """The user id is not in the training data. ``suggestions`` holds close ids."""

    def __init__(self, user_id: str, suggestions: Sequence[str]) -> None:
        self.user_id = user_id
        self.suggestions = list(suggestions)
        hint = f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"unknown user id {user_id!r}.{hint} For a user not seen in training, pass their items instead "
            "(recommend_history / --items)."
        )


class UnknownItemsError(RecommenderError):
    """Some item ids of a history are not in the catalogue. ``unknown`` names them."""

    def __init__(
        self, unknown: Sequence[str], suggestions: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.unknown = list(unknown)
        shown = ", ".join(repr(u) for u in self.unknown[:10]) + (
            f" (+{len(self.unknown) - 10} more)" if len(self.unknown) > 10 else ""
        )
        hints = [f"{u!r} -> {', '.join(repr(s) for s in s_)}" for u, s_ in (suggestions or {}).items() if s_]
        hint = f" Close ids: {'; '.join(hints[:5])}." if hints else ""
        super().__init__(
            f"unknown item id(s) in the history: {shown}.{hint} Item ids must come from the training catalogue."
        )


class EmptyHistoryError(RecommenderError):
    """A new-user request without any item."""

    def __init__(self) -> None:
        super().__init__(
            "the history is empty: give at least one item id the user interacted with (e.g. --items i001,i002)."
        )


class IndexMismatchError(RecommenderError):
    """The index was built from another model, catalogue or dimension than the checkpoint."""


class NotServableError(RecommenderError):
    """A model / datamodule pair that cannot be served by item vectors and query vectors (refused up front,
    before ``mmrec index`` builds an index nobody could query)."""


def servability_problem(model: Any, datamodule: Any) -> str | None:
    """Why ``model`` + ``datamodule`` cannot be served by ``mmrec index`` / ``mmrec recommend``, or ``None``.

    Serving needs an item table (:class:`~mmrec.protocols.ItemTower`), query vectors
    (:class:`~mmrec.protocols.QueryTower`) and a datamodule that turns a user's item history into the
    model's query batch (:class:`~mmrec.protocols.QueryBatchSource`).

    Example:
        >>> servability_problem(object(), object())
        'the model (object) has no item table (`item_vectors()`)'
    """
    name = type(model).__name__
    if not isinstance(model, ItemTower):
        return f"the model ({name}) has no item table (`item_vectors()`)"
    if not isinstance(model, QueryTower):
        return f"the model ({name}) has no query vectors (`query_vectors(batch)`)"
    if not isinstance(datamodule, QueryBatchSource):
        return (
            f"its datamodule ({type(datamodule).__name__}) cannot turn a user's item history into a query "
            "(`query_batch(histories, users)`)"
        )
    return None


def not_servable(problem: str, checkpoint: Path | None) -> NotServableError:
    """The user-facing refusal: what is missing and the command that gives this model's top-K lists."""
    ckpt = str(checkpoint) if checkpoint is not None else "CKPT"
    config = checkpoint.parent.parent / "config.yaml" if checkpoint is not None else None
    cfg = str(config) if config is not None and config.is_file() else "<the run's config.yaml>"
    return NotServableError(
        f"this checkpoint cannot be served by `mmrec index` / `mmrec recommend`: {problem}. Its top-K lists "
        f"per user come from `mmrec predict --config {cfg} --ckpt_path {ckpt} "
        "--trainer.callbacks+=mmrec.callbacks.JsonlPredictionWriter --trainer.callbacks.output=preds.jsonl`."
    )


def _prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def suggest(
    query: str, candidates: Sequence[str], n: int = 3, *, sorted_candidates: Sequence[str] | None = None
) -> list[str]:
    """Up to ``n`` ids of ``candidates`` close to ``query`` (for "did you mean" messages).

    Ranked by difflib similarity, then the longest common prefix. Beyond 5,000 candidates only the 2,000
    ids next to ``query`` in sorted order (those sharing its longest prefixes) are compared, so a lookup
    stays in milliseconds for millions of ids; pass ``sorted_candidates`` to reuse a sorted copy.

    Example:
        >>> suggest("u00l", ["u030", "u001", "x999"])
        ['u001', 'u030']
    """
    pool: Sequence[str] = candidates
    if len(candidates) > 5000:
        ordered = sorted_candidates if sorted_candidates is not None else sorted(candidates)
        at = bisect.bisect_left(ordered, query)
        pool = ordered[max(0, at - 1000) : at + 1000]
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(query)
    scored = []
    for c in pool:
        matcher.set_seq1(c)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:  # similarity, then a longer common prefix, then a closer length
                scored.append((-round(ratio, 6), -_prefix_len(c, query), abs(len(c) - len(query)), c))
    return [c for *_, c in sorted(scored)[:n]]
