"""A domain of a cross-domain setup: its spec (dataset, item / user filters) and the user draws it uses.

:class:`DomainSpec` is what a recipe or YAML names; :func:`user_bucket` is the stable hash partition behind
``users: {parts, part}``; :func:`few_shot_users` the seeded few-shot draw of the target's training users.
Loading a domain is :mod:`mmrec.datamodules.domain_loading`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class DomainSpec:
    """One domain of a cross-domain setup.

    Args:
        name: short unique name (letters, digits, ``_.-``); prefixes the domain's item and user ids.
        dataset: canonical dataset folder (relative paths against the current directory).
        stores: feature name -> store path (a store folder or a named ``mmrec embed`` folder with
            ``CURRENT``); ``{dataset}`` in a path is replaced by the dataset folder's name. ``None`` = the
            datamodule's default ``stores``.
        items: keep only items whose ``column`` value is in ``values`` (list-valued columns such as
            ``categories``: any element), e.g. ``{"column": "attr_category", "values": ["shoes", "bag"]}``.
        users: ``{"parts": n, "part": k}``: keep users whose id hashes (md5) to bucket ``k`` of ``n``, a
            stable partition (two domains cut from one dataset get disjoint users with different parts).
        max_users: keep a seeded random sample of at most this many users (after the filters above).
        seed: seed of the ``max_users`` sample.
        catalogue: ``"all"`` keeps every item that passes ``items`` (never-interacted ones can still be
            recommended); ``"interacted"`` keeps only items with an interaction of a kept user (a subsample
            then gets the smaller catalogue its users know, which makes full ranking cheaper).

    Example:
        >>> DomainSpec(name="acc", dataset="assets/demo", items={"column": "attr_category", "values": ["bag"]}).name
        'acc'
    """

    name: str
    dataset: str
    stores: dict[str, str] | None = None
    items: dict[str, Any] | None = None
    users: dict[str, int] | None = None
    max_users: int | None = None
    seed: int = 0
    catalogue: Literal["all", "interacted"] = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"domain name {self.name!r} must be non-empty letters, digits, '_', '.' or '-' "
                "(it prefixes item ids), e.g. name: beauty."
            )
        if self.items is not None:
            extra = set(self.items) - {"column", "values"}
            if extra or "column" not in self.items or "values" not in self.items:
                raise ValueError(
                    f"domain {self.name!r}: items must be {{column: <item column>, values: [..]}}, got {self.items}."
                )
            if isinstance(self.items["values"], str) or not list(self.items["values"]):
                raise ValueError(f"domain {self.name!r}: items.values must be a non-empty list.")
        if self.users is not None:
            parts, part = self.users.get("parts"), self.users.get("part")
            if set(self.users) != {"parts", "part"} or not (
                isinstance(parts, int) and isinstance(part, int) and parts >= 1 and 0 <= part < parts
            ):
                raise ValueError(
                    f"domain {self.name!r}: users must be {{parts: n, part: k}} with 0 <= k < n, got {self.users}."
                )
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"domain {self.name!r}: max_users must be >= 1 or null, got {self.max_users}.")
        if self.catalogue not in ("all", "interacted"):
            raise ValueError(
                f"domain {self.name!r}: catalogue must be 'all' or 'interacted', got {self.catalogue!r}."
            )

    @classmethod
    def from_any(cls, value: DomainSpec | Mapping[str, Any]) -> DomainSpec:
        """A spec from a mapping (YAML) or a spec; unknown keys are an error naming the valid ones."""
        if isinstance(value, DomainSpec):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"a domain must be a mapping {{name, dataset, ...}}, got {type(value).__name__}.")
        known = set(cls.__dataclass_fields__)
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown domain keys {sorted(unknown)}; valid keys: {sorted(known)}.")
        missing = {"name", "dataset"} - set(value)
        if missing:
            raise ValueError(f"a domain needs {sorted(missing)}; got {dict(value)}.")
        return cls(**dict(value))


def user_bucket(user_id: str, parts: int) -> int:
    """Stable hash bucket of a user id in ``0..parts-1`` (md5, independent of Python's hash seed).

    Example:
        >>> user_bucket("u001", 2) == user_bucket("u001", 2)
        True
    """
    return int(hashlib.md5(str(user_id).encode()).hexdigest()[:8], 16) % parts


def few_shot_users(user_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The training users kept by few-shot mode: a seeded fraction of ``user_ids``.

    The draw depends only on the *set* of ids (they are sorted first), ``fraction`` and ``seed``; at least one
    user is kept.

    Args:
        user_ids: candidate users (the target's users that have a training example).
        fraction: share to keep, in ``(0, 1]``.
        seed: seed of the draw.

    Returns:
        the kept ids, sorted.

    Example:
        >>> few_shot_users([f"u{i}" for i in range(10)], 0.3, seed=0) == few_shot_users(
        ...     [f"u{i}" for i in reversed(range(10))], 0.3, seed=0)
        True
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"few_shot must be a fraction in (0, 1], got {fraction}.")
    ids = sorted(set(user_ids))
    if not ids:
        return []
    n_keep = max(1, round(fraction * len(ids)))
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[:n_keep])
