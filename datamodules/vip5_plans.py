"""Which VIP5 examples a stage holds: the trained / evaluated tasks and their weights, the (task, user) plan
of a training epoch, the evaluation sets of a validation / test stage (one per task, template split and
direct kind) and the predict batches' collate."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.splits import EvalSplit
from mmrec.datamodules.vip5_items import DirectCandidates
from mmrec.datamodules.vip5_tasks import Collator, EvalSet, TaskData
from mmrec.prompts import TASKS


def resolve_tasks(
    tasks: Sequence[str] | None,
    eval_tasks: Sequence[str] | None,
    task_weights: Mapping[str, float] | None,
) -> tuple[list[str], list[str], dict[str, float]]:
    """The trained tasks, the evaluated tasks and each trained task's weight, checked.

    Args:
        tasks: trained task families (``None``: all of :data:`~mmrec.prompts.TASKS`).
        eval_tasks: evaluated families (``evaluation.tasks``; ``None``: the trained ones).
        task_weights: weights that differ from 1 (``training.task_weights``).

    Raises:
        ValueError: an unknown or repeated task, or a weight for a task that is not trained.

    Example:
        >>> resolve_tasks(["sequential", "direct"], None, {"direct": 0.5})
        (['sequential', 'direct'], ['sequential', 'direct'], {'sequential': 1.0, 'direct': 0.5})
    """
    trained = list(tasks or TASKS)
    bad = [t for t in trained if t not in TASKS]
    if bad or not trained or len(set(trained)) != len(trained):
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {tasks}.")
    evaluated = list(eval_tasks or trained)
    if [t for t in evaluated if t not in TASKS]:
        raise ValueError(f"evaluation.tasks must be a subset of {list(TASKS)}, got {eval_tasks}.")
    weights = {t: 1.0 for t in trained}
    weights.update({k: float(v) for k, v in (task_weights or {}).items()})
    if set(weights) - set(trained):
        raise ValueError(
            f"training.task_weights names tasks {sorted(set(weights) - set(trained))} that are not "
            f"trained ({trained}); remove them or add them to tasks."
        )
    return trained, evaluated, weights


def train_plan(
    d: TaskData, tasks: Sequence[str], task_weights: Mapping[str, float], seed: int, where: Path
) -> list[tuple[str, int]]:
    """``[(task, user)]`` of one epoch: ``round(weight * eligible users)`` examples per task.

    Args:
        d: the task data (training sequences, explanation pairs).
        tasks: the trained tasks, in order.
        task_weights: task -> examples per eligible user (a fraction draws that share of the users, seeded).
        seed: seeds the fractional draws.
        where: the dataset folder, named in the error.

    Raises:
        DatasetError: no task has a training example.
    """
    rng = np.random.default_rng([seed, 2])
    plan: list[tuple[str, int]] = []
    for task in tasks:
        w = task_weights[task]
        if task == "sequential":
            keys = [u for u, s in enumerate(d.train_sequences) if len(s) >= 2]
        elif task == "direct":
            keys = [u for u, s in enumerate(d.train_sequences) if len(s) >= 1]
        else:  # users with training reviews; each epoch draws one of the user's pairs
            assert d.explanation is not None
            keys = sorted(d.explanation.train_rows_by_user())
        whole, frac = int(w), w - int(w)
        for _ in range(whole):
            plan.extend((task, u) for u in keys)
        if frac:
            extra = rng.choice(len(keys), size=round(frac * len(keys)), replace=False)
            plan.extend((task, keys[int(k)]) for k in sorted(extra.tolist()))
    if not plan:
        raise DatasetError(f"{where}: no training examples for tasks {list(tasks)}.")
    return plan


def subsample(n: int, limit: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded sample of ``limit`` of ``n`` examples (all of them when ``limit`` is None).

    Example:
        >>> subsample(4, None, 0), len(subsample(10, 3, 0))
        ([0, 1, 2, 3], 3)
    """
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"val_max_users / test_max_users must be >= 1, got {limit}.")
    return sorted(np.random.default_rng([seed, 5]).choice(n, size=limit, replace=False).tolist())


def build_eval_sets(
    d: TaskData,
    tasks: Sequence[str],
    stage: str,
    split: EvalSplit,
    template_splits: Sequence[str],
    *,
    limit: int | None,
    mask_history: bool,
    direct_candidates: Callable[[], Mapping[str, DirectCandidates]],
    seed: int,
) -> list[EvalSet]:
    """The evaluation sets of a stage, one per (task, template split[, direct kind]) with examples.

    Args:
        d: the task data (its ``templates`` give each group's templates).
        tasks: the evaluated tasks.
        stage: ``valid`` or ``test``.
        split: the stage's leave-one-out split (sequential rows).
        template_splits: ``seen`` / ``unseen``.
        limit: evaluate a seeded sample of at most this many users / pairs (``None``: all).
        mask_history: exclude the user's known items from the sequential ranking.
        direct_candidates: stage -> the saved direct-task candidates (called only when direct is evaluated).
        seed: seeds the subsample and each set's candidate order.
    """
    keep = subsample(len(split), limit, seed)
    sets: list[EvalSet] = []
    for task in tasks:
        rows: list[Any]
        groups: list[tuple[str, list[Any]]]
        if task == "sequential":
            rows = []
            for j in keep:
                target = split.targets[j][0]
                exclude = [i for i in split.exclude[j] if i != target] if mask_history else []
                rows.append((split.users[j], split.histories[j], target, exclude))
            groups = [("", rows)]
        elif task == "direct":
            cands = direct_candidates()[stage]
            rows = [(int(cands.users[j]), cands.candidates[j].tolist()) for j in keep]
            groups = [("yes_no", rows), ("choose", rows)]
        else:
            assert d.explanation is not None
            pair_rows = d.explanation.indices(1 if stage == "valid" else 2)
            sel = subsample(len(pair_rows), limit, seed)
            groups = [("", [int(pair_rows[j]) for j in sel])]
        for tsplit in template_splits:
            for kind, rows in groups:
                templates = d.templates.group(task, tsplit, None if task == "explanation" else kind)
                if templates and rows:
                    sets.append(EvalSet(d, task, tsplit, kind, templates, rows, seed))
    return sets


def check_choose_lengths(d: TaskData, num_candidates: int, num_users: int) -> None:
    """Fail now, not mid-epoch, when a choose prompt cannot fit ``max_source_length``: encode every direct
    ``choose`` template with ``num_candidates`` copies of the item with the longest tokens.

    Args:
        d: the task data (builder, templates, catalogue size).
        num_candidates: the most candidates a choose prompt lists (training or evaluation).
        num_users: users of the dataset (the prompt names user ``num_users``, the longest number).
    """
    lengths = [len(d.builder.item_tokens(i)) for i in range(1, d.num_items + 1)]
    longest = int(np.argmax(lengths)) + 1
    for t in d.templates.group("direct", kind="choose"):
        d.builder.encode_source(t, user=num_users, candidates=[longest] * num_candidates)


class PredictCollator:
    """Predict batches carry the full history as targets-free ranking queries (targets all ``-1``)."""

    def __init__(self, inner: Collator) -> None:
        self.inner = inner

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        batch["targets"] = torch.full_like(batch["targets"], -1)
        return batch
