"""Fusion that pays (issue 11 item 4): whitening / PCA, content-initialised IDs, modality dropout, the MoE
adaptor, UniSRec and the popularity-aware gate that falls back on content for unseen items."""

from __future__ import annotations

from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

from mmrec.models.registry import MODELS
from mmrec.nn.feature_preprocess import FeaturePreprocessor
from mmrec.nn.item_encoder import FeatureProjector, ItemEncoder
from mmrec.nn.moe_adaptor import MoEAdaptor


def _anisotropic(n: int = 200, d: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) * torch.tensor([5.0, 2.0, 1.0, 0.5, 0.3, 0.2]).unsqueeze(1)
    return torch.randn(n, d, generator=g) @ mix + 3.0


def _tables(n_items: int, dims: dict[str, int], seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, d in dims.items():
        valid = torch.ones(n_items + 1, dtype=torch.bool)
        valid[0] = False
        out[name] = (torch.randn(n_items + 1, d, generator=g) * valid.unsqueeze(-1), valid)
    return out


def test_whitening_gives_identity_covariance_and_pca_keeps_top_variance() -> None:
    x = _anisotropic()
    white = FeaturePreprocessor(6, "whiten")
    white.fit(x)
    z = white(x)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(torch.cov(z.T), torch.eye(6), atol=1e-3)
    pca = FeaturePreprocessor(6, "pca", out_dim=2)
    pca.fit(x)
    p = pca(x)
    assert p.shape == (200, 2)
    var = p.var(0)
    total = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    assert torch.allclose(var, total[:2], rtol=1e-3)  # the two largest principal variances, in order
    with pytest.raises(RuntimeError, match="not fitted"):
        FeaturePreprocessor(6, "whiten")(x)
    with pytest.raises(ValueError, match="pca_dim must be between"):
        FeaturePreprocessor(6, "pca", out_dim=9)


def test_item_encoder_fits_whitening_on_the_catalogue_valid_rows() -> None:
    enc = ItemEncoder(num_items=50, dim=8, feature_dims={"t": 6}, preprocess="whiten", pca_dim=4)
    feats = torch.cat([torch.zeros(1, 6), _anisotropic(50)])
    valid = torch.ones(51, dtype=torch.bool)
    valid[0] = False
    enc.attach_features({"t": (feats, valid)})
    z = enc.projectors["t"].pre(feats[1:])
    assert torch.allclose(torch.cov(z.T), torch.eye(4), atol=1e-3)
    assert enc().shape == (51, 8)


def test_moe_gate_is_a_distribution_and_deterministic_in_eval() -> None:
    moe = MoEAdaptor(in_dim=6, dim=4, num_experts=3)
    x = torch.randn(7, 6)
    assert torch.allclose(moe.gate_weights(x).sum(-1), torch.ones(7))
    moe.eval()
    assert torch.equal(moe(x), moe(x))
    # one expert = parametric whitening: (x - b) W
    one = MoEAdaptor(in_dim=6, dim=4, num_experts=1).eval()
    e = one.experts[0]
    assert torch.allclose(one(x), (x - e.bias) @ e.linear.weight.T, atol=1e-6)
    p = FeatureProjector(6, 4, kind="moe", num_experts=3)
    assert p(x).shape == (7, 4)


def test_content_initialised_ids_follow_the_content_and_survive_a_checkpoint() -> None:
    tables = _tables(30, {"t": 12})
    enc = ItemEncoder(num_items=30, dim=4, feature_dims={"t": 12}, id_init="content")
    enc.attach_features(tables)
    ids = enc.id_embedding.weight.detach()  # type: ignore[union-attr]
    assert torch.all(ids[0] == 0)
    # similar content -> similar ID: the ID table is a linear image of the content (rank <= dim)
    feats = tables["t"][0][1:]
    sol = torch.linalg.lstsq(torch.cat([feats, torch.ones(30, 1)], 1), ids[1:]).solution
    resid = ids[1:] - torch.cat([feats, torch.ones(30, 1)], 1) @ sol
    assert resid.abs().max() < 1e-3
    assert abs(float(ids[1:].std()) - 4**-0.5) < 0.15
    state = enc.state_dict()
    assert bool(state["id_initialised"])
    fresh = ItemEncoder(num_items=30, dim=4, feature_dims={"t": 12}, id_init="content")
    with torch.no_grad():
        state["id_embedding.weight"][1:] += 1.0  # "trained"
    fresh.load_state_dict(state)
    fresh.attach_features(tables)  # must not overwrite the loaded table
    assert torch.equal(fresh.id_embedding.weight, state["id_embedding.weight"])  # type: ignore[union-attr]


def test_modality_dropout_only_in_training_and_never_drops_every_source() -> None:
    torch.manual_seed(0)
    enc = ItemEncoder(
        num_items=40, dim=8, feature_dims={"a": 5, "b": 3}, fusion="sum", modality_dropout=0.5, dropout=0.0
    )
    enc.attach_features(_tables(40, {"a": 5, "b": 3}))
    enc.eval()
    assert torch.equal(enc(), enc())
    avail = enc._available()
    assert bool(avail[1:].all())
    enc.train()
    avail = enc._available()
    assert 0.2 < float((~avail[1:]).float().mean()) < 0.45  # about half dropped, minus the all-dropped rescue
    assert bool(avail[1:].any(dim=1).all())
    assert not torch.equal(enc(), enc())


def test_adaptive_gate_falls_back_on_content_for_unseen_items() -> None:
    enc = ItemEncoder(num_items=6, dim=4, feature_dims={"t": 5}, fusion="adaptive", dropout=0.0).eval()
    enc.attach_features(_tables(6, {"t": 5}))
    pop = torch.tensor([0.0, 10, 3, 0, 1, 0, 50])
    enc.attach_popularity(pop)
    alpha = enc.id_weight()
    assert torch.all(alpha[1:][pop[1:] == 0] == 0) and torch.all(alpha[1:][pop[1:] > 0] > 0)
    items = enc()
    content = enc.projectors["t"](enc.feat_t)
    for i in (3, 5):  # unseen: exactly the content vector
        assert torch.allclose(items[i], content[i], atol=1e-6)
    # popularity is part of the gate's input: changing it changes the weight of a seen item
    enc.attach_popularity(pop * 100)
    assert not torch.allclose(enc.id_weight()[1:][pop[1:] > 0], alpha[1:][pop[1:] > 0])
    with pytest.raises(ValueError, match="needs both"):
        ItemEncoder(num_items=3, dim=4, fusion="adaptive")


def test_unseen_content_only_drops_the_id_of_untrained_items_with_any_fusion() -> None:
    enc = ItemEncoder(num_items=4, dim=4, feature_dims={"t": 3}, fusion="sum", unseen_content_only=True).eval()
    enc.attach_features(_tables(4, {"t": 3}))
    before = enc().detach().clone()
    enc.attach_popularity(torch.tensor([0.0, 2, 0, 1, 0]))
    after = enc().detach()
    content = enc.projectors["t"](enc.feat_t).detach()
    assert torch.allclose(after[2], content[2]) and torch.allclose(after[4], content[4])
    assert torch.allclose(after[1], before[1]) and torch.allclose(after[3], before[3])


@pytest.mark.parametrize("key", ["sequential/unisrec", "sequential/multimodal"])
def test_content_models_place_unseen_items_by_content(key: str) -> None:
    cat = {"num_items": 8, "num_users": 3, "max_len": 4, "feature_dims": {"text": 6}}
    extra = (
        {"id_embedding": True, "num_experts": 2}
        if key == "sequential/unisrec"
        else {"fusion": "adaptive", "id_init": "content", "modality_dropout": 0.2, "preprocess": "whiten"}
    )
    model = MODELS.create(key, catalog=cat, dim=8, num_layers=1, **extra)
    tables = _tables(8, {"text": 6})
    inter = sp.csr_matrix(torch.tensor([[0, 1, 1, 0, 1, 0, 1, 1, 0]] * 3, dtype=torch.float32).numpy())
    model.attach_data({"features": tables, "train_interactions": inter, "train_sequences": [[1, 2], [4], [6, 7]]})
    batch = {"input_ids": torch.tensor([[0, 1, 2, 4], [0, 0, 6, 7]]), "target_ids": torch.tensor([[0, 2, 4, 6], [0, 0, 7, 1]])}
    model.train()
    loss = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        scores = model.score_all(batch)
        assert scores.shape == (2, 9) and torch.isfinite(scores[:, 1:]).all()
        # changing an unseen item's content changes its vector (it is placed by content) ...
        v0 = model.item_vectors()[3].clone()
        tables["text"][0][3] += 5.0
        model.items.attach_features({"text": tables["text"]})
        assert not torch.allclose(model.item_vectors()[3], v0)


def test_unisrec_save_pretrained_keeps_its_own_arguments(tmp_path: Path) -> None:
    # save_pretrained kept only the transferable model's keys: num_experts / preprocess / pca_dim were dropped
    # and from_pretrained added the transferable model's legacy defaults, which UniSRec does not take
    from mmrec.models.unisrec import UniSRec

    cat = {"num_items": 8, "num_users": 3, "max_len": 4, "feature_dims": {"text": 6}}
    torch.manual_seed(0)
    model = UniSRec(catalog=cat, dim=8, num_layers=1, num_experts=3, preprocess="whiten", pca_dim=4, lr=5e-3)
    tables = _tables(8, {"text": 6})
    model.attach_data({"features": tables})
    path = model.save_pretrained(tmp_path / "unisrec.pt")
    config = UniSRec.load_pretrained_file(path)["config"]
    assert (config["num_experts"], config["preprocess"], config["pca_dim"], config["lr"]) == (3, "whiten", 4, 5e-3)
    again = UniSRec.from_pretrained(path, cat)
    again.attach_data({"features": tables})
    assert again.hparams["num_experts"] == 3 and again.hparams["preprocess"] == "whiten"
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(again.item_vectors(), model.item_vectors(), atol=1e-6)


def test_adaptive_fusion_averages_the_available_modalities() -> None:
    # the content side of the adaptive gate is the mean of each item's available modalities, so it keeps its
    # scale whatever the number of modalities or how many modality dropout removed (a sum grew with both)
    ids = torch.zeros(3, 2)
    a = torch.tensor([[0.0, 0.0], [2.0, 4.0], [6.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [4.0, 0.0], [9.0, 9.0]])
    avail = torch.tensor([[True, False, False], [True, True, True], [True, True, False]])
    masked = [ids, a * avail[:, 1:2], b * avail[:, 2:3]]
    mean = ItemEncoder._content_mean(masked, avail)
    assert mean.tolist() == [[0.0, 0.0], [3.0, 2.0], [6.0, 0.0]]
    # the same vector twice is that vector, not twice it
    twice = ItemEncoder._content_mean([ids, a, a], torch.ones(3, 3, dtype=torch.bool))
    assert torch.equal(twice, a)
