"""SASRec and the multimodal sequential model."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import toy_dataset, toy_store

from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.models import MODELS, MultimodalSequential, SASRec, create_model
from mmrec.nn.item_encoder import ItemEncoder
from mmrec.nn.sequence_encoder import CausalTransformer

CAT = {"num_items": 20, "num_users": 5, "max_len": 6}


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )


def test_registry_and_factory() -> None:
    assert {"sequential/sasrec", "sequential/multimodal"} <= set(MODELS.list())
    m = create_model("sequential/sasrec", catalog=CAT, dim=8, num_layers=1)
    assert isinstance(m, SASRec)
    with pytest.raises(ValueError, match="catalog is required"):
        SASRec()


def test_causal_encoder_ignores_future_and_padding() -> None:
    torch.manual_seed(0)
    enc = CausalTransformer(dim=8, num_layers=2, num_heads=2, max_len=5, dropout=0.0).eval()
    ids = torch.tensor([[0, 0, 3, 4, 5]])
    emb = torch.randn(1, 5, 8)
    out = enc(emb, ids)
    emb2 = emb.clone()
    emb2[0, 4] += torch.randn(8)  # change the last (future) item
    out2 = enc(emb2, ids)
    assert torch.allclose(out[0, :4], out2[0, :4], atol=1e-6)
    assert not torch.allclose(out[0, 4], out2[0, 4])
    emb3 = emb.clone()
    emb3[0, 0] += torch.randn(8)  # change a padding slot: nothing may change at real positions
    assert torch.allclose(enc(emb3, ids)[0, 2:], out[0, 2:], atol=1e-6)
    assert torch.isfinite(out).all() and torch.all(out[0, :2] == 0)


def test_item_encoder_masks_invalid_features_and_pads() -> None:
    torch.manual_seed(0)
    enc = ItemEncoder(num_items=3, dim=4, feature_dims={"img": 5}, fusion="sum", dropout=0.0)
    feats = torch.randn(4, 5)
    valid = torch.tensor([False, True, False, True])
    enc.attach_features({"img": (feats, valid)})
    out = enc()
    assert torch.all(out[0] == 0)
    assert torch.allclose(out[2], enc.id_embedding.weight[2])  # invalid feature: ID only
    assert not torch.allclose(out[1], enc.id_embedding.weight[1])
    with pytest.raises(ValueError, match="table shape"):
        enc.attach_features({"img": (torch.randn(9, 5), torch.ones(9, dtype=torch.bool))})


def test_id_free_items_are_defined_by_content() -> None:
    torch.manual_seed(0)
    enc = ItemEncoder(num_items=3, dim=4, feature_dims={"img": 5}, use_id_embedding=False, dropout=0.0)
    feats = torch.randn(4, 5)
    feats[3] = feats[1]  # two items with identical content get identical vectors
    enc.attach_features({"img": (feats, torch.ones(4, dtype=torch.bool))})
    out = enc()
    assert torch.allclose(out[1], out[3]) and not torch.allclose(out[1], out[2])
    assert enc.id_embedding is None


@pytest.mark.parametrize("fusion", ["sum", "concat", "gated"])
def test_gated_concat_sum_shapes(fusion: str) -> None:
    enc = ItemEncoder(num_items=6, dim=8, feature_dims={"a": 3, "b": 5}, fusion=fusion)  # type: ignore[arg-type]
    enc.attach_features(
        {
            "a": (torch.randn(7, 3), torch.ones(7, dtype=torch.bool)),
            "b": (torch.randn(7, 5), torch.ones(7, dtype=torch.bool)),
        }
    )
    assert enc().shape == (7, 8)


def test_feature_tables_are_not_saved_in_checkpoints() -> None:
    cat = {**CAT, "feature_dims": {"img": 5}}
    m = MultimodalSequential(catalog=cat, dim=8, num_layers=1)
    assert not any(k.startswith("items.feat_") or k.startswith("items.valid_") for k in m.state_dict())
    with pytest.raises(RuntimeError, match="attach"):
        m.item_vectors()


def test_sasrec_learns_sequential_pattern(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    ds = toy_dataset(tmp_path, num_items=40, num_users=120, min_len=5, max_len=10)
    dm = SequentialDataModule(str(ds.path), max_len=8, batch_size=32)
    model = SASRec(catalog=dm.catalog, dim=32, num_layers=1, lr=5e-3, dropout=0.1)
    before = _trainer(1).test(model, datamodule=dm, verbose=False)[0]["test/hr@10"]
    _trainer(25).fit(model, datamodule=dm)
    after = _trainer(1).test(model, datamodule=dm, verbose=False)[0]
    # users walk through consecutive items: the next item is learnable far above chance (10/40 with masking)
    assert after["test/hr@10"] > 0.8 > before
    assert after["test/num_users"] == 120


def test_multimodal_uses_features_and_predicts_unseen_history(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    ds = toy_dataset(tmp_path, num_items=30, num_users=40, min_len=4, max_len=8)
    store = toy_store(tmp_path, ds.item_ids, dim=6)
    dm = SequentialDataModule(str(ds.path), max_len=6, batch_size=16, stores={"img": str(store.path)})
    model = MultimodalSequential(catalog=dm.catalog, dim=16, num_layers=1, fusion="gated")
    _trainer(2).fit(model, datamodule=dm)
    assert model.items.features_attached
    preds = _trainer(1).predict(model, datamodule=dm)
    first = preds[0]
    assert first["items"].shape == (min(40, dm.eval_batch_size), 10)
    for row, u in enumerate(first["user"].tolist()):
        assert not set(first["items"][row].tolist()) & set(dm.sequences[u])  # known items never recommended
        assert 0 not in first["items"][row].tolist()


def test_multimodal_requires_stores() -> None:
    with pytest.raises(ValueError, match="needs feature stores"):
        MultimodalSequential(catalog=CAT)
    with pytest.raises(ValueError, match=r"model\.features names"):
        MultimodalSequential(catalog={**CAT, "feature_dims": {"img": 3}}, features=["audio"])
