"""Every registered model with ``tiny`` metadata, through the same DataModule, Trainer and evaluator.

As timm tests every registered model: a model registers ``tiny={...}`` (the init_args of a test-sized
config) and is covered here without new test code. Each one is built from the toy DataModule's catalog
(two random feature stores attached, so content models have something to read), fitted for one short
epoch, tested, and checked for: metric values in range, score shapes, finite scores, column 0 (padding)
never recommended, trained parameters that moved, and rankings that differ between users (unless the
model registers ``personalized=False``, as a popularity ranking does).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from helpers import toy_dataset, toy_store

from mmrec.cli import main
from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.models import MODELS, create_model
from mmrec.models.cf import BPR, LightGCN
from mmrec.models.knn import ItemKNN, SequentialItemKNN, cosine_neighbours
from mmrec.models.multimodal_cf import FREEDOM, VBPR
from mmrec.nn.interactions import InteractionTable, binary_csr
from mmrec.protocols import ItemTower, QueryTower
from mmrec.retrieval.recommender import Recommender

TINY = MODELS.list(pattern="*")
TINY = [k for k in TINY if "tiny" in MODELS.meta(k)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("zoo")
    ds = toy_dataset(root, num_items=30, num_users=48, min_len=4, max_len=9)
    stores = {
        "img": str(toy_store(root, ds.item_ids, dim=6, seed=1, name="img").path),
        "txt": str(toy_store(root, ds.item_ids, dim=5, seed=2, name="txt").path),
    }
    return {"dataset": str(ds.path), "stores": stores}


def _datamodule(toy: dict[str, object]) -> SequentialDataModule:
    return SequentialDataModule(
        toy["dataset"],
        max_len=6,
        batch_size=16,
        eval_batch_size=64,
        stores=toy["stores"],  # type: ignore[arg-type]
    )


def _trainer() -> L.Trainer:
    return L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
        num_sanity_val_steps=0,
    )


def test_every_model_family_of_the_zoo_has_a_tiny_config() -> None:
    expected = {
        "knn/item",
        "knn/sequential",
        "knn/content",
        "cf/bpr",
        "cf/lightgcn",
        "multimodal/vbpr",
        "multimodal/freedom",
        "sequential/sasrec",
        "sequential/multimodal",
        "sequential/transferable",
    }
    assert expected <= set(TINY)


#: registered models without ``tiny`` kwargs, and the test file that runs each on a tiny config: VIP5's
#: models need the VIP5 datamodule (prompts, a tokenizer), MostPop has nothing to fit
OWN_TESTS = {
    "baseline/mostpop": "test_mostpop.py",
    "vip5/ranking": "test_vip5_models.py",
    "vip5/t5": "test_vip5_models.py",
}


def test_every_registered_model_runs_on_a_tiny_config() -> None:
    untested = set(MODELS.list()) - set(TINY)
    assert untested == set(OWN_TESTS), (
        "register each new model with tiny={...} so the test below runs it (or test it on a tiny config in "
        "a file of its own and name that file in OWN_TESTS)"
    )
    for key, name in OWN_TESTS.items():
        assert f'"{key}"' in (Path(__file__).parent / name).read_text(encoding="utf-8"), (key, name)


@pytest.mark.parametrize("key", TINY)
def test_tiny_model_fits_tests_and_ranks(key: str, toy: dict[str, object]) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    dm = _datamodule(toy)
    model = create_model(key, catalog=dm.catalog, **MODELS.meta(key)["tiny"])
    n = dm.catalog["num_items"]
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert {"val/ndcg@10", "val/hr@10"} <= set(val), f"{key}: validation did not run ({sorted(val)})"
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    for name in ("test/ndcg@10", "test/hr@10", "test/mrr"):
        assert 0.0 <= test[name] <= 1.0 and math.isfinite(test[name]), (key, name, test[name])

    moved = [k for k, v in model.named_parameters() if k in before and not torch.equal(v.detach(), before[k])]
    assert bool(before) == bool(moved), (
        f"{key}: trainable parameters {sorted(before)} did not change in training"
    )

    model.eval()
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        scores = model.score_all(batch)
    b = batch["input_ids"].shape[0]
    assert scores.shape == (b, n + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all(), key
    if isinstance(model, ItemTower) and isinstance(model, QueryTower):
        with torch.no_grad():
            items, queries = model.item_vectors(), model.query_vectors(batch)
        assert items.shape[0] == n + 1 and queries.shape[0] == b and queries.shape[1] == items.shape[1]
        expect = queries @ items.T
        assert torch.allclose(scores[:, 1:], expect[:, 1:], atol=1e-4, rtol=1e-4), (
            f"{key}: score != query . item"
        )

    preds = trainer.predict(model, datamodule=dm)
    top = torch.cat([p["items"] for p in preds])
    assert (
        top.shape == (dm.catalog["num_users"], min(10, n))
        and bool((top >= 1).all())
        and bool((top <= n).all())
    )

    if MODELS.meta(key).get("personalized", True):
        lists = Counter(tuple(row) for row in scores[:, 1:].topk(10, dim=1).indices.tolist())
        share = lists.most_common(1)[0][1] / b
        assert share < 0.5, f"{key}: {share:.0%} of users get the same top-10 (before history masking)"


# ---------------------------------------------------------------------- building blocks, by hand
def _matrix() -> sp.csr_matrix:
    # 3 users x (4 items + padding column 0)
    return sp.csr_matrix(
        np.array([[0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 2]], dtype=np.float32)  # count 2 binarised
    )


def test_interaction_table_pairs_and_negatives() -> None:
    torch.manual_seed(0)
    table = InteractionTable(_matrix())
    assert table.nnz == 7 and table.degrees(torch.tensor([0, 1, 2, -1])).tolist() == [2, 3, 2, 0]
    users, items = table.positives(torch.tensor([2, 0]))  # every interaction once, in row order
    assert users.tolist() == [2, 2, 0, 0] and items.tolist() == [3, 4, 1, 2]
    users, items = table.positives(torch.tensor([0, 1]), per_user=5)
    assert users.tolist() == [0] * 5 + [1] * 5 and bool(table.contains(users, items).all())
    u = torch.tensor([0, 1, 2]).repeat(2000)
    neg = table.negatives(u)
    assert not bool(table.contains(u, neg).any()) and bool((neg >= 1).all()) and bool((neg <= 4).all())
    assert set(neg[u == 1].tolist()) == {4}  # user 1's only non-positive item
    assert table.dense_rows(torch.tensor([2, -1])).tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="column 0"):
        InteractionTable(sp.csr_matrix(np.array([[1, 0]], dtype=np.float32)))


def test_item_knn_cosine_topk_shrink_and_profile() -> None:
    cat = {"num_items": 4, "num_users": 3}
    m = ItemKNN(catalog=cat, k=1, keep="history")
    m.attach_data({"train_interactions": _matrix()})
    sim = m.similarity_t.to_dense().T  # row = history item
    # items 1,2 share users {0,1}: cos = 2 / sqrt(2*2) = 1; item 3 {1,2} vs 4 {2}: 1/sqrt(2)
    assert sim[1, 2] == pytest.approx(1.0) and sim[4, 3] == pytest.approx(1 / math.sqrt(2))
    assert (sim > 0).sum(1).tolist() == [0, 1, 1, 1, 1] and float(sim.diagonal().abs().sum()) == 0.0
    # whose neighbours are kept: each history item's (rows) or each candidate's (columns, as RecBole)
    cooc = sp.csr_matrix(np.array([[0, 0, 0, 0], [0, 0, 3, 1], [0, 3, 0, 2], [0, 1, 2, 0]], dtype=np.float32))
    ones = np.ones(4)
    rows = cosine_neighbours(cooc, ones, k=1, keep="history").toarray()
    cols = cosine_neighbours(cooc, ones, k=1, keep="candidate").toarray()
    assert sorted(zip(*rows.nonzero())) == [(1, 2), (2, 1), (3, 2)]
    assert sorted(zip(*cols.nonzero())) == [(1, 2), (2, 1), (2, 3)]
    assert ItemKNN(catalog=cat).keep == "candidate"
    shrunk = ItemKNN(catalog=cat, k=3, shrink=2.0, keep="history")
    shrunk.attach_data({"train_interactions": _matrix()})
    assert shrunk.similarity_t.to_dense()[2, 1] == pytest.approx(2 / (2 + 2))
    # user 2's training items (3, 4) plus item 1 from input_ids; the score sums their rows
    batch = {"user": torch.tensor([2]), "input_ids": torch.tensor([[0, 1]])}
    assert m.query_vectors(batch).tolist() == [[0, 1, 0, 1, 1]]
    expect = shrunk.query_vectors(batch) @ shrunk.similarity_t.to_dense().T
    assert torch.allclose(shrunk.score_all(batch)[0, 1:], expect[0, 1:])


def test_sequential_knn_weights_the_last_items_by_recency() -> None:
    cat = {"num_items": 4, "num_users": 1}
    m = SequentialItemKNN(catalog=cat, k=4, last=2, decay=0.5, window=1, directed=True)
    m.attach_data({"train_sequences": [[1, 2, 3, 4]]})
    profile = m.query_vectors({"input_ids": torch.tensor([[3, 1, 2]])})
    assert profile.tolist() == [[0.0, 0.5, 1.0, 0.0, 0.0]]  # item 3 is beyond `last`
    s = m.similarity_t.to_dense().T
    assert s[1, 2] > 0 and s[2, 1] == 0  # directed: what follows
    scores = m.score_all({"input_ids": torch.tensor([[3, 1, 2]])})[0]
    assert scores[3] == pytest.approx(1.0 * float(s[2, 3])) and scores[2] == pytest.approx(
        0.5 * float(s[1, 2])
    )


def test_lightgcn_propagation_matches_dense_algebra_and_regularises_ego() -> None:
    torch.manual_seed(0)
    m = LightGCN(catalog={"num_items": 4, "num_users": 3}, dim=3, num_layers=2, reg_weight=0.0)
    m.attach_data({"train_interactions": _matrix()})
    a = torch.zeros(8, 8)
    x = torch.from_numpy(binary_csr(_matrix()).toarray())
    a[:3, 3:], a[3:, :3] = x, x.T
    d = a.sum(1).clamp_min(1).rsqrt()
    norm = d[:, None] * a * d[None, :]
    assert torch.allclose(m.adjacency.to_dense(), norm, atol=1e-6)
    ego = torch.cat([m.user_embedding.weight, m.item_embedding.weight]).detach()
    expect = (ego + norm @ ego + norm @ norm @ ego) / 3
    users, items = m.user_item_vectors()
    assert torch.allclose(torch.cat([users, items]), expect, atol=1e-6)
    u, p, n = torch.tensor([0]), torch.tensor([1]), torch.tensor([4])
    plain = m.pair_loss(u, p, n)
    m.reg_weight = 0.5
    ego_l2 = sum(
        float(t.detach().pow(2).sum())
        for t in (m.user_embedding(u), m.item_embedding(p), m.item_embedding(n))
    )
    assert float(m.pair_loss(u, p, n) - plain) == pytest.approx(0.5 * ego_l2 / 2, rel=1e-5)


def test_bpr_unknown_users_fold_in_their_history() -> None:
    m = BPR(catalog={"num_items": 4, "num_users": 3}, dim=4).eval()
    m.attach_data({"train_interactions": _matrix()})
    q = m.query_vectors({"user": torch.tensor([1, -1]), "input_ids": torch.tensor([[0, 2], [1, 3]])})
    assert torch.allclose(q[0], m.user_embedding.weight[1])
    assert torch.allclose(q[1], (m.item_embedding.weight[1] + m.item_embedding.weight[3]) / 2)


def test_vbpr_score_is_the_papers_formula() -> None:
    torch.manual_seed(0)
    cat = {"num_items": 4, "num_users": 3, "feature_dims": {"img": 5}}
    m = VBPR(catalog=cat, dim=3, visual_dim=2, normalize=False)
    feats = torch.randn(5, 5)
    m.attach_data(
        {"train_interactions": _matrix(), "features": {"img": (feats, torch.ones(5, dtype=torch.bool))}}
    )
    with torch.no_grad():
        m.item_bias.weight.normal_()
        m.content_bias.weight.normal_()
        scores = m.score_all({"user": torch.tensor([2])})[0]
        u, i = 2, 3
        expect = (
            m.item_bias.weight[i, 0]
            + m.user_id.weight[u] @ m.item_id.weight[i]
            + m.user_content.weight[u] @ (m.projection.weight @ feats[i])
            + m.content_bias.weight[0] @ feats[i]
        )
    assert float(scores[i]) == pytest.approx(float(expect), rel=1e-5)


def test_freedom_prunes_high_degree_edges_first_and_evaluates_on_the_full_graph() -> None:
    torch.manual_seed(0)
    # user 0 has every item (high degree); users 1..4 one item each
    rows = [[0, 1, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    matrix = sp.csr_matrix(np.array(rows, dtype=np.float32))
    cat = {"num_items": 4, "num_users": 5, "feature_dims": {"img": 3}}
    m = FREEDOM(catalog=cat, dim=4, knn_k=2, edge_dropout=0.5)
    feats = (torch.randn(5, 3), torch.tensor([False, True, True, True, True]))
    m.attach_data({"train_interactions": matrix, "features": {"img": feats}})
    kept_hub = 0
    for _ in range(200):
        m.prune_edges()
        idx = m.pruned_graph.indices()
        assert idx.shape[1] == 2 * 4  # half of the 8 edges, both directions
        kept_hub += int(((idx[0] == 0) & (idx[1] >= 5)).sum())
    assert kept_hub / 200 < 2.0  # uniform keeping would average 2 of user 0's 4 edges
    assert (
        m.item_graph.to_dense()[0].abs().sum() == 0 and (m.item_graph.to_dense()[1:] > 0).sum(1).eq(2).all()
    )
    m.train()
    a, b = m.user_item_vectors()[0], m.user_item_vectors()[0]
    assert torch.equal(a, b)  # the full graph, whatever the last pruning


@pytest.mark.parametrize(
    ("class_path", "init_args", "epochs"),
    [("mmrec.models.ItemKNN", {"k": 10}, 1), ("mmrec.models.BPR", {"dim": 8, "lr": 0.01}, 2)],
)
def test_fit_through_mmrec_then_serve_from_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], class_path: str, init_args: dict, epochs: int
) -> None:
    """`mmrec fit` (a model without parameters: one epoch validates and test_after_fit tests), then the
    checkpoint serves known users and new histories through the Recommender (attach_data from the data)."""
    ds = toy_dataset(tmp_path, num_items=25, num_users=30, min_len=4, max_len=7)
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "zoo"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {"class_path": class_path, "init_args": init_args},
        "data": {
            "class_path": "mmrec.datamodules.sequential.SequentialDataModule",
            "init_args": {"dataset": str(ds.path), "max_len": 5, "batch_size": 8},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[mmrec] test (" in out and "ndcg@10" in out, out
    run = tmp_path / "runs" / "zoo" / "version_0"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_users"] == 30 and 0 < metrics["ndcg@10"] <= 1
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val/ndcg@10" in header

    rec = Recommender.from_checkpoint(run / "checkpoints" / "last.ckpt")
    user = rec.recommend_user("u003", k=5)
    seen = set(rec.user_history("u003"))
    items = [i for i, _ in user]
    assert len(items) == 5 and not seen & set(items)
    new = [i for i, _ in rec.recommend_history(["i001", "i002"], k=5)]
    assert len(new) == 5 and not {"i001", "i002"} & set(new)


def test_pairwise_epoch_is_every_training_interaction_once_in_shuffled_steps(toy: dict[str, object]) -> None:
    """`samples_per_user: null`: the loader paces, each step is a random slice of all interactions (not the
    batch's own users, which would update a user's vector in one step per epoch only)."""
    torch.manual_seed(0)
    dm = _datamodule(toy)
    model = BPR(catalog=dm.catalog, dim=4)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    loss = model.pair_loss

    def spy(users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        seen.append((users.clone(), pos.clone()))
        assert not bool(model.interactions.contains(users, neg).any())
        return loss(users, pos, neg)

    model.pair_loss = spy  # type: ignore[method-assign]
    _trainer().fit(model, datamodule=dm)
    pairs = Counter((int(u), int(p)) for users, pos in seen for u, p in zip(users, pos))
    x = binary_csr(dm.model_inputs()["train_interactions"]).tocoo()
    assert pairs == Counter(zip(x.row.tolist(), x.col.tolist()))
    assert (
        len(seen) == len(dm.train_dataloader()) and len({int(u) for u in seen[0][0]}) > 16
    )  # batch: 16 users
