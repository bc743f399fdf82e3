"""Ranking metrics: hand-computed cases, a slow pure-Python reference, torchmetrics, invariants."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from mmrec.metrics import (
    FullRankingEvaluator,
    metric_names,
    metrics_from_ranks,
    ranking_metrics,
    sampled_ranking_metrics,
    target_ranks,
)

LOG2_3 = math.log2(3)
LOG2_4 = 2.0


# ----------------------------------------------------------------------------------- slow reference
def reference_metrics(
    scores: list[list[float]],
    targets: list[list[int]],
    ks: Sequence[int],
    exclude: set[tuple[int, int]] = frozenset(),
    ignore_columns: Sequence[int] = (),
) -> tuple[list[list[int]], list[dict[str, float]]]:
    """Pure-Python reference: per row, sort the valid items and read the pessimistic rank of each target.

    Returns (ranks per row with 0 for padding, metrics per row); a row without targets gets NaNs.
    """
    all_ranks, all_metrics = [], []
    for b, row in enumerate(scores):
        tgts = [t for t in targets[b] if t >= 0]
        valid = [
            j for j in range(len(row)) if j not in ignore_columns and ((b, j) not in exclude or j in tgts)
        ]
        ordered = sorted((row[j] for j in valid), reverse=True)
        ranks = []
        for t in targets[b]:
            if t < 0:
                ranks.append(0)
                continue
            # pessimistic: position of the last item whose score is >= the target's, 1-based
            pos = 0
            while pos < len(ordered) and ordered[pos] >= row[t]:
                pos += 1
            ranks.append(pos)
        all_ranks.append(ranks)
        real = [r for r in ranks if r > 0]
        m: dict[str, float] = {}
        for k in ks:
            if not real:
                m[f"hr@{k}"] = m[f"recall@{k}"] = m[f"ndcg@{k}"] = math.nan
                continue
            hits = [r for r in real if r <= k]
            m[f"hr@{k}"] = 1.0 if hits else 0.0
            m[f"recall@{k}"] = len(hits) / len(real)
            dcg = sum(1.0 / math.log2(r + 1) for r in hits)
            idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(real), k)))
            m[f"ndcg@{k}"] = dcg / idcg
        m["mrr"] = 1.0 / min(real) if real else math.nan
        all_metrics.append(m)
    return all_ranks, all_metrics


def _close(a: float, b: float, tol: float = 1e-5) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ----------------------------------------------------------------------------------- hand-computed
def test_single_target_hand_computed() -> None:
    # row 0: target item 2 (0.8); valid items 1..4 (column 0 ignored): 0.9 > 0.8 -> rank 2.
    #   hr@1 = 0, hr@2 = 1, ndcg@2 = 1/log2(3) = 0.6309, mrr = 1/2.
    # row 1: target item 4 (0.1) is the lowest of 4 items -> rank 4.
    #   hr@2 = 0, ndcg@2 = 0, ndcg@5 = 1/log2(5), mrr = 1/4.
    scores = torch.tensor([[9.0, 0.9, 0.8, 0.2, 0.5], [9.0, 0.7, 0.6, 0.5, 0.1]])
    out = ranking_metrics(scores, torch.tensor([[2], [4]]), ks=(1, 2, 5), ignore_columns=(0,))
    assert out["hr@1"].tolist() == [0.0, 0.0]
    assert out["hr@2"].tolist() == [1.0, 0.0]
    assert out["hr@5"].tolist() == [1.0, 1.0]
    assert out["recall@2"].tolist() == out["hr@2"].tolist()  # one target: recall = hr
    torch.testing.assert_close(out["ndcg@2"], torch.tensor([1 / LOG2_3, 0.0]))
    torch.testing.assert_close(out["ndcg@5"], torch.tensor([1 / LOG2_3, 1 / math.log2(5)]))
    torch.testing.assert_close(out["mrr"], torch.tensor([0.5, 0.25]))


def test_padding_column_counts_unless_ignored() -> None:
    # Column 0 scored 9.0 would rank above the target if it were not ignored.
    scores = torch.tensor([[9.0, 0.9, 0.8]])
    assert target_ranks(scores, torch.tensor([[1]])).tolist() == [[2]]
    assert target_ranks(scores, torch.tensor([[1]]), ignore_columns=(0,)).tolist() == [[1]]
    with pytest.raises(ValueError, match="ignore_columns"):
        target_ranks(scores, torch.tensor([[0]]), ignore_columns=(0,))


def test_ties_are_pessimistic() -> None:
    # Constant scorer: every item ties with the target -> worst rank N, not 1.
    scores = torch.zeros(2, 6)
    assert target_ranks(scores, torch.tensor([[3], [0]])).tolist() == [[6], [6]]
    out = ranking_metrics(scores, torch.tensor([[3], [0]]), ks=(5,))
    assert out["hr@5"].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out["mrr"], torch.tensor([1 / 6, 1 / 6]))
    # Partial tie: target 0.5 ties with one item, one item above -> rank 3 (not 2).
    assert target_ranks(torch.tensor([[0.9, 0.5, 0.5, 0.1]]), torch.tensor([[2]])).tolist() == [[3]]
    # Two targets tied with each other: each counts the other above it.
    assert target_ranks(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([[0, 1]])).tolist() == [[2, 2]]


def test_infinite_scores() -> None:
    # A -inf target ties with every -inf item (pessimistic); excluded items never count.
    scores = torch.tensor([[-math.inf, -math.inf, 1.0, -math.inf]])
    assert target_ranks(scores, torch.tensor([[0]])).tolist() == [[4]]
    excl = (torch.tensor([0, 0]), torch.tensor([1, 3]))
    assert target_ranks(scores, torch.tensor([[0]]), exclude=excl).tolist() == [[2]]
    assert target_ranks(torch.tensor([[math.inf, 0.0]]), torch.tensor([[0]])).tolist() == [[1]]


def test_exclusion_masks_history_but_never_the_target() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.6], [0.1, 0.9, 0.8, 0.7, 0.6]])
    targets = torch.tensor([[3], [3]])
    assert target_ranks(scores, targets).tolist() == [[3], [3]]
    # Row 0 history {1, 2, 3}: 1 and 2 are masked, 3 is the target (repeat consumption) and stays.
    # Row 1 history {4}: below the target, no effect. Duplicated pairs do not double count.
    rows = torch.tensor([0, 0, 0, 1, 0])
    cols = torch.tensor([1, 2, 3, 4, 1])
    assert target_ranks(scores, targets, exclude=(rows, cols)).tolist() == [[1], [3]]
    out = ranking_metrics(scores, targets, ks=(1,), exclude=(rows, cols))
    assert out["hr@1"].tolist() == [1.0, 0.0]
    # Dense bool mask gives the same ranks.
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[rows, cols] = True
    assert target_ranks(scores, targets, exclude=mask).tolist() == [[1], [3]]
    # Excluding an ignored column does not subtract it twice.
    scores0 = torch.tensor([[5.0, 0.9, 0.8]])
    excl0 = (torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert target_ranks(scores0, torch.tensor([[2]]), exclude=excl0, ignore_columns=(0,)).tolist() == [[1]]


def test_multi_target_hand_computed() -> None:
    # Items 0..5 scored descending: rank of item j = j + 1. Targets {0, 3, 5} -> ranks 1, 4, 6.
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    targets = torch.tensor([[0, 3, 5, -1]])
    assert target_ranks(scores, targets).tolist() == [[1, 4, 6, 0]]
    out = ranking_metrics(scores, targets, ks=(1, 2, 4, 10))
    # recall@K = hits / 3: K=1 -> 1/3, K=4 -> 2/3, K=10 -> 1.
    torch.testing.assert_close(out["recall@1"], torch.tensor([1 / 3]))
    torch.testing.assert_close(out["recall@4"], torch.tensor([2 / 3]))
    torch.testing.assert_close(out["recall@10"], torch.tensor([1.0]))
    # ndcg@2: DCG = 1 (rank 1); IDCG(min(3,2)=2) = 1 + 1/log2(3).
    torch.testing.assert_close(out["ndcg@2"], torch.tensor([1 / (1 + 1 / LOG2_3)]))
    # ndcg@4: DCG = 1 + 1/log2(5); IDCG(3) = 1 + 1/log2(3) + 1/log2(4).
    torch.testing.assert_close(
        out["ndcg@4"], torch.tensor([(1 + 1 / math.log2(5)) / (1 + 1 / LOG2_3 + 1 / LOG2_4)])
    )
    # ndcg@10: DCG = 1 + 1/log2(5) + 1/log2(7).
    torch.testing.assert_close(
        out["ndcg@10"],
        torch.tensor([(1 + 1 / math.log2(5) + 1 / math.log2(7)) / (1 + 1 / LOG2_3 + 1 / LOG2_4)]),
    )
    assert out["hr@1"].item() == 1.0 and out["mrr"].item() == 1.0


def test_multi_target_best_rank_drives_mrr_and_hr() -> None:
    # Targets {2, 1} at ranks 3 and 2 -> mrr = 1/2; hr@2 = 1, recall@2 = 1/2.
    scores = torch.tensor([[0.9, 0.5, 0.4, 0.1]])
    out = ranking_metrics(scores, torch.tensor([[2, 1]]), ks=(2,))
    assert out["mrr"].item() == 0.5
    assert out["hr@2"].item() == 1.0 and out["recall@2"].item() == 0.5
    # ndcg@2: DCG = 1/log2(3); IDCG(2) = 1 + 1/log2(3).
    assert out["ndcg@2"].item() == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3), abs=1e-6)


def test_padding_targets_and_empty_rows() -> None:
    scores = torch.tensor([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    targets = torch.tensor([[-1, 1], [-1, -1]])
    assert target_ranks(scores, targets).tolist() == [[0, 2], [0, 0]]
    out = ranking_metrics(scores, targets, ks=(1,))
    assert out["mrr"][0].item() == 0.5 and math.isnan(out["mrr"][1].item())
    # 1-D targets are read as (B, 1).
    assert target_ranks(scores, torch.tensor([2, 0])).tolist() == [[3], [1]]


def test_metrics_from_ranks_and_names() -> None:
    assert metric_names((10, 5, 5)) == ["hr@5", "hr@10", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr"]
    out = metrics_from_ranks(torch.tensor([[3]]), ks=(3,))
    assert out["ndcg@3"].item() == pytest.approx(1 / LOG2_4)


def test_sampled_ranking_metrics() -> None:
    # Positive first; row 0: one negative above -> rank 2; row 1: tie with one negative -> rank 2;
    # row 2: all above -> rank 4.
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.2], [0.5, 0.5, 0.1, 0.2], [0.0, 0.9, 0.1, 0.2]])
    out = sampled_ranking_metrics(scores, positive_index=0, ks=(1, 3))
    assert out["hr@1"].tolist() == [0.0, 0.0, 0.0]
    assert out["hr@3"].tolist() == [1.0, 1.0, 0.0]
    torch.testing.assert_close(out["mrr"], torch.tensor([0.5, 0.5, 0.25]))
    torch.testing.assert_close(out["ndcg@3"], torch.tensor([1 / LOG2_3, 1 / LOG2_3, 0.0]))
    # Per-row positive index.
    out2 = sampled_ranking_metrics(scores, positive_index=torch.tensor([1, 0, 1]), ks=(1,))
    assert out2["hr@1"].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="positive_index"):
        sampled_ranking_metrics(scores, positive_index=4)


@pytest.mark.parametrize(
    ("scores", "targets", "exclude", "match"),
    [
        (torch.zeros(3), torch.tensor([[0]]), None, r"\(B, N\)"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([[0], [1]]), None, "floating"),
        (torch.zeros(2, 3), torch.tensor([[0]]), None, "B = scores.shape"),
        (torch.zeros(1, 3), torch.tensor([[3]]), None, r"in \[0, 3\)"),
        (torch.zeros(1, 3), torch.tensor([[-2]]), None, "-1 for padding"),
        (torch.zeros(1, 3), torch.tensor([[1, 1]]), None, "repeat an item"),
        (torch.tensor([[0.0, math.nan]]), torch.tensor([[0]]), None, "NaN"),
        (torch.zeros(1, 3), torch.tensor([[0]]), (torch.tensor([0]), torch.tensor([5])), "exclude cols"),
        (torch.zeros(1, 3), torch.tensor([[0]]), (torch.tensor([2]), torch.tensor([1])), "exclude rows"),
        (torch.zeros(1, 3), torch.tensor([[0]]), (torch.tensor([0, 0]), torch.tensor([1])), "equal length"),
        (torch.zeros(1, 3), torch.tensor([[0]]), torch.zeros(1, 2, dtype=torch.bool), "bool mask"),
    ],
)
def test_errors_are_actionable(scores: torch.Tensor, targets, exclude, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        target_ranks(scores, targets, exclude=exclude)


def test_bad_ks() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics(torch.zeros(1, 3), torch.tensor([[0]]), ks=(0,))
    with pytest.raises(ValueError, match="empty"):
        FullRankingEvaluator(ks=())


# ----------------------------------------------------------------------------------- vs reference
@st.composite
def ranking_problems(draw: st.DrawFn) -> tuple:
    b = draw(st.integers(1, 5))
    n = draw(st.integers(2, 12))
    t = draw(st.integers(1, min(3, n - 1)))
    # Few distinct score values so that ties are frequent.
    values = st.sampled_from([-math.inf, -1.0, 0.0, 0.25, 0.5, 1.0, 2.0])
    scores = [[draw(values) for _ in range(n)] for _ in range(b)]
    ignore = draw(st.sampled_from([(), (0,)]))
    targets = []
    for _ in range(b):
        items = draw(st.lists(st.integers(1, n - 1), min_size=1, max_size=t, unique=True))
        n_pad = t - len(items)
        row = items + [-1] * n_pad
        targets.append(draw(st.permutations(row)))
    exclude = draw(st.lists(st.tuples(st.integers(0, b - 1), st.integers(0, n - 1)), max_size=3 * b))
    ks = draw(st.lists(st.integers(1, n + 2), min_size=1, max_size=3, unique=True))
    return scores, targets, exclude, ignore, ks


@settings(derandomize=True, max_examples=150, deadline=None)
@given(ranking_problems())
def test_matches_reference(problem: tuple) -> None:
    scores, targets, exclude, ignore, ks = problem
    rows = torch.tensor([r for r, _ in exclude], dtype=torch.long)
    cols = torch.tensor([c for _, c in exclude], dtype=torch.long)
    ref_ranks, ref_metrics = reference_metrics(scores, targets, ks, set(exclude), ignore)
    s = torch.tensor(scores, dtype=torch.float32)
    tg = torch.tensor(targets)
    ranks = target_ranks(s, tg, exclude=(rows, cols), ignore_columns=ignore)
    assert ranks.tolist() == ref_ranks
    out = ranking_metrics(s, tg, ks=ks, exclude=(rows, cols), ignore_columns=ignore)
    for b, ref in enumerate(ref_metrics):
        for name, value in ref.items():
            assert _close(out[name][b].item(), value), (name, b, out[name][b].item(), value)


# ----------------------------------------------------------------------------------- vs torchmetrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchmetrics_retrieval(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, n = 17, 40
    # Continuous, so no ties. Positive, because torchmetrics 1.9's reciprocal rank treats items with a
    # score <= 0 as not retrieved (see Lightning-AI/torchmetrics PR #3104); our ranks use every item.
    scores = torch.rand(b, n, generator=g, dtype=torch.float64) + 0.5
    n_targets = torch.randint(1, 5, (b,), generator=g)
    targets = torch.full((b, 4), -1)
    relevance = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        items = torch.randperm(n, generator=g)[: int(n_targets[i])]
        targets[i, : len(items)] = items
        relevance[i, items] = True
    ks = (1, 3, 5, 10)
    ev = FullRankingEvaluator(ks=ks)
    ev.update(scores, targets)
    ours = ev.compute()
    indexes = torch.arange(b).unsqueeze(1).expand(b, n).reshape(-1)
    preds, target = scores.reshape(-1), relevance.reshape(-1)
    for k in ks:
        for name, cls in (
            ("hr", RetrievalHitRate),
            ("ndcg", RetrievalNormalizedDCG),
            ("recall", RetrievalRecall),
        ):
            ref = cls(top_k=k)(preds, target, indexes=indexes).item()
            assert ours[f"{name}@{k}"] == pytest.approx(ref, abs=1e-6), (name, k)
    assert ours["mrr"] == pytest.approx(RetrievalMRR()(preds, target, indexes=indexes).item(), abs=1e-6)


# ----------------------------------------------------------------------------------- evaluator
def _random_batch(seed: int, b: int = 10, n: int = 30, t: int = 3) -> tuple:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (b, n), generator=g).float()  # ties on purpose
    targets = torch.stack([torch.randperm(n - 1, generator=g)[:t] + 1 for _ in range(b)])
    pad = torch.rand(b, t, generator=g) < 0.3
    pad[:, 0] = False  # every row keeps at least one target
    targets[pad] = -1
    rows = torch.randint(0, b, (4 * b,), generator=g)
    cols = torch.randint(0, n, (4 * b,), generator=g)
    return scores, targets, rows, cols


def test_batched_accumulation_equals_all_at_once() -> None:
    scores, targets, rows, cols = _random_batch(0, b=10)
    ks = (1, 3, 10)
    whole = FullRankingEvaluator(ks=ks, ignore_columns=(0,))
    whole.update(scores, targets, exclude=(rows, cols))
    batched = FullRankingEvaluator(ks=ks, ignore_columns=(0,))
    for start in range(0, 10, 3):  # batches of 3, 3, 3, 1
        sel = (rows >= start) & (rows < start + 3)
        batched.update(
            scores[start : start + 3], targets[start : start + 3], exclude=(rows[sel] - start, cols[sel])
        )
    a, b = whole.compute(), batched.compute()
    assert a.keys() == b.keys() and a["num_users"] == b["num_users"] == 10
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-9), name
    # compute() = mean of the per-row values.
    per_row = ranking_metrics(scores, targets, ks, exclude=(rows, cols), ignore_columns=(0,))
    for name, values in per_row.items():
        assert a[name] == pytest.approx(values.double().mean().item(), abs=1e-6)
    batched.reset()
    assert batched.num_users.item() == 0 and torch.all(batched.sums == 0)


def test_merge_state_is_the_distributed_reduction() -> None:
    # Two "processes" evaluating disjoint users, merged with the states' sum reduction == one process.
    scores, targets, rows, cols = _random_batch(1, b=8)
    whole = FullRankingEvaluator(ks=(1, 5))
    whole.update(scores, targets, exclude=(rows, cols))
    first, second = FullRankingEvaluator(ks=(1, 5)), FullRankingEvaluator(ks=(1, 5))
    sel = rows < 5
    first.update(scores[:5], targets[:5], exclude=(rows[sel], cols[sel]))
    second.update(scores[5:], targets[5:], exclude=(rows[~sel] - 5, cols[~sel]))
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    assert merged.keys() == expected.keys()
    for name in expected:
        assert merged[name] == pytest.approx(expected[name], abs=1e-9), name


def test_evaluator_empty_rows() -> None:
    scores = torch.tensor([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    targets = torch.tensor([[0], [-1]])
    with pytest.raises(ValueError, match="empty_target_action='skip'"):
        FullRankingEvaluator(ks=(1,)).update(scores, targets)
    ev = FullRankingEvaluator(ks=(1,), empty_target_action="skip")
    ev.update(scores, targets)
    res = ev.compute()
    assert res["num_users"] == 1 and res["num_skipped_users"] == 1 and res["hr@1"] == 1.0
    with pytest.warns(UserWarning):
        assert math.isnan(FullRankingEvaluator(ks=(1,)).compute()["mrr"])


def test_evaluator_state_is_bounded_and_sum_reduced() -> None:
    ev = FullRankingEvaluator(ks=(5, 10))
    for seed in range(3):
        scores, targets, rows, cols = _random_batch(seed)
        ev.update(scores, targets, exclude=(rows, cols))
    # Without list_k / keep_per_user only running sums and counts grow, whatever the number of batches:
    # the list states (top lists, per-user values) stay empty.
    assert {"sums", "num_users", "num_skipped_users", "group_sums", "group_users"} <= set(ev._defaults)
    assert all(len(getattr(ev, name)) == 0 for name in ("raw_lists", "eval_lists", "users", "row_values"))
    assert ev.sums.shape == (len(metric_names((5, 10))),)
    assert all(fx is not None for fx in ev._reductions.values())
    assert ev.compute()["num_users"] == 30


@settings(derandomize=True, max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_invariants(seed: int) -> None:
    scores, targets, rows, cols = _random_batch(seed, b=6, n=15)
    n_valid_max = scores.shape[1]
    ks = (1, 2, 5, 10, n_valid_max)
    out = ranking_metrics(scores, targets, ks, exclude=(rows, cols))
    for name, values in out.items():
        assert torch.all((values >= 0) & (values <= 1)), name
    for small, large in itertools.pairwise(ks):
        assert torch.all(out[f"hr@{small}"] <= out[f"hr@{large}"])
        assert torch.all(out[f"recall@{small}"] <= out[f"recall@{large}"])
    assert torch.all(out["mrr"] <= out[f"hr@{n_valid_max}"] + 1e-7)
    assert torch.all(out[f"hr@{n_valid_max}"] == 1)  # every target is ranked somewhere within N
    assert torch.all(out[f"recall@{n_valid_max}"] == 1)


def test_perfect_scorer_gives_one() -> None:
    b, n = 4, 20
    targets = torch.tensor([[3, 7, -1], [1, -1, -1], [19, 0, 5], [2, 4, 6]])
    scores = torch.rand(b, n, generator=torch.Generator().manual_seed(0))
    for i in range(b):  # targets strictly above every other item
        for t in targets[i][targets[i] >= 0]:
            scores[i, t] = 2.0 + float(t) / 100
    # history items scored even higher but masked
    scores[:, 10] = 5.0
    rows, cols = torch.arange(b), torch.full((b,), 10)
    ev = FullRankingEvaluator(ks=(1, 3, 5))
    ev.update(scores, targets, exclude=(rows, cols))
    res = ev.compute()
    for name in metric_names((1, 3, 5)):
        if name.startswith("recall@1"):
            continue  # recall@1 with 3 targets is at most 1/3 by definition
        assert res[name] == pytest.approx(1.0), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu() -> None:
    scores, targets, rows, cols = _random_batch(3, b=50, n=200)
    cpu = ranking_metrics(scores, targets, (1, 10), exclude=(rows, cols), ignore_columns=(0,))
    gpu = ranking_metrics(
        scores.cuda(), targets.cuda(), (1, 10), exclude=(rows.cuda(), cols.cuda()), ignore_columns=(0,)
    )
    for name in cpu:
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], equal_nan=True)
    ev = FullRankingEvaluator(ks=(1, 10), ignore_columns=(0,)).cuda()
    ev.update(scores.cuda(), targets.cuda(), exclude=(rows.cuda(), cols.cuda()))
    assert ev.compute()["num_users"] == 50


def test_bench_script_smoke(repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The benchmark runs end to end on a tiny problem, checks batched == loop, and ends with JSON."""
    monkeypatch.syspath_prepend(str(repo_root / "bench"))
    spec = importlib.util.spec_from_file_location(
        "eval_full_ranking", repo_root / "bench" / "eval_full_ranking.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--users", "60", "--items", "90", "--batch-size", "16", "--loop-users", "25"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed["users"] == 60 and parsed["loop_users"] == 25 and parsed["metrics_match"] is True
    assert parsed["batched_users_per_s"] > 0 and result["speedup"] > 0


def test_retrieval_bench_smoke(repo_root: Path, tmp_path: Path) -> None:
    """bench/retrieval.py runs end to end on a tiny catalogue and ends with its JSON figures (steps in one
    process; the subprocess-per-step mode differs only in how each step is started)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            str(repo_root / "bench" / "retrieval.py"),
            *("--sizes", "3000", "--queries", "40", "--repeats", "2", "--nprobe-sweep", "4"),
            *("--skip", "store,eval", "--workdir", str(tmp_path), "--in-process"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    r = out["sizes"]["3000"]
    assert r["torch"]["recall@10"] == 1.0 and r["flat"]["recall@10"] == 1.0
    assert r["approx"]["faiss_index"].endswith("x4fs") and r["approx"]["params"]["target_recall"] == 0.95
    assert 0.9 <= r["approx"]["recall@10"] <= 1.0
    sweep = {row["nprobe"]: row for row in r["approx"]["sweep"]}
    assert 4 in sweep and any(
        row.get("calibrated_for", {}).get("target_recall") == 0.97 for row in sweep.values()
    )
    assert all(v > 0 for v in (r["torch"]["qps"], r["flat"]["qps"], r["approx"]["qps"], sweep[4]["qps"]))
    assert r["timing"]["rounds"] == 2 and out["goal_met"] is None  # no size above 100k measured
