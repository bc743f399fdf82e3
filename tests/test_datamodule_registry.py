"""Every registered DataModule (``DATAMODULES``) builds from a tiny config through ``create_datamodule`` and
keeps the contract models and serving rely on: ``catalog``, ``model_inputs()``, batches over items
``0..N``, ``query_batch`` where it serves. A new ``@DATAMODULES.register`` fails here until it has a tiny
config in ``TINY``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import toy_dataset, toy_store
from test_vip5_support import tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.datamodules import DATAMODULES, create_datamodule
from mmrec.protocols import CatalogSource, ModelInputSource, QueryBatchSource


def _sequential(root: Path) -> dict[str, Any]:
    ds = toy_dataset(root, num_items=12, num_users=10, min_len=3, max_len=6)
    store = toy_store(root, ds.item_ids, dim=4)
    return {"dataset": str(ds.path), "max_len": 5, "batch_size": 4, "stores": {"text": str(store.path)}}


def _multidomain(root: Path) -> dict[str, Any]:
    spec = {}
    for k, name in enumerate(("a", "t")):
        ds = toy_dataset(root, num_items=8, num_users=10, min_len=2, max_len=5, seed=k, name=name)
        store = toy_store(root, ds.item_ids, dim=4, seed=k, name=f"store_{name}")
        spec[name] = {"name": name, "dataset": str(ds.path), "stores": {"text": str(store.path)}}
    return {"sources": [spec["a"]], "target": spec["t"], "max_len": 5, "batch_size": 4}


def _vip5(root: Path) -> dict[str, Any]:
    ds = toy_reviews_dataset(root)
    store = toy_feature_store(root, ds.item_ids)
    return {
        "dataset": str(ds.path),
        "tokenizer": str(tiny_t5_dir(root)),
        "stores": {"image": str(store.path)},
        "derived_dir": str(root / "derived"),
        "training": {"batch_size": 4},
        "direct": {"negatives": 4},
        "evaluation": {"batch_size": 4},
    }


#: registry key -> the keyword arguments of a tiny instance (written under the given folder)
TINY: dict[str, Callable[[Path], dict[str, Any]]] = {
    "data/sequential": _sequential,
    "data/multidomain": _multidomain,
    "data/vip5": _vip5,
}


def test_every_registered_datamodule_has_a_tiny_config() -> None:
    assert sorted(TINY) == DATAMODULES.list(), "add a tiny config to TINY for each new datamodule"


def _rows(batch: Mapping[str, Any]) -> set[int]:
    """Leading sizes of the per-row tensors (``exclude_rows`` / ``exclude_cols`` are (row, col) pairs)."""
    return {
        v.shape[0]
        for k, v in batch.items()
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and not k.startswith("exclude_")
    }


@pytest.mark.parametrize("key", DATAMODULES.list())
def test_tiny_datamodule_contract(key: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = create_datamodule(key, **TINY[key](tmp_path))
    assert isinstance(dm, CatalogSource) and isinstance(dm, ModelInputSource)
    catalog = dict(dm.catalog)
    n = int(catalog["num_items"])
    assert n > 0 and int(catalog["num_users"]) > 0, catalog
    dm.setup("fit")
    inputs = dm.model_inputs()
    assert isinstance(inputs, Mapping)

    batch = next(iter(dm.train_dataloader()))
    rows = _rows(batch)
    assert len(rows) == 1 and rows.pop() > 0, f"{key}: train batch tensors disagree on the batch size"
    ids = batch["input_ids"]
    assert ids.dtype == torch.long and ids.ndim == 2
    for name in ("target_ids", "history_items", "target_item"):  # item indices where the batch has them
        if name in batch:
            assert int(batch[name].min()) >= 0 and int(batch[name].max()) <= n, (key, name)

    val = dm.val_dataloader()
    first_val = next(iter(val if not isinstance(val, (list, tuple)) else val[0]))
    assert _rows(first_val), f"{key}: empty validation batch"

    if isinstance(dm, QueryBatchSource):
        dm.setup("predict")
        query = dm.query_batch([[1, 2, 3], [min(4, n)]], [0, -1])
        assert _rows(query) == {2}, f"{key}: query_batch must give one row per history"
