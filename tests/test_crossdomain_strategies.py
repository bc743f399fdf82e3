"""Transfer strategies on a pre-trained TransferableRecommender: exact trainable parameters, identity at start,
in-domain softmax, and pre-trained weights that load with ``weights_only=True`` into a new catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmrec.adapters import apply_strategy
from mmrec.adapters.strategies import strategy_keys
from mmrec.models import MODELS
from mmrec.models.transferable import TransferableRecommender

FEAT = 5
SOURCE = {
    "num_items": 7,
    "num_users": 4,
    "feature_dims": {"text": FEAT},
    "domains": [{"name": "a", "offset": 0, "num_items": 3}, {"name": "b", "offset": 3, "num_items": 4}],
}
TARGET = {"num_items": 6, "num_users": 3, "feature_dims": {"text": FEAT}}


def _bottleneck(prefix: str) -> list[str]:
    return [f"adapters.{prefix}.{p}.{w}" for p in ("down", "up") for w in ("weight", "bias")]


ITEM_SITES = _bottleneck("items-projectors-text") + _bottleneck("items-site")
EXPECTED: dict[str, list[str]] = {
    "head/linear": [
        f"adapters.{t}.proj.{w}" for t in ("sequence", "item") for w in ("weight", "bias")
    ],
    "bottleneck/houlsby": ITEM_SITES
    + _bottleneck("encoder-blocks-0-attn_out")
    + _bottleneck("encoder-blocks-0-ffn_out"),
    "bottleneck/parallel": ITEM_SITES
    + _bottleneck("encoder-blocks-0-attn_out")
    + _bottleneck("encoder-blocks-0-ffn_out"),
    "bottleneck/pfeiffer": ITEM_SITES + _bottleneck("encoder-blocks-0-ffn_out"),
    "lora/peft": [
        f"{m}.lora_{ab}.mmrec.weight"
        for m in (
            "items.projectors.text.net.1",
            "items.projectors.text.net.4",
            "encoder.blocks.0.qkv",
            "encoder.blocks.0.attn_out",
        )
        for ab in ("A", "B")
    ],
    "prompt/soft": ["adapters.encoder.weight"],
    "prompt/prefix": ["adapters.encoder.keys", "adapters.encoder.values"],
    "side/iisan": [f"adapters.items.adapter.{p}.{w}" for p in ("down", "up") for w in ("weight", "bias")]
    + ["adapters.sequence.gates"]
    + [f"adapters.sequence.adapters.0.{p}.{w}" for p in ("down", "up") for w in ("weight", "bias")]
    + ["adapters.sequence.norm.weight", "adapters.sequence.norm.bias"],
}
IDENTITY_AT_START = (
    "head/linear",
    "bottleneck/houlsby",
    "bottleneck/parallel",
    "bottleneck/pfeiffer",
    "lora/peft",
    "side/iisan",
)


def _tables(n: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n + 1, FEAT, generator=g)
    feats[0] = 0
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[0] = False
    return {"text": (feats, valid)}


@pytest.fixture(scope="module")
def pretrained() -> dict[str, object]:
    """A 'pre-trained' source model: random weights, nudged by a few optimiser steps."""
    torch.manual_seed(0)
    m = TransferableRecommender(
        catalog=SOURCE, dim=8, num_layers=1, num_heads=2, dropout=0.0, id_embedding=True
    )
    m.attach_item_features(_tables(7, 0))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    batch = {
        "input_ids": torch.tensor([[0, 1, 2], [4, 5, 6]]),
        "target_ids": torch.tensor([[0, 2, 3], [5, 6, 7]]),
    }
    for _ in range(3):
        opt.zero_grad()
        m.training_loss(batch).backward()
        opt.step()
    return {"config": m.model_config(), "state_dict": m.backbone_state_dict()}


def _target(pretrained: dict[str, object], **kw: object) -> TransferableRecommender:
    m = TransferableRecommender.from_pretrained(pretrained, TARGET, **kw)
    m.attach_item_features(_tables(6, 1))
    return m


BATCH = {
    "input_ids": torch.tensor([[0, 1, 2, 3], [2, 4, 5, 6]]),
    "target_ids": torch.tensor([[0, 2, 3, 4], [4, 5, 6, 1]]),
}


@pytest.mark.parametrize("key", strategy_keys())
def test_each_strategy_trains_exactly_what_it_claims(pretrained: dict[str, object], key: str) -> None:
    torch.manual_seed(0)
    model = _target(pretrained)
    all_names = [n for n, _ in model.named_parameters()]
    applied = apply_strategy(model, key)
    if key in ("transfer/scratch", "transfer/full"):
        expected = all_names
    else:
        expected = EXPECTED[key]
    assert sorted(applied.trainable) == sorted(expected), key
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == sorted(expected)
    # one optimiser step moves exactly these tensors (a frozen backbone never gets a gradient)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.training_loss(BATCH).backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    assert with_grad == sorted(expected)
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed <= set(expected)
    assert changed, f"{key}: no parameter moved"


@pytest.mark.parametrize("key", IDENTITY_AT_START)
def test_zero_initialised_adapters_leave_scores_unchanged(pretrained: dict[str, object], key: str) -> None:
    model = _target(pretrained).eval()
    with torch.no_grad():
        base = model.score_all(BATCH)
    applied = apply_strategy(model, key)
    model.eval()
    with torch.no_grad():
        after = model.score_all(BATCH)
    assert applied.handle is not None
    torch.testing.assert_close(after, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ["bottleneck/houlsby", "lora/peft", "prompt/soft", "side/iisan"])
def test_where_and_layer_norm_switches(pretrained: dict[str, object], key: str) -> None:
    model = _target(pretrained)
    applied = apply_strategy(model, key, where=("sequence",))
    assert not any(n.startswith("items.") or "items" in n.split(".")[1] for n in applied.trainable), (
        applied.trainable
    )
    if key != "side/iisan":
        model2 = _target(pretrained)
        with_ln = apply_strategy(model2, key, where=("sequence",), tune_layer_norm=True)
        extra = sorted(set(with_ln.trainable) - set(applied.trainable))
        assert extra and all("norm" in n and n.startswith("encoder.") for n in extra)


def test_scratch_reinitialises_and_pretrained_weights_load(
    pretrained: dict[str, object], tmp_path: Path
) -> None:
    model = _target(pretrained)
    sd = pretrained["state_dict"]
    assert isinstance(sd, dict)
    assert "item_ids.weight" not in sd  # catalogue-specific: never transferred
    for k, v in model.backbone_state_dict().items():
        torch.testing.assert_close(v, sd[k])
    assert model.item_ids is not None and model.item_ids.weight.shape == (7, 8)
    assert float(model.item_ids.weight.detach().abs().sum()) == 0.0
    apply_strategy(model, "transfer/scratch")
    moved = [k for k, v in model.backbone_state_dict().items() if not torch.equal(v, sd[k])]
    assert "encoder.blocks.0.qkv.weight" in moved and "items.projectors.text.net.1.weight" in moved
    # save / load round trip through weights_only
    src = TransferableRecommender(catalog=SOURCE, dim=8, num_layers=1, num_heads=2)
    path = src.save_pretrained(tmp_path / "m.pt", extra={"note": "x"})
    blob = torch.load(path, weights_only=True)
    assert blob["extra"] == {"note": "x"} and blob["config"]["dim"] == 8
    again = TransferableRecommender.from_pretrained(path, TARGET)
    assert again.num_items == 6
    with pytest.raises(ValueError, match="do not fit"):
        TransferableRecommender(catalog=TARGET, dim=16, num_layers=1).load_backbone(blob["state_dict"])
    assert "sequential/transferable" in MODELS


def test_in_domain_softmax_and_ranking_ignore_other_domains() -> None:
    torch.manual_seed(0)
    m = TransferableRecommender(catalog=SOURCE, dim=8, num_layers=1, num_heads=2, dropout=0.0).eval()
    tables = _tables(7, 0)
    m.attach_item_features(tables)
    batch = {"input_ids": torch.tensor([[0, 1, 2]]), "target_ids": torch.tensor([[0, 2, 3]])}  # domain a
    loss = m.training_loss(batch)
    feats, valid = tables["text"]
    other = feats.clone()
    other[4:] = torch.randn(4, FEAT) * 10  # change every item of domain b
    m.attach_item_features({"text": (other, valid)})
    assert torch.allclose(m.training_loss(batch), loss)
    scores = m.score_all({"input_ids": torch.tensor([[0, 1, 2]]), "domain": torch.tensor([0])})
    assert torch.isinf(scores[0, 4:]).all() and torch.isfinite(scores[0, 1:4]).all()
    flat = TransferableRecommender(catalog=SOURCE, dim=8, num_layers=1, in_domain_softmax=False)
    flat.attach_item_features(tables)
    assert torch.isfinite(flat.score_all({"input_ids": torch.tensor([[0, 1, 2]])})[0, 1:]).all()
