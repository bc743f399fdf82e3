"""VIP5 explanation pairs: which (user, item, review sentence) examples the explanation task trains and evaluates on, and the feature words its prompts name."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.vip5_config import ExplanationConfig

# the VIP5 DataModule's logger: these messages keep the name they had before this function moved here
log = logging.getLogger("mmrec.datamodules.vip5")

# ------------------------------------------------------------------------------------------ explanation
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def explanation_text(text: str, mode: str = "first_sentence") -> str:
    """The explanation target of a review: its first sentence with at least 3 words, or the whole text.

    Example:
        >>> explanation_text("Nice. The colour is great and fits well! Meh.")
        'The colour is great and fits well!'
    """
    text = " ".join(str(text).split())
    if mode == "full":
        return text
    for sentence in _SENTENCE_END.split(text):
        if len(sentence.split()) >= 3:
            return sentence
    return text


@dataclass
class ExplanationPairs:
    """(user, item) pairs with a rating and an explanation, split by time as leave-one-out (no test pair in
    training).

    Attributes:
        users, items, ratings: per pair.
        texts: the explanation targets.
        split: ``0`` train, ``1`` valid, ``2`` test.
        headlines: review headline per pair (``None`` when the dataset has none).
        features: feature word per pair (given, or derived: :func:`feature_words`).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    texts: list[str]
    split: np.ndarray  # 0 train, 1 valid, 2 test
    headlines: list[str | None] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    _by_user: dict[int, np.ndarray] | None = field(default=None, repr=False)

    def indices(self, code: int) -> np.ndarray:
        """Rows of one split (0 train, 1 valid, 2 test)."""
        return np.nonzero(self.split == code)[0]

    def train_rows_by_user(self) -> dict[int, np.ndarray]:
        """user -> rows of the user's training pairs."""
        if self._by_user is None:
            rows = self.indices(0)
            users = self.users[rows]
            order = np.argsort(users, kind="stable")
            rows, users = rows[order], users[order]
            cuts = np.nonzero(np.diff(users))[0] + 1
            self._by_user = {
                int(g[0]): r for g, r in zip(np.split(users, cuts), np.split(rows, cuts)) if len(g)
            }
        return self._by_user

    def fields(self, row: int) -> dict[str, Any]:
        """Source values of pair ``row`` for :meth:`~mmrec.prompts.PromptBuilder.encode_source`."""
        return {
            "user": int(self.users[row]),
            "item": int(self.items[row]),
            "rating": float(self.ratings[row]),
            "headline": self.headlines[row] if self.headlines else None,
            "feature": self.features[row] if self.features else None,
        }


def loo_codes(users: np.ndarray) -> np.ndarray:
    """Per-interaction split code of leave-one-out by time: the last interaction of a user with at least 3
    is test (2), the one before validation (1), all others train (0).

    Args:
        users: ``(R,)`` user of each interaction, rows sorted by user then time (the canonical order).

    Example:
        >>> loo_codes(np.array([0, 0, 0, 0, 1, 1])).tolist()
        [0, 0, 1, 2, 0, 0]
    """
    users = np.asarray(users)
    codes = np.zeros(len(users), dtype=np.int8)
    if not len(users):
        return codes
    change = np.nonzero(users[1:] != users[:-1])[0] + 1
    for s, e in zip(np.concatenate([[0], change]), np.concatenate([change, [len(users)]])):
        if e - s >= 3:
            codes[e - 1], codes[e - 2] = 2, 1
    return codes


_WORD = re.compile(r"[A-Za-z]+")


_STOPWORDS = frozenset(
    [
        "this",
        "that",
        "with",
        "from",
        "have",
        "they",
        "their",
        "them",
        "there",
        "were",
        "what",
        "when",
        "which",
        "while",
        "would",
        "could",
        "should",
        "about",
        "after",
        "again",
        "also",
        "been",
        "before",
        "being",
        "both",
        "does",
        "doing",
        "down",
        "each",
        "even",
        "every",
        "just",
        "like",
        "love",
        "great",
        "good",
        "nice",
        "well",
        "very",
        "much",
        "more",
        "most",
        "some",
        "such",
        "than",
        "then",
        "these",
        "those",
        "through",
        "into",
        "only",
        "over",
        "same",
        "really",
        "will",
        "your",
        "yours",
        "item",
        "product",
        "thing",
        "things",
        "bought",
        "buying",
    ]
)


def feature_words(texts: Sequence[str], train: np.ndarray) -> list[str]:
    """A feature word per explanation (P5's ``{feature}``, which its data takes from an aspect extractor):
    the explanation's rarest word of at least 4 letters (not a stopword), rarity counted over the
    *training* explanations only; ties keep the first. Texts without such a word take their rarest word of
    any length; ``""`` only for texts without letters.

    Example:
        >>> feature_words(["the colour is lovely", "lovely fit", "lovely colour"], np.array([0, 0, 0]))
        ['colour', 'lovely', 'colour']
    """
    df: dict[str, int] = {}
    words = [[w.lower() for w in _WORD.findall(t)] for t in texts]
    for ws, code in zip(words, train.tolist()):
        if code == 0:
            for w in set(ws):
                df[w] = df.get(w, 0) + 1
    out = []
    for ws in words:
        cands = [w for w in ws if len(w) >= 4 and w not in _STOPWORDS] or ws
        out.append(min(cands, key=lambda w: df.get(w, 0)) if cands else "")
    return out


def explanation_pairs(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    texts: Sequence[Any],
    codes: np.ndarray,
    mode: str = "first_sentence",
    headlines: Sequence[Any] | None = None,
    features: Sequence[Any] | None = None,
) -> ExplanationPairs:
    """(user, item) pairs with an explanation, split by time consistently with leave-one-out.

    Interactions with an empty text are skipped; a (user, item) pair reviewed several times keeps its
    latest review, whose split code it takes: so a pair of the user's test (validation) interaction is a
    test (validation) pair even if the item was also reviewed earlier, and no test pair is trained on.

    Args:
        users, items, ratings, texts: one entry per interaction (rows sorted by user, then time).
        codes: per-interaction split code (:func:`loo_codes`: 0 train, 1 valid, 2 test).
        mode: see :func:`explanation_text`.
        headlines: per-interaction review headline (``{headline}``), or ``None``.
        features: per-interaction feature word (``{feature}``), or ``None`` to derive them
            (:func:`feature_words`).

    Example:
        >>> p = explanation_pairs(np.array([0, 0, 0, 0]), np.array([1, 2, 3, 4]), np.ones(4),
        ...                       ["Good one.", "Nice colour here.", "Too small for me.", "Fits so well."],
        ...                       np.array([0, 0, 1, 2]))
        >>> p.split.tolist(), p.texts[-1]
        ([0, 0, 1, 2], 'Fits so well.')
    """
    codes = np.asarray(codes)
    if len(codes) != len(users):
        raise ValueError(f"codes has {len(codes)} entries for {len(users)} interactions.")
    latest: dict[tuple[int, int], int] = {}
    for r, (u, i, t) in enumerate(zip(users.tolist(), items.tolist(), texts)):
        if t is None or (isinstance(t, float) and np.isnan(t)) or not str(t).strip():
            continue
        latest[(u, i)] = r
    rows = np.array(sorted(latest.values()), dtype=np.int64)
    split = codes[rows].astype(np.int8) if len(rows) else np.zeros(0, np.int8)
    out_texts = [explanation_text(texts[r], mode) for r in rows.tolist()]

    def _clean(v: Any) -> str | None:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip() else str(v)

    heads = [_clean(headlines[r]) for r in rows.tolist()] if headlines is not None else []
    feats = (
        [_clean(features[r]) or "" for r in rows.tolist()]
        if features is not None
        else feature_words(out_texts, split)
    )
    return ExplanationPairs(
        users=users[rows],
        items=items[rows],
        ratings=ratings[rows].astype(np.float32),
        texts=out_texts,
        split=split,
        headlines=heads,
        features=feats,
    )


def pairs_from_interactions(
    inter: pd.DataFrame,
    user_index: Mapping[str, int],
    item_index: Mapping[str, int],
    cfg: ExplanationConfig,
    headline: str | None,
    where: Path,
) -> ExplanationPairs:
    """The explanation pairs of a canonical interactions table (:func:`explanation_pairs` on its columns).

    Args:
        inter: interactions sorted by user, then time (``user_id``, ``item_id``, optional ``rating``, the
            text column, the headline / feature columns).
        user_index: user id -> user index; item_index: item id -> item index (``1..N``).
        cfg: which text, headline and feature columns, and the text mode (:class:`ExplanationConfig`).
        headline: the headline column (``None``: no ``{headline}``).
        where: the dataset folder, named in errors.

    Raises:
        DatasetError: no text column, an unknown feature column, or no training pair with a text.

    Example:
        >>> inter = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "b", "c"],
        ...                       "review": ["Lovely soft fabric.", "Runs rather small.", "Great value."]})
        >>> p = pairs_from_interactions(inter, {"u": 0}, {"a": 1, "b": 2, "c": 3}, ExplanationConfig(),
        ...                             None, Path("d"))
        >>> p.split.tolist()
        [0, 1, 2]
    """
    col = cfg.column
    if col is None:
        col = next(
            (c for c in ("explanation", "review") if c in inter.columns and inter[c].notna().any()), None
        )
    if col is None or col not in inter.columns:
        raise DatasetError(
            f"{where} has no explanation or review text (interactions columns: "
            f"{list(inter.columns)}); drop 'explanation' from tasks or prepare the dataset with reviews."
        )
    if cfg.feature_column is not None and cfg.feature_column not in inter.columns:
        raise DatasetError(
            f"explanation.feature_column {cfg.feature_column!r} is not an interactions column "
            f"({list(inter.columns)}); fix it or leave it unset (feature words are then derived)."
        )
    users = inter["user_id"].map(user_index).to_numpy(dtype=np.int64)
    items = inter["item_id"].map(item_index).to_numpy(dtype=np.int64)
    ratings = (
        inter["rating"].fillna(0).to_numpy(dtype=np.float32)
        if "rating" in inter.columns
        else np.zeros(len(inter), np.float32)
    )
    pairs = explanation_pairs(
        users,
        items,
        ratings,
        inter[col].tolist(),
        loo_codes(users),
        cfg.mode,
        headlines=inter[headline].tolist() if headline else None,
        features=inter[cfg.feature_column].tolist() if cfg.feature_column else None,
    )
    if not len(pairs.indices(0)):
        raise DatasetError(f"{where}: no (user, item) pair with a non-empty {col!r} to train on.")
    log.info(
        "explanation pairs from %r: %d train / %d valid / %d test (split by time, as leave-one-out)",
        col,
        len(pairs.indices(0)),
        len(pairs.indices(1)),
        len(pairs.indices(2)),
    )
    return pairs
