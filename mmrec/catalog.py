"""The catalogue: what a model must know about the data before it is built.

A DataModule describes its data in ``datamodule.catalog`` (a plain dict, so checkpoints stay loadable with
``weights_only=True``); LightningCLI links it into the model's ``catalog`` argument. This module is the
contract between the two sides: DataModules build it with :class:`Catalog`, models check it with
:func:`require_catalog` and derive tensors from it (:func:`domain_of_items`). Models never import
DataModules.

Keys every catalogue has: ``num_items``, ``num_users``, ``max_len``, ``feature_dims`` (store name ->
vector width), ``dataset``, ``fingerprint``. DataModules add what their models need (``domains`` for
multi-domain data, ``tokenizer_fingerprint`` / ``visual_tokens`` for prompt-based models...).

Example:
    >>> cat = Catalog(num_items=3, num_users=2, max_len=5, feature_dims={}, dataset="toy", fingerprint="f")
    >>> require_catalog(cat.as_dict())["num_items"]
    3
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Catalog:
    """Sizes and feature widths of a dataset, as models receive them.

    Attributes:
        num_items: catalogue size N (models index items 1..N; 0 is padding).
        num_users: number of users U (indexed 0..U-1).
        max_len: longest history fed to sequence models.
        feature_dims: embedding store name -> vector width.
        dataset: dataset name (for messages and provenance).
        fingerprint: the dataset's content fingerprint (checked when a checkpoint is served).
    """

    num_items: int
    num_users: int
    max_len: int
    feature_dims: dict[str, int]
    dataset: str
    fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        """The catalogue as the plain dict models receive."""
        return {
            "num_items": self.num_items,
            "num_users": self.num_users,
            "max_len": self.max_len,
            "feature_dims": dict(self.feature_dims),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
        }


def require_catalog(catalog: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the catalogue that sizes a model (filled by the CLI from the datamodule).

    Args:
        catalog: ``datamodule.catalog``.

    Raises:
        ValueError: missing, or without ``num_items`` / ``num_users``, or with no items.
    """
    if catalog is None:
        raise ValueError(
            "catalog is required to size the model: the CLI links it from the datamodule; in Python pass "
            "catalog=datamodule.catalog."
        )
    missing = {"num_items", "num_users"} - set(catalog)
    if missing:
        raise ValueError(f"catalog lacks {sorted(missing)}; pass datamodule.catalog.")
    if int(catalog["num_items"]) < 1:
        raise ValueError("catalog has no items.")
    return dict(catalog)


def domain_of_items(catalog: Mapping[str, Any]) -> torch.Tensor:
    """``(N+1,)`` long tensor: the domain index of each item of ``catalog`` (``-1`` for padding row 0).

    A catalogue without ``domains`` is one domain.

    Example:
        >>> domain_of_items({"num_items": 3, "domains": [{"offset": 0, "num_items": 1}, {"offset": 1, "num_items": 2}]})
        tensor([-1,  0,  1,  1])
    """
    n = int(catalog["num_items"])
    out = torch.full((n + 1,), -1, dtype=torch.long)
    domains = catalog.get("domains") or [{"offset": 0, "num_items": n}]
    for d, dom in enumerate(domains):
        lo, size = int(dom["offset"]), int(dom["num_items"])
        out[lo + 1 : lo + size + 1] = d
    if bool((out[1:] < 0).any()) or sum(int(d["num_items"]) for d in domains) != n:
        raise ValueError(
            f"catalog domains {[(d.get('name'), d['offset'], d['num_items']) for d in domains]} do not tile the "
            f"{n} items; pass the datamodule's catalog unchanged."
        )
    return out
