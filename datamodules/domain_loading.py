"""Loading one domain: read its canonical dataset, apply its filters, resolve and cross-check its stores.

:func:`load_domain` turns a :class:`~mmrec.datamodules.domains.DomainSpec` into a :class:`LoadedDomain`
(kept items, users and their chronological sequences); :func:`resolve_domain_stores` finds its embedding
stores and :func:`check_store_agreement` refuses domains whose stores of one feature come from different
encoders (their vectors would not share one space).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.data.canonical import CanonicalDataset, DatasetError
from mmrec.datamodules.domains import DomainSpec, user_bucket
from mmrec.datamodules.histories import sequences_by_user
from mmrec.datamodules.paths import resolve_user_path
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

log = logging.getLogger(__name__)

# manifest fields that must agree for vectors of two stores to share one space
_ENCODER_KEYS = ("encoder", "weights", "dim")
_ENCODER_INFO_KEYS = ("pooling", "normalize", "preprocessing")


@dataclass
class LoadedDomain:
    """A domain after filtering: items, users and their chronological sequences.

    Attributes:
        spec: the :class:`DomainSpec`.
        path: dataset folder.
        dataset_name: ``dataset.json`` name.
        dataset_fingerprint: the dataset's content fingerprint.
        item_ids: kept raw item ids, in dataset order (local index ``i + 1``).
        user_ids: kept raw user ids, sorted.
        sequences: per user, local item indices ``1..n`` in time order.
        stores: feature name -> concrete store folder.
        manifests: feature name -> store manifest.
    """

    spec: DomainSpec
    path: Path
    dataset_name: str
    dataset_fingerprint: str
    item_ids: list[str]
    user_ids: list[str]
    sequences: list[list[int]]
    stores: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)


def _format_store_path(path: str, dataset: Path) -> str:
    return path.replace("{dataset}", dataset.name)


def resolve_domain_stores(spec: DomainSpec, default: Mapping[str, str] | None) -> dict[str, Path]:
    """Concrete store folders of a domain (its own ``stores``, else the default ones)."""
    dataset = resolve_user_path(spec.dataset)
    raw = spec.stores if spec.stores is not None else dict(default or {})
    return {
        name: resolve_store_path(resolve_user_path(_format_store_path(p, dataset), base=dataset))
        for name, p in raw.items()
    }


def read_domain_manifest(domain: str, feature: str, path: Path) -> dict[str, Any]:
    """The manifest of a domain's store; a store error names the domain and the feature."""
    try:
        return EmbeddingStore.read_manifest(path)
    except StoreError as e:
        raise StoreError(f"domain {domain!r}, feature {feature!r}: {e}") from e


def _space_key(manifest: Mapping[str, Any]) -> dict[str, Any]:
    key = {k: manifest.get(k) for k in _ENCODER_KEYS}
    info = manifest.get("encoder_info") or {}
    key.update({f"encoder_info.{k}": info.get(k) for k in _ENCODER_INFO_KEYS if k in info})
    return key


def check_store_agreement(manifests: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """Check that every domain has the same feature names and that each feature comes from one encoder.

    Args:
        manifests: domain name -> feature name -> store manifest.

    Raises:
        StoreError: feature names differ between domains, or two stores of one feature differ in encoder,
            weights, dim, pooling, normalisation or preprocessing (their vectors would not share a space).
    """
    names = {d: sorted(m) for d, m in manifests.items()}
    distinct = {tuple(v) for v in names.values()}
    if len(distinct) > 1:
        raise StoreError(
            f"every domain must have the same features (stores), got {names}; give each domain a store for "
            "every feature name (or set the datamodule's default `stores` with a {dataset} placeholder)."
        )
    for feature in next(iter(names.values()), []):
        keys = {d: _space_key(m[feature]) for d, m in manifests.items()}
        first_domain, first = next(iter(keys.items()))
        for d, k in keys.items():
            diff = {f: (first.get(f), k.get(f)) for f in set(first) | set(k) if first.get(f) != k.get(f)}
            if diff:
                raise StoreError(
                    f"feature {feature!r}: the stores of domains {first_domain!r} and {d!r} come from different "
                    f"encoders ({', '.join(f'{f}: {a!r} vs {b!r}' for f, (a, b) in sorted(diff.items()))}); "
                    "items of all domains must be embedded by the same encoder: rebuild one store with the "
                    "other's recipe (mmrec embed --config ...)."
                )
        columns = {d: manifests[d][feature].get("columns") for d in manifests}
        if len({json.dumps(c, default=str) for c in columns.values()}) > 1:
            log.warning("feature %r embeds different columns per domain: %s", feature, columns)


def _item_mask(items: pd.DataFrame, spec: DomainSpec) -> np.ndarray:
    if spec.items is None:
        return np.ones(len(items), dtype=bool)
    column = spec.items["column"]
    if column not in items.columns:
        raise DatasetError(
            f"domain {spec.name!r}: items.column {column!r} is not an item column of {spec.dataset}; "
            f"columns: {sorted(items.columns)}."
        )
    wanted = {str(v) for v in spec.items["values"]}

    def keep(cell: Any) -> bool:
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            return False
        if isinstance(cell, list | tuple | np.ndarray):
            return any(str(c) in wanted for c in cell)
        return str(cell) in wanted

    mask = np.fromiter((keep(c) for c in items[column]), dtype=bool, count=len(items))
    if not mask.any():
        seen = items[column].explode().dropna().astype(str).unique()[:20].tolist()
        raise DatasetError(
            f"domain {spec.name!r}: no item has {column} in {sorted(wanted)}; values present include {seen}."
        )
    return mask


def load_domain(spec: DomainSpec, stores: Mapping[str, Path] | None = None) -> LoadedDomain:
    """Read a domain's dataset and apply its item / user filters.

    Args:
        spec: the domain.
        stores: resolved feature stores (from :func:`resolve_domain_stores`).

    Returns:
        the :class:`LoadedDomain`; users without any interaction left are dropped (not counted anywhere,
        they have no sequence); users with fewer than 3 are kept for training only (leave-one-out).
    """
    data = CanonicalDataset.load(resolve_user_path(spec.dataset))
    keep_items = _item_mask(data.items, spec)
    item_ids = data.items.loc[keep_items, "item_id"].astype(str).tolist()
    inter = data.interactions
    inter = inter[inter["item_id"].astype(str).isin(set(item_ids))]
    if spec.users is not None:
        parts, part = spec.users["parts"], spec.users["part"]
        users = inter["user_id"].astype(str)
        buckets = {u: user_bucket(u, parts) for u in users.unique()}
        inter = inter[users.map(buckets) == part]
    if spec.max_users is not None:
        all_users = sorted(inter["user_id"].astype(str).unique())
        if len(all_users) > spec.max_users:
            rng = np.random.default_rng(spec.seed)
            chosen = {all_users[i] for i in rng.choice(len(all_users), spec.max_users, replace=False)}
            inter = inter[inter["user_id"].astype(str).isin(chosen)]
    if inter.empty:
        raise DatasetError(
            f"domain {spec.name!r}: no interaction left after the item / user filters; loosen them."
        )
    if spec.catalogue == "interacted":
        seen = set(inter["item_id"].astype(str))
        item_ids = [i for i in item_ids if i in seen]
    index = {iid: i + 1 for i, iid in enumerate(item_ids)}
    inter = inter.assign(item_id=inter["item_id"].astype(str), user_id=inter["user_id"].astype(str))
    user_ids, sequences, _ = sequences_by_user(inter.reset_index(drop=True), index)
    stores = dict(stores or {})
    manifests = {n: read_domain_manifest(spec.name, n, p) for n, p in stores.items()}
    return LoadedDomain(
        spec=spec,
        path=data.path,
        dataset_name=data.name,
        dataset_fingerprint=data.fingerprint,
        item_ids=item_ids,
        user_ids=user_ids,
        sequences=sequences,
        stores=stores,
        manifests=manifests,
    )
