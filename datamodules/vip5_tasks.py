"""Building blocks of the VIP5 DataModule: item indexing, saved direct-task candidates, explanation pairs,
the mixed-task training set, evaluation sets and the collate function.

Batches are dicts. Every batch has

- ``input_ids``, ``attention_mask``, ``whole_word_ids``, ``feature_items``, ``feature_slots``,
  ``mention_items``: ``(B, L)`` (see :mod:`mmrec.prompts.builder`); ``feature_items > 0`` marks the visual
  placeholder positions, ``mention_items > 0`` every position of an item mention;
- ``labels``: ``(B, T)`` target token ids with ``-100`` padding (seq2seq backbones);
- ``task_ids (B,)`` (index into :data:`mmrec.prompts.TASKS`, routes each sample to its adapter),
  ``template_ids (B,)`` (index into the template set), ``unseen (B,)`` bool (held-out template);
- ``user (B,)`` user indices and ``target_item (B,)`` the item the target names (0 when none);
- sequential prompts also carry ``history_items (B, H)``: the items the prompt shows, oldest first,
  right-padded with 0; next-item training batches carry ``future_items (B, F)``: the training items after
  the target (``training.future_targets``), 0-padded.

Evaluation batches hold one task, one template split and (direct) one kind, named by the strings
``task``, ``split``, ``kind``, and add what their metrics need:

- sequential: ``targets (B, 1)``, ``exclude_rows`` / ``exclude_cols`` (the user's history, for full
  ranking);
- direct: ``candidates (B, C)`` item indices, ``positive (B,)`` the column of the positive; for
  ``yes_no`` templates the prompt tensors are ``(B*C, L)``, one prompt per (user, candidate), row-major;
- explanation: ``references`` (list of B strings).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmrec.data.canonical import DatasetError
from mmrec.prompts import TASKS, EncodedPrompt, PromptBuilder, Template, TemplateSet

log = logging.getLogger(__name__)

TASK_INDEX = {t: i for i, t in enumerate(TASKS)}
LABEL_PAD = -100


# ------------------------------------------------------------------------------------------ indexing
def item_numbering(sequences: Sequence[Sequence[int]], num_items: int, method: str, seed: int) -> list[int]:
    """Identifier number of every item index (entry 0 unused).

    Args:
        sequences: per-user chronological item indices (1..N).
        num_items: N.
        method: ``"random"`` (a seeded random permutation of 1..N: identifiers carry no information) or
            ``"sequential"`` (P5's indexing: items numbered 1, 2, ... in order of first appearance while
            reading users' sequences one after the other; consecutive items of a user get consecutive
            numbers, which leaks the test item's neighbourhood into the identifier).
        seed: seeds the random permutation.

    Returns:
        ``numbers`` with ``numbers[i]`` the identifier number of item ``i`` (a permutation of 1..N).

    Example:
        >>> item_numbering([[3, 1], [2, 3]], 3, "sequential", 0)
        [0, 2, 3, 1]
    """
    if method == "random":
        perm = np.random.default_rng([seed, 7919]).permutation(num_items) + 1
        return [0, *perm.tolist()]
    if method != "sequential":
        raise ValueError(f"item_indexing must be 'random' or 'sequential', got {method!r}.")
    log.warning(
        "item_indexing: sequential (P5) numbers items in the order users consumed them, so a user's test "
        "item usually gets an identifier next to those in their history: this leaks the answer and inflates "
        "sequential-task metrics. Use item_indexing: random for fair results."
    )
    numbers = [0] * (num_items + 1)
    nxt = 1
    for seq in sequences:
        for it in seq:
            if numbers[it] == 0:
                numbers[it] = nxt
                nxt += 1
    for it in range(1, num_items + 1):  # items nobody interacted with
        if numbers[it] == 0:
            numbers[it] = nxt
            nxt += 1
    return numbers


# ------------------------------------------------------------------------------------------ negatives
@dataclass
class DirectCandidates:
    """Saved candidates of the direct task: column 0 is the positive, then ``n`` negatives.

    Attributes:
        users: ``(U,)`` user indices of the split.
        candidates: ``(U, n+1)`` item indices.
        path: the file they were read from / written to.
    """

    users: np.ndarray
    candidates: np.ndarray
    path: Path


def candidates_path(derived_dir: Path, fingerprint: str, seed: int, negatives: int) -> Path:
    """``<derived_dir>/vip5_direct_candidates-<fingerprint[:16]>-seed<seed>-n<negatives>.npz``."""
    return derived_dir / f"vip5_direct_candidates-{fingerprint[:16]}-seed{seed}-n{negatives}.npz"


def draw_negatives(
    positives: Sequence[int],
    known: Sequence[Sequence[int]],
    num_items: int,
    negatives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """For each row, the positive then ``negatives`` distinct items the user never interacted with.

    Raises:
        DatasetError: a user has interacted with too many items to draw ``negatives`` others.

    Example:
        >>> draw_negatives([2], [[1, 2]], 5, 3, np.random.default_rng(0))[0, 0]
        np.int64(2)
    """
    out = np.zeros((len(positives), negatives + 1), dtype=np.int64)
    for r, (pos, seen) in enumerate(zip(positives, known)):
        banned = set(seen) | {pos}
        if num_items - len(banned) < negatives:
            raise DatasetError(
                f"a user interacted with {len(banned)} of {num_items} items: cannot draw {negatives} negatives; "
                "lower negatives."
            )
        chosen: list[int] = []
        chosen_set: set[int] = set()
        while len(chosen) < negatives:
            draw = rng.integers(1, num_items + 1, size=2 * (negatives - len(chosen)) + 8)
            for it in draw.tolist():
                if it not in banned and it not in chosen_set:
                    chosen.append(it)
                    chosen_set.add(it)
                    if len(chosen) == negatives:
                        break
        out[r, 0] = pos
        out[r, 1:] = chosen
    return out


def load_or_draw_candidates(
    path: Path,
    splits: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    sequences: Sequence[Sequence[int]],
    num_items: int,
    negatives: int,
    seed: int,
    fingerprint: str,
) -> dict[str, DirectCandidates]:
    """Read the saved direct-task candidates, or draw them once (seeded) and save them atomically.

    Args:
        path: the ``.npz`` file (see :func:`candidates_path`).
        splits: ``{"valid": (users, positives), "test": (users, positives)}``.
        sequences: every user's full item sequence (negatives avoid all of them).
        num_items: N.
        negatives: negatives per user.
        seed: seeds the draw.
        fingerprint: dataset fingerprint, recorded and checked.
    """
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("fingerprint") != fingerprint or meta.get("negatives") != negatives:
                raise DatasetError(
                    f"{path} was drawn for another dataset version or negatives count; delete it to redraw."
                )
            out = {
                name: DirectCandidates(z[f"{name}_users"], z[f"{name}_candidates"], path) for name in splits
            }
        for name, (users, pos) in splits.items():
            c = out[name]
            if c.users.tolist() != list(users) or c.candidates[:, 0].tolist() != list(pos):
                raise DatasetError(f"{path} does not match the current {name} split; delete it to redraw.")
        return out
    rng = np.random.default_rng([seed, 104729])
    arrays: dict[str, Any] = {
        "meta": np.array(json.dumps({"fingerprint": fingerprint, "seed": seed, "negatives": negatives}))
    }
    out = {}
    for name, (users, pos) in splits.items():
        cand = draw_negatives(pos, [sequences[u] for u in users], num_items, negatives, rng)
        users_a = np.asarray(users, dtype=np.int64)
        arrays[f"{name}_users"] = users_a
        arrays[f"{name}_candidates"] = cand
        out[name] = DirectCandidates(users_a, cand, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        log.info(
            "direct-task candidates (1 positive + %d negatives, seed %d) saved to %s", negatives, seed, path
        )
    except OSError as e:
        log.warning(
            "could not save direct-task candidates to %s (%s); using them for this run only.", path, e
        )
    return out


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
    ["this", "that", "with", "from", "have", "they", "their", "them", "there", "were", "what", "when", "which", "while", "would", "could", "should", "about", "after", "again", "also", "been", "before", "being", "both", "does", "doing", "down", "each", "even", "every", "just", "like", "love", "great", "good", "nice", "well", "very", "much", "more", "most", "some", "such", "than", "then", "these", "those", "through", "into", "only", "over", "same", "really", "will", "your", "yours", "item", "product", "thing", "things", "bought", "buying"]
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


# ------------------------------------------------------------------------------------------ datasets
class EpochSampler(Sampler):
    """Shuffles ``range(n)`` per epoch and yields ``(epoch, index)`` so examples can re-sample per epoch.

    Lightning calls :meth:`set_epoch`; when nobody does (e.g. under a wrapping distributed sampler) the
    epoch advances by one at each new iteration.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self._epoch: int | None = None
        self._auto = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self._epoch if self._epoch is not None else self._auto
        self._epoch = None
        self._auto = epoch + 1
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        for i in perm.tolist():
            yield (epoch, i)


@dataclass
class TaskData:
    """What the datasets read (plain lists / arrays shared by train and eval sets)."""

    builder: PromptBuilder
    templates: TemplateSet
    num_items: int
    train_sequences: list[list[int]]  # index = user
    full_sequences: list[list[int]]
    max_history: int
    train_candidates: int
    explanation: ExplanationPairs | None
    future_targets: int = 0


class MixedTaskTrainSet(Dataset):
    """Mixed-task training examples; each epoch re-samples targets, negatives and templates.

    Index ``(epoch, i)``: entry ``i`` names a task and a user (or explanation pair); the rest is drawn
    from ``numpy.random.default_rng([seed, epoch, i])``, so epochs differ and runs repeat exactly.

    Args:
        data: shared task data.
        plan: ``[(task, user), ...]``; an explanation example draws one of the user's training pairs.
        seed: base seed.
    """

    def __init__(self, data: TaskData, plan: Sequence[tuple[str, int]], seed: int) -> None:
        self.data = data
        self.plan = list(plan)
        self.seed = seed
        self.seen = {task: data.templates.group(task, "seen") for task in TASKS}

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = index if isinstance(index, tuple) else (0, int(index))
        rng = np.random.default_rng([self.seed, epoch, i])
        task, key = self.plan[i]
        d = self.data
        template: Template = self.seen[task][int(rng.integers(len(self.seen[task])))]
        if task == "sequential":
            seq = d.train_sequences[key]
            t = int(rng.integers(1, len(seq)))
            history = seq[max(0, t - d.max_history) : t]
            if template.kind == "yes_no":  # is this item the next one?
                positive = bool(rng.random() < 0.5)
                item = seq[t] if positive else _negative(rng, set(d.full_sequences[key]), d.num_items)
                src = d.builder.encode_source(template, user=key, history=history, item=item)
                ex = _example(template, key, src, d.builder.encode_target(template, answer=positive), item)
            else:
                src = d.builder.encode_source(template, user=key, history=history)
                tgt = d.builder.encode_target(template, target_item=seq[t])
                ex = _example(template, key, src, tgt, seq[t])
                if d.future_targets:
                    ex["future"] = [int(i) for i in seq[t + 1 : t + 1 + d.future_targets]]
            ex["history"] = _kept_history(history, src)
            return ex
        if task == "direct":
            seq = d.train_sequences[key]
            banned = set(d.full_sequences[key])  # never a validation / test positive as a negative
            pos = int(seq[int(rng.integers(len(seq)))])
            if template.kind == "yes_no":
                positive = bool(rng.random() < 0.5)
                item = pos if positive else _negative(rng, banned, d.num_items)
                src = d.builder.encode_source(template, user=key, item=item)
                tgt = d.builder.encode_target(template, answer=positive)
                return _example(template, key, src, tgt, item)
            n_neg = d.train_candidates - 1
            negs: list[int] = []
            while len(negs) < n_neg:
                it = _negative(rng, banned, d.num_items)
                banned.add(it)
                negs.append(it)
            cands = [pos, *negs]
            rng.shuffle(cands)
            src = d.builder.encode_source(template, user=key, candidates=cands)
            return _example(template, key, src, d.builder.encode_target(template, target_item=pos), pos)
        ex = d.explanation
        assert ex is not None
        rows = ex.train_rows_by_user()[key]
        row = int(rows[int(rng.integers(len(rows)))])
        return _explanation_example(d, template, row)


def _explanation_example(d: TaskData, template: Template, row: int) -> dict[str, Any]:
    ep = d.explanation
    assert ep is not None
    f = ep.fields(row)
    src = d.builder.encode_source(template, **f)
    tgt = d.builder.encode_target(template, explanation=ep.texts[row], rating=f["rating"])
    ex = _example(template, f["user"], src, tgt, 0)
    ex["reference"] = d.builder.target_text(template, explanation=ep.texts[row], rating=f["rating"])
    return ex


def _kept_history(history: Sequence[int], src: EncodedPrompt) -> list[int]:
    """The history items the prompt actually shows (the builder drops the oldest to fit the budget)."""
    return [int(h) for h in history[len(history) - src.num_history :]] if src.num_history else []


def _negative(rng: np.random.Generator, banned: set[int], num_items: int) -> int:
    if len(banned) >= num_items:
        raise DatasetError("a user interacted with every item: no negative item can be drawn.")
    while True:
        it = int(rng.integers(1, num_items + 1))
        if it not in banned:
            return it


def _example(
    template: Template, user: int, src: EncodedPrompt, labels: list[int], target_item: int
) -> dict[str, Any]:
    return {
        "task": template.task,
        "template": template.index,
        "unseen": template.split == "unseen",
        "user": user,
        "src": src,
        "labels": labels,
        "target_item": target_item,
    }


class EvalSet(Dataset):
    """Fixed evaluation examples of one task, template split and (direct) kind.

    Args:
        data: shared task data.
        task: the task family.
        split: ``seen`` / ``unseen`` (which templates).
        kind: direct kind (``yes_no`` / ``choose``), empty otherwise.
        templates: the templates of that group; example ``j`` uses ``templates[j % len(templates)]``.
        rows: per task: sequential -> ``(user, history, target, exclude)``; direct -> ``(user, candidates
            with the positive first)``; explanation -> pair row.
        seed: seeds the listing order of direct candidates.
    """

    def __init__(
        self,
        data: TaskData,
        task: str,
        split: str,
        kind: str,
        templates: Sequence[Template],
        rows: Sequence[Any],
        seed: int,
    ) -> None:
        self.data = data
        self.task = task
        self.split = split
        self.kind = kind
        self.templates = list(templates)
        self.rows = list(rows)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.split}" + (f"/{self.kind}" if self.kind else "")

    def __getitem__(self, j: int) -> dict[str, Any]:
        d = self.data
        template = self.templates[j % len(self.templates)]
        row = self.rows[j]
        if self.task == "sequential":
            user, history, target, exclude = row
            src = d.builder.encode_source(template, user=user, history=history[-d.max_history :])
            ex = _example(template, user, src, d.builder.encode_target(template, target_item=target), target)
            ex.update(targets=[target], exclude=exclude, history=_kept_history(history, src))
        elif self.task == "direct":
            user, cands = row
            cands = [int(c) for c in cands]
            order = np.random.default_rng([self.seed, 31, user]).permutation(len(cands))
            listed = [cands[k] for k in order.tolist()]
            positive = int(np.nonzero(order == 0)[0][0])
            if self.kind == "yes_no":
                srcs = [d.builder.encode_source(template, user=user, item=c) for c in listed]
                tgt = d.builder.encode_target(template, answer=True)
                ex = _example(template, user, srcs[0], tgt, cands[0])
                ex["srcs"] = srcs
            else:
                src = d.builder.encode_source(template, user=user, candidates=listed)
                ex = _example(
                    template, user, src, d.builder.encode_target(template, target_item=cands[0]), cands[0]
                )
            ex.update(candidates=listed, positive=positive)
        else:
            ex = _explanation_example(d, template, int(row))
        ex.update(split=self.split, kind=self.kind)
        return ex


# ------------------------------------------------------------------------------------------ collate
def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate_prompts(srcs: Sequence[EncodedPrompt], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded prompts into ``(B, L)`` tensors (``attention_mask`` 1 on real tokens)."""
    input_ids = _pad([s.input_ids for s in srcs], pad_id)
    mask = _pad([[1] * len(s) for s in srcs], 0)
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "whole_word_ids": _pad([s.whole_word_ids for s in srcs], 0),
        "feature_items": _pad([s.feature_items for s in srcs], 0),
        "feature_slots": _pad([s.feature_slots for s in srcs], 0),
        "mention_items": _pad([s.mention_items for s in srcs], 0),
    }


class Collator:
    """Collate function of the VIP5 DataModule (picklable, for worker processes).

    Args:
        pad_id: the tokenizer's padding id.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        first = examples[0]
        if "srcs" in first:  # yes/no direct evaluation: one prompt per (user, candidate)
            batch = collate_prompts([s for e in examples for s in e["srcs"]], self.pad_id)
        else:
            batch = collate_prompts([e["src"] for e in examples], self.pad_id)
        batch["labels"] = _pad([e["labels"] for e in examples], LABEL_PAD)
        batch["task_ids"] = torch.tensor([TASK_INDEX[e["task"]] for e in examples], dtype=torch.long)
        batch["template_ids"] = torch.tensor([e["template"] for e in examples], dtype=torch.long)
        batch["unseen"] = torch.tensor([e["unseen"] for e in examples], dtype=torch.bool)
        batch["user"] = torch.tensor([e["user"] for e in examples], dtype=torch.long)
        batch["target_item"] = torch.tensor([e["target_item"] for e in examples], dtype=torch.long)
        if all("history" in e for e in examples):  # sequential prompts: the items they show, oldest first
            batch["history_items"] = _pad([e["history"] for e in examples], 0)
        if any("future" in e for e in examples):
            batch["future_items"] = _pad([e.get("future", []) for e in examples], 0)
        if "split" not in first:
            return batch
        batch["task"], batch["split"], batch["kind"] = first["task"], first["split"], first["kind"]
        if first["task"] == "sequential":
            batch["targets"] = torch.tensor([e["targets"] for e in examples], dtype=torch.long)
            rows = [r for r, e in enumerate(examples) for _ in e["exclude"]]
            cols = [c for e in examples for c in e["exclude"]]
            batch["exclude_rows"] = torch.tensor(rows, dtype=torch.long)
            batch["exclude_cols"] = torch.tensor(cols, dtype=torch.long)
        elif first["task"] == "direct":
            batch["candidates"] = torch.tensor([e["candidates"] for e in examples], dtype=torch.long)
            batch["positive"] = torch.tensor([e["positive"] for e in examples], dtype=torch.long)
        else:
            batch["references"] = [e["reference"] for e in examples]
        return batch
