"""Losses for large catalogues (issue 14, item 3): sampled softmax with logQ correction, in-batch negatives,
as options of every sequential model."""

from __future__ import annotations

import math

import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mmrec.models import create_model
from mmrec.models.registry import MODELS
from mmrec.nn.losses import NextItemLoss, full_softmax_ce, in_batch_softmax_ce, sampled_softmax_ce
from mmrec.protocols import ModelInputs

CAT = {"num_items": 30, "num_users": 5, "max_len": 6}
SEQUENTIAL = ("sequential/sasrec", "sequential/gru4rec", "sequential/bert4rec")


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, 8, generator=g)
    items = torch.randn(31, 8, generator=g)
    targets = torch.tensor([[0, 3, 4, 5], [0, 0, 7, 7], [1, 30, 2, 9]])
    return hidden, items, targets


def test_sampled_with_every_item_as_negative_is_the_full_softmax() -> None:
    hidden, items, targets = _batch()
    keep = targets > 0
    full = full_softmax_ce(hidden[keep], items, targets[keep])
    for logq in (True, False):
        for sampling in ("uniform", "popularity"):
            loss = NextItemLoss(
                "sampled", 30, num_negatives=30, negative_sampling=sampling, logq_correction=logq
            )
            loss.attach_popularity(torch.arange(31.0))  # ignored: the whole catalogue has q = 1
            assert torch.allclose(loss(hidden, items, targets), full, rtol=1e-6, atol=1e-6)
    assert NextItemLoss("ce", 30)(hidden, items, targets) == pytest.approx(float(full))


def test_logq_correction_subtracts_the_log_sampling_probability() -> None:
    hidden, items, targets = _batch()
    keep = targets > 0
    counts = torch.arange(31.0) ** 2  # column 0 padding; item j counted j**2 times (item 0 -> clamped to 1)
    loss = NextItemLoss("sampled", 30, num_negatives=12, negative_sampling="popularity")
    loss.attach_popularity(counts)
    q = counts.clamp(min=1)
    q[0] = 0
    q = q / q.sum()
    assert torch.allclose(loss.sampling_probs, q)
    torch.manual_seed(3)
    negatives, log_q = loss.shared_negatives(torch.device("cpu"))
    assert log_q is not None and torch.allclose(log_q[1:], q[1:].log())
    torch.manual_seed(3)
    value = loss(hidden, items, targets)
    # by hand: logits s - log q for the positive and each negative, accidental hits removed
    h, pos = hidden[keep], targets[keep]
    rows = []
    for hp, p in zip(h, pos):
        logits = [float(hp @ items[p]) - math.log(q[p])]
        logits += [float(hp @ items[n]) - math.log(q[n]) for n in negatives if int(n) != int(p)]
        rows.append(-F.log_softmax(torch.tensor(logits, dtype=torch.float64), 0)[0])
    assert float(value) == pytest.approx(float(torch.stack(rows).mean()), rel=1e-5)
    uncorrected = sampled_softmax_ce(h, items, pos, negatives)
    assert abs(float(uncorrected) - float(value)) > 1e-3  # the correction changes the loss
    # popularity draws favour popular items (item 30 is ~900x item 1)
    draws = torch.multinomial(loss.sampling_probs, 20000, replacement=True)
    assert (draws > 20).float().mean() > 0.6 and (draws == 0).sum() == 0


def test_uniform_sampling_needs_no_correction_and_excludes_padding() -> None:
    loss = NextItemLoss("sampled", 1000, num_negatives=500)
    torch.manual_seed(0)
    negatives, log_q = loss.shared_negatives(torch.device("cpu"))
    assert (
        log_q is None
        and negatives.shape == (500,)
        and int(negatives.min()) >= 1
        and int(negatives.max()) <= 1000
    )


def test_in_batch_negatives_by_hand() -> None:
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pos = torch.tensor([1, 2, 1])  # candidates {1, 2}; item 1 is 2/3 of the batch
    logits = h @ items[[1, 2]].T
    plain = F.cross_entropy(logits, torch.tensor([0, 1, 0]))
    corrected = F.cross_entropy(logits - torch.tensor([2 / 3, 1 / 3]).log(), torch.tensor([0, 1, 0]))
    assert float(in_batch_softmax_ce(h, items, pos, logq_correction=False)) == pytest.approx(float(plain))
    assert float(in_batch_softmax_ce(h, items, pos)) == pytest.approx(float(corrected))
    loss = NextItemLoss("inbatch", 3)
    assert float(loss(h[None], items, pos[None])) == pytest.approx(float(corrected))


@pytest.mark.parametrize("name", SEQUENTIAL)
@pytest.mark.parametrize("kind", ["sampled", "inbatch"])
def test_every_sequential_model_trains_with_the_large_catalogue_losses(name: str, kind: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, catalog=CAT, loss=kind, num_negatives=8, **MODELS.meta(name)["tiny"])
    batch = {
        "user": torch.tensor([0, 1]),
        "input_ids": torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
        "target_ids": torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]]),
    }
    loss = model.training_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="negative_sampling must be one of"):
        NextItemLoss("sampled", 10, negative_sampling="zipf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        NextItemLoss("sampled", 10, num_negatives=0)
    with pytest.raises(ValueError, match="popularity has 5 columns"):
        NextItemLoss("sampled", 10).attach_popularity(torch.ones(5))


def test_models_take_the_popularity_from_the_training_interactions() -> None:
    counts = sp.csr_matrix(([3.0, 1.0, 5.0], ([0, 1, 1], [2, 2, 7])), shape=(2, 31))
    model = create_model(
        "sequential/sasrec", catalog=CAT, dim=8, num_layers=1, loss="sampled", negative_sampling="popularity"
    )
    model.attach_data(ModelInputs({"train_interactions": lambda: counts}))
    probs = model.next_item_loss.sampling_probs
    assert probs[0] == 0 and probs[2] == pytest.approx(4 / (4 + 5 + 28)) and probs[7] == pytest.approx(5 / 37)


# ---------------------------------------------------------------------------------------------- eval path
@pytest.mark.parametrize("name", ["sequential/sasrec", "sequential/multimodal"])
def test_last_position_path_equals_the_full_forward(name: str) -> None:
    torch.manual_seed(0)
    cat = {**CAT, "feature_dims": {"img": 5}} if name == "sequential/multimodal" else CAT
    model = create_model(name, catalog=cat, dim=8, num_layers=2, num_heads=2).eval()
    if name == "sequential/multimodal":
        model.attach_item_features({"img": (torch.randn(31, 5), torch.ones(31, dtype=torch.bool))})
    ids = torch.tensor([[0, 0, 0, 4], [0, 3, 2, 9], [5, 6, 7, 8]])
    full = model.sequence_hidden(ids)[:, -1]
    assert torch.equal(model.query_vectors({"input_ids": ids}), full)  # outside an evaluation epoch: full path
    model.on_test_epoch_start()
    model._eval_items()  # an evaluation epoch caches the item vectors: last-position path
    assert torch.allclose(model.query_vectors({"input_ids": ids}), full, atol=1e-6)
    calls: list[tuple[int, ...]] = []
    hook = model.encoder.blocks[-1].register_forward_hook(lambda m, a, o: calls.append(tuple(o.shape)))
    model.query_vectors({"input_ids": ids})
    assert calls == [(3, 4, 8)]  # a hooked block (as adapters do) gets the full forward
    hook.remove()
    model.query_vectors({"input_ids": ids})
    assert calls == [(3, 4, 8)]
    last_only = model.encoder(model.item_vectors()[ids], ids, last_only=True)
    assert last_only.shape == (3, 1, 8) and torch.allclose(last_only[:, 0], full, atol=1e-6)
