"""Building blocks of the VIP5 DataModule: the mixed-task training set, evaluation sets and the collate
function. Item indexing and the saved direct-task candidates (:mod:`mmrec.datamodules.vip5_items`) and
explanation pairs (:mod:`mmrec.datamodules.vip5_explanation`) live in modules of their own; their names
are re-exported here.

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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.vip5_explanation import (
    ExplanationPairs,
    explanation_pairs,
    explanation_text,
    feature_words,
    loo_codes,
)
from mmrec.datamodules.vip5_items import (
    DirectCandidates,
    candidates_path,
    draw_negatives,
    item_numbering,
    load_or_draw_candidates,
)
from mmrec.prompts import TASKS, EncodedPrompt, PromptBuilder, Template, TemplateSet

# item indexing, candidates and explanation pairs live in their own modules; importable from here too
__all__ = [
    "LABEL_PAD",
    "TASK_INDEX",
    "Collator",
    "DirectCandidates",
    "EpochSampler",
    "EvalSet",
    "ExplanationPairs",
    "MixedTaskTrainSet",
    "TaskData",
    "candidates_path",
    "collate_prompts",
    "draw_negatives",
    "explanation_pairs",
    "explanation_text",
    "feature_words",
    "item_numbering",
    "load_or_draw_candidates",
    "loo_codes",
]

TASK_INDEX = {t: i for i, t in enumerate(TASKS)}
LABEL_PAD = -100


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
        pairs = d.explanation
        assert pairs is not None
        rows = pairs.train_rows_by_user()[key]
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


def collate_prompts(srcs: Sequence[EncodedPrompt], pad_id: int) -> dict[str, Any]:
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
