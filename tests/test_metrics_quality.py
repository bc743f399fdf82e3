"""Beyond-accuracy metrics of the evaluator, hand-computed: top lists, coverage, same-list share, item groups,
per-user values."""

from __future__ import annotations

import math

import pytest
import torch

from mmrec.metrics import (
    FullRankingEvaluator,
    coverage,
    item_groups,
    same_list_share,
    top_k_lists,
)

# 3 users x (padding + 5 items); column 0 is padding (ignored)
SCORES = torch.tensor(
    [
        [0.0, 0.9, 0.8, 0.7, 0.1, 0.2],
        [0.0, 0.9, 0.8, 0.1, 0.7, 0.2],
        [0.0, 0.1, 0.2, 0.9, 0.8, 0.3],
    ]
)
TARGETS = torch.tensor([[3], [4], [5]])
# user 0 has item 1 in its history, user 2 item 3
EXCLUDE = (torch.tensor([0, 2]), torch.tensor([1, 3]))
# training counts per column: head (40% of 5 items = 2) = {1, 2}; tail = {3, 4, 5}; cold (<= 1) = {3, 4}
POPULARITY = torch.tensor([0.0, 10, 8, 1, 0, 3])


def test_top_k_lists_ignore_and_exclude() -> None:
    assert top_k_lists(SCORES, 2, ignore_columns=(0,)).tolist() == [[1, 2], [1, 2], [3, 4]]
    assert top_k_lists(SCORES, 2, EXCLUDE, ignore_columns=(0,)).tolist() == [[2, 3], [1, 2], [4, 5]]
    dense = torch.zeros_like(SCORES, dtype=torch.bool)
    dense[0, 1] = dense[2, 3] = True
    assert top_k_lists(SCORES, 2, dense, ignore_columns=(0,)).tolist() == [[2, 3], [1, 2], [4, 5]]
    before = SCORES.clone()
    top_k_lists(SCORES, 3, EXCLUDE, ignore_columns=(0,))
    assert torch.equal(SCORES, before)  # scores are never modified


def test_coverage_and_same_list_share_by_hand() -> None:
    assert coverage(torch.tensor([[2, 3], [1, 2], [4, 5]]), 5) == 1.0
    assert coverage(torch.tensor([[1, 2], [1, 2], [3, 4]]), 5) == pytest.approx(0.8)
    assert same_list_share(torch.tensor([[1, 2], [1, 2], [3, 4]])) == pytest.approx(2 / 3)
    assert same_list_share(torch.tensor([[1, 2], [2, 1]])) == 0.5  # order matters: a list is ordered
    assert same_list_share(torch.tensor([[7, 8]] * 4)) == 1.0
    assert math.isnan(same_list_share(torch.zeros(0, 10, dtype=torch.long)))
    with pytest.raises(ValueError, match="num_items"):
        coverage(torch.tensor([[1]]), 0)


def test_item_groups_by_hand_and_ties_at_the_boundary() -> None:
    g = item_groups(POPULARITY, head_fraction=0.4, cold_max_count=1, ignore_columns=(0,))
    assert g["head"].nonzero().flatten().tolist() == [1, 2]
    assert g["tail"].nonzero().flatten().tolist() == [3, 4, 5]
    assert g["cold"].nonzero().flatten().tolist() == [3, 4]
    # items 2 and 3 tie at the boundary: the lower column goes to the head, the head keeps its exact size
    t = item_groups(torch.tensor([0.0, 5, 3, 3, 1]), head_fraction=0.5, cold_max_count=0, ignore_columns=(0,))
    assert t["head"].nonzero().flatten().tolist() == [1, 2] and t["tail"].nonzero().flatten().tolist() == [
        3,
        4,
    ]
    assert not t["cold"].any() and not any(m[0] for m in t.values())  # padding is in no group
    with pytest.raises(ValueError, match="head_fraction"):
        item_groups(POPULARITY, head_fraction=1.0)
    with pytest.raises(ValueError, match="cold_max_count"):
        item_groups(POPULARITY, cold_max_count=-1)


def _evaluator(**kw: object) -> FullRankingEvaluator:
    ev = FullRankingEvaluator(ks=(2,), ignore_columns=(0,), list_k=2, keep_per_user=True, **kw)
    ev.set_item_groups(item_groups(POPULARITY, head_fraction=0.4, cold_max_count=1, ignore_columns=(0,)))
    return ev


def test_evaluator_lists_groups_and_per_user_by_hand() -> None:
    ev = _evaluator()
    ev.update(SCORES, TARGETS, exclude=EXCLUDE, users=torch.tensor([7, 8, 9]))
    out = ev.compute()
    # ranks with history masked: user 0 -> 2 (item 1 masked), user 1 -> 3, user 2 -> 2 (item 3 masked)
    assert out["hr@2"] == pytest.approx(2 / 3)
    assert out["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    # coverage on the evaluated (masked) lists [2,3] [1,2] [4,5]; same-list share on the unmasked lists
    assert out["coverage@2"] == 1.0
    assert out["same_top2_share"] == pytest.approx(2 / 3)
    # every target is a tail item; the targets of users 0 and 1 (items 3, 4) are cold; none is head
    assert out["tail/num_users"] == 3 and out["tail/hr@2"] == pytest.approx(2 / 3)
    assert out["tail/ndcg@2"] == pytest.approx(2 / math.log2(3) / 3)
    assert out["cold/num_users"] == 2 and out["cold/hr@2"] == 0.5
    assert out["cold/mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert out["head/num_users"] == 0 and math.isnan(out["head/ndcg@2"])
    per = ev.per_user()
    assert per["user"].tolist() == [7, 8, 9]
    assert per["mrr"].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert per["hr@2"].tolist() == [1.0, 0.0, 1.0]


def test_unmasked_lists_catch_a_user_independent_scorer_even_with_masking() -> None:
    ev = FullRankingEvaluator(ks=(2,), ignore_columns=(0,), list_k=2)
    same = SCORES[:1].repeat(3, 1)  # identical scores for every user
    ev.update(same, TARGETS, exclude=EXCLUDE)
    out = ev.compute()
    assert out["same_top2_share"] == 1.0  # masking makes the shown lists differ, the scorer is still constant
    assert out["coverage@2"] == pytest.approx(3 / 5)  # masked lists [2,3] [1,2] [1,2]


def test_evaluator_states_merge_like_ddp() -> None:
    whole = _evaluator()
    whole.update(SCORES, TARGETS, exclude=EXCLUDE, users=torch.tensor([7, 8, 9]))
    first, second = _evaluator(), _evaluator()
    first.update(
        SCORES[:2], TARGETS[:2], exclude=(torch.tensor([0]), torch.tensor([1])), users=torch.tensor([7, 8])
    )
    second.update(
        SCORES[2:], TARGETS[2:], exclude=(torch.tensor([0]), torch.tensor([3])), users=torch.tensor([9])
    )
    first.merge_state(second)
    a, b = first.compute(), whole.compute()
    for key, value in b.items():
        assert a[key] == pytest.approx(value, nan_ok=True), key
    per = first.per_user()  # merged processes: rows in any order, each user with its own values
    assert dict(zip(per["user"].tolist(), per["mrr"].tolist())) == pytest.approx(
        {7: 1 / 2, 8: 1 / 3, 9: 1 / 2}
    )


def test_evaluator_option_errors() -> None:
    with pytest.raises(ValueError, match="list_k"):
        FullRankingEvaluator(list_k=0)
    with pytest.raises(RuntimeError, match="keep_per_user=True"):
        FullRankingEvaluator().per_user()
    ev = FullRankingEvaluator(ks=(2,))
    with pytest.raises(ValueError, match="missing"):
        ev.set_item_groups({"head": torch.ones(3, dtype=torch.bool)})
    ev.set_item_groups(item_groups(torch.tensor([0.0, 1, 2]), ignore_columns=(0,)))
    with pytest.raises(ValueError, match="same catalogue"):
        ev.update(SCORES, TARGETS)
