"""MultiDomainDataModule: one catalogue over several domains, filters, few-shot, store agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_dataset, toy_store

from mmrec.catalog import domain_of_items
from mmrec.datamodules.multidomain import (
    MultiDomainDataModule,
    check_store_agreement,
    few_shot_users,
    user_bucket,
)
from mmrec.store import EmbeddingStore, StoreError, write_store


@pytest.fixture
def domains(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Three toy datasets with colliding item ids (``i000``...), each with a random 8-d store."""
    out = {}
    for k, (name, n_items, n_users) in enumerate([("a", 12, 20), ("b", 9, 15), ("t", 10, 30)]):
        ds = toy_dataset(
            tmp_path, num_items=n_items, num_users=n_users, min_len=2, max_len=7, seed=k, name=name
        )
        store = toy_store(tmp_path, ds.item_ids, dim=8, seed=k, name=f"store_{name}")
        out[name] = (ds.path, store.path)
    return out


def _dm(domains: dict[str, tuple[Path, Path]], **kw: object) -> MultiDomainDataModule:
    spec = {n: {"name": n, "dataset": str(p), "stores": {"text": str(s)}} for n, (p, s) in domains.items()}
    return MultiDomainDataModule(
        sources=[spec["a"], spec["b"]], target=spec["t"], max_len=5, batch_size=4, **kw
    )


def test_pretrain_catalogue_prefixes_ids_and_tiles_domains(domains: dict[str, tuple[Path, Path]]) -> None:
    pre = _dm(domains).with_phase("pretrain")
    cat = pre.catalog
    assert cat["num_items"] == 12 + 9 and cat["phase"] == "pretrain"
    assert [(d["name"], d["offset"], d["num_items"]) for d in cat["domains"]] == [("a", 0, 12), ("b", 12, 9)]
    data = pre.phase_data()
    assert data.item_ids[0] == "a:i000" and data.item_ids[12] == "b:i000" and len(set(data.item_ids)) == 21
    assert domain_of_items(cat).tolist() == [-1] + [0] * 12 + [1] * 9
    # every sequence stays inside its domain's block
    for seq, d in zip(data.sequences, data.user_domain):
        lo, n = cat["domains"][d]["offset"], cat["domains"][d]["num_items"]
        assert all(lo < i <= lo + n for i in seq)
    # features: row of "b:i003" is the b store's vector of i003
    feats, valid = pre.item_feature_tables()["text"]
    assert feats.shape == (22, 8) and not valid[0] and valid[1:].all()
    b_store = EmbeddingStore.open(domains["b"][1])
    expected, _ = b_store.aligned(["i003"])
    assert torch.allclose(feats[12 + 4], expected[0])
    batch = next(iter(pre.train_dataloader()))
    assert set(batch) == {"user", "domain", "input_ids", "target_ids"}
    for u, d in zip(batch["user"].tolist(), batch["domain"].tolist()):
        assert data.user_domain[u] == d
    ev = next(iter(pre.val_dataloader()))
    assert {"domain", "targets", "exclude_rows", "exclude_cols"} <= set(ev)


def test_target_phase_is_the_target_alone(domains: dict[str, tuple[Path, Path]]) -> None:
    tgt = _dm(domains).with_phase("target")
    cat = tgt.catalog
    assert cat["num_items"] == 10 and [d["name"] for d in cat["domains"]] == ["t"]
    assert tgt.describe()[0]["users"] == 30


def test_few_shot_split_is_deterministic_and_keeps_evaluation(domains: dict[str, tuple[Path, Path]]) -> None:
    full = _dm(domains).with_phase("target").phase_data()
    a1 = _dm(domains, few_shot=0.5, few_shot_seed=3).with_phase("target").phase_data()
    a2 = _dm(domains, few_shot=0.5, few_shot_seed=3).with_phase("target").phase_data()
    b = _dm(domains, few_shot=0.5, few_shot_seed=4).with_phase("target").phase_data()
    assert a1.train_users == a2.train_users  # same seed, same users (fresh datamodules)
    assert a1.train_users != b.train_users  # another seed draws other users
    assert len(a1.train_users) == round(0.5 * len(full.train_users)) == a1.few_shot_kept
    assert set(a1.train_users) < set(full.train_users)
    # validation / test are over every evaluable user, whatever the few-shot draw
    assert a1.splits.test.users == full.splits.test.users == b.splits.test.users
    # the training loader only yields the kept users
    dm = _dm(domains, few_shot=0.5, few_shot_seed=3).with_phase("target")
    seen = {u for batch in dm.train_dataloader() for u in batch["user"].tolist()}
    assert seen == set(a1.train_users)
    # the draw depends on the set of ids, not their order
    ids = [f"u{i}" for i in range(40)]
    assert few_shot_users(ids, 0.25, 1) == few_shot_users(ids[::-1], 0.25, 1)
    assert len(few_shot_users(ids, 0.25, 1)) == 10
    with pytest.raises(ValueError, match="fraction"):
        few_shot_users(ids, 0.0, 1)


def test_item_and_user_filters_cut_one_dataset_into_domains(tmp_path: Path) -> None:
    ds = toy_dataset(tmp_path, num_items=20, num_users=40, min_len=3, max_len=8, name="one")
    store = toy_store(tmp_path, ds.item_ids, dim=4)
    first = {"column": "item_id", "values": [f"i{k:03d}" for k in range(10)]}
    second = {"column": "item_id", "values": [f"i{k:03d}" for k in range(10, 20)]}
    dm = MultiDomainDataModule(
        sources=[{"name": "lo", "dataset": str(ds.path), "items": first, "users": {"parts": 2, "part": 0}}],
        target={"name": "hi", "dataset": str(ds.path), "items": second, "users": {"parts": 2, "part": 1}},
        stores={"text": str(store.path)},
        max_len=5,
    )
    src, tgt = dm.with_phase("pretrain").phase_data(), dm.with_phase("target").phase_data()
    assert len(src.item_ids) == 10 == len(tgt.item_ids)
    raw_src = {u.split(":", 1)[1] for u in src.user_ids}
    raw_tgt = {u.split(":", 1)[1] for u in tgt.user_ids}
    assert raw_src and raw_tgt and not raw_src & raw_tgt  # disjoint users
    assert all(user_bucket(u, 2) == 1 for u in raw_tgt)
    sub = MultiDomainDataModule(
        sources=[{"name": "lo", "dataset": str(ds.path), "max_users": 7, "seed": 1}],
        target={"name": "hi", "dataset": str(ds.path)},
        stores={"text": str(store.path)},
    )
    users1 = sub.with_phase("pretrain").phase_data().user_ids
    assert len(users1) == 7
    again = MultiDomainDataModule(
        sources=[{"name": "lo", "dataset": str(ds.path), "max_users": 7, "seed": 1}],
        target={"name": "hi", "dataset": str(ds.path)},
        stores={"text": str(store.path)},
    )
    assert again.with_phase("pretrain").phase_data().user_ids == users1
    small = MultiDomainDataModule(
        sources=[{"name": "lo", "dataset": str(ds.path), "max_users": 3, "catalogue": "interacted"}],
        target={"name": "hi", "dataset": str(ds.path)},
        stores={"text": str(store.path)},
    ).with_phase("pretrain")
    data = small.phase_data()
    used = {i for s in data.sequences for i in s}
    assert used == set(range(1, len(data.item_ids) + 1)) and len(data.item_ids) < 20
    assert small.item_feature_tables()["text"][0].shape[0] == len(data.item_ids) + 1
    with pytest.raises(ValueError, match="column"):
        MultiDomainDataModule(
            sources=[{"name": "x", "dataset": str(ds.path), "items": {"column": "nope", "values": [1]}}],
            target={"name": "y", "dataset": str(ds.path)},
            stores={"text": str(store.path)},
        ).with_phase("pretrain").phase_data()


def test_stores_must_come_from_one_encoder(tmp_path: Path, domains: dict[str, tuple[Path, Path]]) -> None:
    ds_t = domains["t"][0]
    ids = [f"i{k:03d}" for k in range(10)]
    rng = np.random.default_rng(0)
    other = write_store(
        tmp_path / "other", ids, rng.normal(size=(10, 8)).astype(np.float32), encoder="text/other"
    )
    wide = write_store(
        tmp_path / "wide", ids, rng.normal(size=(10, 16)).astype(np.float32), encoder="test/random"
    )
    src = [{"name": "a", "dataset": str(domains["a"][0]), "stores": {"text": str(domains["a"][1])}}]
    with pytest.raises(StoreError, match=r"different encoders.*encoder"):
        MultiDomainDataModule(src, {"name": "t", "dataset": str(ds_t), "stores": {"text": str(other.path)}})
    with pytest.raises(StoreError, match="dim"):
        MultiDomainDataModule(src, {"name": "t", "dataset": str(ds_t), "stores": {"text": str(wide.path)}})
    with pytest.raises(StoreError, match="same features"):
        check_store_agreement(
            {"a": {"text": {"encoder": "e", "dim": 8}}, "b": {"image": {"encoder": "e", "dim": 8}}}
        )
    with pytest.raises(ValueError, match="unique"):
        MultiDomainDataModule(
            src, {"name": "a", "dataset": str(ds_t), "stores": {"text": str(domains["t"][1])}}
        )
