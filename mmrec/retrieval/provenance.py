"""Which model an index was built from: the fingerprints of the feature stores a model reads (recorded in
index manifests) and the check that an index fits the model about to serve from it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mmrec.retrieval.checkpoint import describe_source
from mmrec.retrieval.errors import IndexMismatchError
from mmrec.retrieval.index import ItemIndex
from mmrec.store import EmbeddingStore


def feature_fingerprints(
    feature_paths: Mapping[str, str | os.PathLike[str]], used: Collection[str]
) -> dict[str, str]:
    """Fingerprint of each feature store the model reads.

    Args:
        feature_paths: feature name -> store folder (the datamodule's ``feature_paths``).
        used: the feature names the model reads (``model.feature_names``); other stores are left out.

    Returns:
        name -> the store manifest's ``fingerprint``, or ``manifest-sha256:<hex>`` of the manifest when it
        has none.
    """
    features = {}
    for name, p in feature_paths.items():
        if name in used:
            manifest = EmbeddingStore.read_manifest(p)
            blob = json.dumps(manifest, sort_keys=True, default=str).encode()
            features[name] = str(
                manifest.get("fingerprint") or "manifest-sha256:" + hashlib.sha256(blob).hexdigest()
            )
    return features


def check_index_source(index: ItemIndex, mine: Mapping[str, Any], dim: int, item_ids: Sequence[str]) -> None:
    """Refuse an index that was not built from this model.

    Args:
        index: the loaded index (its manifest's ``source``, dimension, items and metric).
        mine: the serving model's source (``Recommender.source``: ``sha256``, ``model_fingerprint``...).
        dim: the model's vector dimension.
        item_ids: the dataset's item ids, in item-index order.

    Raises:
        IndexMismatchError: built from another checkpoint / model, a store, another dimension, other items,
            or with the cosine metric (models score by inner product); the message says how to rebuild it.
    """
    src = index.source
    where = f"index {index.path}" if index.path else "the index"
    if src.get("type") != "checkpoint":
        raise IndexMismatchError(
            f"{where} was built from {describe_source(src)}, not from this model ({describe_source(mine)}). "
            f"Build one for it: mmrec index --ckpt {mine.get('path')} --out DIR"
        )
    same_file = bool(src.get("sha256")) and src.get("sha256") == mine.get("sha256")
    same_model = bool(src.get("model_fingerprint")) and src.get("model_fingerprint") == mine.get(
        "model_fingerprint"
    )
    if not (same_file or same_model):
        raise IndexMismatchError(
            f"{where} was built from {describe_source(src)}, but this model is {describe_source(mine)}: "
            f"different weights. Rebuild it: mmrec index --ckpt {mine.get('path')} --out {index.path or 'DIR'} --overwrite"
        )
    if index.dim != dim or index.count != len(item_ids):
        raise IndexMismatchError(
            f"{where} holds {index.count} x {index.dim} vectors, the model {len(item_ids)} x {dim}; rebuild it."
        )
    if index.item_ids != item_ids:
        raise IndexMismatchError(f"{where} lists its items in another order than the dataset; rebuild it.")
    if index.metric != "ip":
        raise IndexMismatchError(
            f"{where} uses metric {index.metric!r}, but models score by inner product; rebuild it with metric 'ip'."
        )
