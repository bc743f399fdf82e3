"""The multi-domain DataModule: source domains for pre-training, one target domain for transfer.

A *domain* is a canonical dataset (``mmrec data prepare`` / ``mmrec data synth`` output), optionally
restricted to some of its items (``items: {column, values}``, e.g. one category of the demo catalogue) and
some of its users (``users: {parts, part}``: a stable hash partition, so two domains cut from one dataset can
have disjoint users; ``max_users``: a seeded sample, to make big datasets fit a benchmark budget). Each
domain brings its own embedding stores; every domain must use the **same** encoder for a feature name
(checked from the store manifests: encoder, weights, dim, pooling, normalisation), so that items of every
domain live in one content space and a model pre-trained on the sources reads the target's items.

Two phases share the loaded data (``with_phase``):

- ``"pretrain"``: the union of the source domains in one catalogue. Items are indexed ``1..N`` domain by
  domain (domain ``d`` owns the contiguous block ``offset_d + 1 .. offset_d + n_d``), item ids are prefixed
  with the domain name (``"beauty:B000123"``) so that ids of different datasets never collide, and every
  batch carries ``domain (B,)`` so a model can rank and take its softmax inside the sample's own domain
  (``mmrec.models.transferable.TransferableRecommender`` does). Validation / test: each source's own
  leave-one-out split, ranked in-domain.
- ``"target"``: the target domain alone, leave-one-out by time, with an optional **few-shot** mode:
  ``few_shot=f`` keeps the training sequences of a seeded fraction ``f`` of the target's training users
  (:func:`few_shot_users`, seeded by ``few_shot_seed``, independent of the run seed so that every strategy
  and seed sees the same users). Validation and test are always over **all** evaluable target users (a user
  whose training sequence was dropped is still evaluated from their history, as a cold user).

Batches are those of :mod:`mmrec.datamodules.sequential` plus ``domain (B,)`` (index into
``catalog["domains"]``):

- train: ``user (B,)``, ``domain (B,)``, ``input_ids (B, L)``, ``target_ids (B, L)``.
- valid / test / predict: ``user (B,)``, ``domain (B,)``, ``input_ids (B, L)``, ``targets (B, 1)``,
  ``exclude_rows (E,)``, ``exclude_cols (E,)``.

``catalog`` adds ``domains``: ``[{"name", "offset", "num_items", "num_users", "dataset", "fingerprint"}]``
and ``phase`` to the usual sizes.

Example:
    >>> dm = MultiDomainDataModule(  # doctest: +SKIP
    ...     sources=[{"name": "beauty", "dataset": "data/beauty"}, {"name": "ml", "dataset": "data/ml-100k"}],
    ...     target={"name": "instruments", "dataset": "data/instruments2018"},
    ...     stores={"text": "cache/{dataset}/text"}, few_shot=0.1)
    >>> pre, tgt = dm.with_phase("pretrain"), dm.with_phase("target")  # doctest: +SKIP
    >>> pre.catalog["domains"][1]["offset"]  # doctest: +SKIP
    12101
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.sequential import (
    EvalSequences,
    TrainSequences,
    collate_eval,
    collate_train,
    length_grouped_loader,
    ranking_loader,
    resolve_user_path,
    sequences_by_user,
)
from mmrec.datamodules.splits import EvalSplit, SplitResult, leave_one_out
from mmrec.protocols import ModelInputs
from mmrec.store import EmbeddingStore, StoreError
from mmrec.store.reader import resolve_store_path

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "target"]
PHASES: tuple[str, ...] = ("pretrain", "target")
ID_SEPARATOR = ":"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# manifest fields that must agree for vectors of two stores to share one space
_ENCODER_KEYS = ("encoder", "weights", "dim")
_ENCODER_INFO_KEYS = ("pooling", "normalize", "preprocessing")


# ------------------------------------------------------------------------------------------------ specs
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


# ------------------------------------------------------------------------------------------------ loading
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


def _read_manifest(domain: str, feature: str, path: Path) -> dict[str, Any]:
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
    manifests = {n: _read_manifest(spec.name, n, p) for n, p in stores.items()}
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


# ------------------------------------------------------------------------------------------------ datasets
class DomainTrainSequences(TrainSequences):
    """:class:`TrainSequences` whose examples also carry the user's domain index."""

    def __init__(
        self,
        users: Sequence[int],
        sequences: Sequence[Sequence[int]],
        max_len: int,
        user_domain: Sequence[int],
    ) -> None:
        super().__init__(users, sequences, max_len)
        self.user_domain = list(user_domain)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        out = super().__getitem__(idx)
        out["domain"] = self.user_domain[out["user"]]
        return out


class DomainEvalSequences(EvalSequences):
    """:class:`EvalSequences` whose examples also carry the user's domain index."""

    def __init__(
        self, split: EvalSplit, max_len: int, mask_history: bool, user_domain: Sequence[int]
    ) -> None:
        super().__init__(split, max_len, mask_history)
        self.user_domain = list(user_domain)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        out = super().__getitem__(idx)
        out["domain"] = self.user_domain[out["user"]]
        return out


def collate_domain_train(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """:func:`~mmrec.datamodules.sequential.collate_train` plus ``domain (B,)``."""
    out = collate_train(examples)
    out["domain"] = torch.tensor([e["domain"] for e in examples], dtype=torch.long)
    return out


def collate_domain_eval(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """:func:`~mmrec.datamodules.sequential.collate_eval` plus ``domain (B,)``."""
    out = collate_eval(examples)
    out["domain"] = torch.tensor([e["domain"] for e in examples], dtype=torch.long)
    return out


@dataclass
class PhaseData:
    """The concatenated catalogue and splits of one phase."""

    domains: list[LoadedDomain]
    offsets: list[int]
    item_ids: list[str]
    user_ids: list[str]
    user_domain: list[int]
    sequences: list[list[int]]
    splits: SplitResult
    train_users: list[int]
    few_shot_kept: int | None = None


# ------------------------------------------------------------------------------------------------ datamodule
@DATAMODULES.register("data/multidomain")
class MultiDomainDataModule(L.LightningDataModule):
    """Source domains for pre-training and a target domain for transfer, over shared content features.

    Args:
        sources: the source domains (:class:`DomainSpec` fields as mappings: ``name``, ``dataset``,
            ``stores``, ``items``, ``users``, ``max_users``, ``seed``).
        target: the target domain (same fields).
        phase: ``"pretrain"`` (union of the sources) or ``"target"``; :meth:`with_phase` switches cheaply.
        stores: default feature stores for domains without their own; ``{dataset}`` in a path is replaced
            by the domain's dataset folder name (``cache/{dataset}/text``).
        max_len: history length fed to the model.
        batch_size: training users per step.
        eval_batch_size: users per evaluation step.
        few_shot: keep the training sequences of this fraction of target training users (``None`` = all).
        few_shot_seed: seed of the few-shot draw (fixed across runs so strategies are compared on the same
            users).
        mask_history: exclude known items from the ranking.
        num_workers: DataLoader workers.
        seed: seed of the training order.

    Example:
        >>> dm = MultiDomainDataModule(  # doctest: +SKIP
        ...     sources=[{"name": "tops", "dataset": "assets/demo",
        ...               "items": {"column": "attr_category", "values": ["shirt", "dress"]}}],
        ...     target={"name": "acc", "dataset": "assets/demo",
        ...             "items": {"column": "attr_category", "values": ["bag", "hat", "shoes"]}},
        ...     stores={"text": "cache/demo/text"}, phase="target", few_shot=0.5)
    """

    def __init__(
        self,
        sources: list[dict[str, Any]],
        target: dict[str, Any],
        phase: Phase = "pretrain",
        stores: dict[str, str] | None = None,
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        few_shot: float | None = None,
        few_shot_seed: int = 0,
        mask_history: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1.")
        if few_shot is not None and not 0.0 < few_shot <= 1.0:
            raise ValueError(f"few_shot must be a fraction in (0, 1] or null, got {few_shot}.")
        if not sources:
            raise ValueError("give at least one source domain (sources: [{name, dataset, ...}]).")
        self.source_specs = [DomainSpec.from_any(s) for s in sources]
        self.target_spec = DomainSpec.from_any(target)
        names = [s.name for s in [*self.source_specs, self.target_spec]]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"domain names must be unique across sources and target; repeated: {dup}.")
        self.phase: Phase = phase
        self.default_stores = dict(stores or {})
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.few_shot = few_shot
        self.few_shot_seed = few_shot_seed
        self.mask_history = mask_history
        self.num_workers = num_workers
        self.seed = seed
        for spec in [*self.source_specs, self.target_spec]:
            read_meta(resolve_user_path(spec.dataset))  # fail early, with the converter hint
        self.store_paths = {
            s.name: resolve_domain_stores(s, self.default_stores)
            for s in [*self.source_specs, self.target_spec]
        }
        self.manifests = {
            d: {n: _read_manifest(d, n, p) for n, p in paths.items()} for d, paths in self.store_paths.items()
        }
        if not any(self.manifests.values()):
            raise StoreError(
                "no feature stores: transferable models represent items by content only; give "
                "stores: {text: <store path>} (e.g. built with mmrec embed --config configs/embed/...)."
            )
        check_store_agreement(self.manifests)
        # loaded domains and per-phase data, shared by the copies that with_phase returns
        self._shared: dict[str, Any] = {"domains": {}, "phases": {}}

    # ----------------------------------------------------------------- phases
    def with_phase(self, phase: Phase, *, seed: int | None = None) -> MultiDomainDataModule:
        """A view of the same data in another phase (and optionally another training-order seed); loaded
        datasets are shared, nothing is read again."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
        view = copy.copy(self)
        view.phase = phase
        if seed is not None:
            view.seed = seed
        view.trainer = None  # a view is attached to its own Trainer
        return view

    @property
    def specs(self) -> list[DomainSpec]:
        """The domains of the current phase."""
        return list(self.source_specs) if self.phase == "pretrain" else [self.target_spec]

    @property
    def feature_names(self) -> list[str]:
        return sorted(next(iter(self.manifests.values())))

    def _domain(self, spec: DomainSpec) -> LoadedDomain:
        cache = self._shared["domains"]
        if spec.name not in cache:
            cache[spec.name] = load_domain(spec, self.store_paths[spec.name])
        return cache[spec.name]

    def _phase_key(self) -> str:
        return f"{self.phase}|fs={self.few_shot}|{self.few_shot_seed}"

    def phase_data(self) -> PhaseData:
        """Load (once) and concatenate the domains of the current phase; compute the splits."""
        key = self._phase_key()
        cache = self._shared["phases"]
        if key in cache:
            return cache[key]
        domains = [self._domain(s) for s in self.specs]
        offsets, item_ids, user_ids, user_domain, sequences = [], [], [], [], []
        offset = 0
        for d_idx, dom in enumerate(domains):
            offsets.append(offset)
            item_ids += [f"{dom.name}{ID_SEPARATOR}{i}" for i in dom.item_ids]
            user_ids += [f"{dom.name}{ID_SEPARATOR}{u}" for u in dom.user_ids]
            user_domain += [d_idx] * len(dom.user_ids)
            sequences += [[i + offset for i in s] for s in dom.sequences]
            offset += len(dom.item_ids)
        splits = leave_one_out(sequences)
        if splits.not_evaluated:
            log.warning(
                "%s: %d of %d users have fewer than 3 interactions: trained on, not evaluated.",
                self.phase,
                splits.not_evaluated,
                len(user_ids),
            )
        train_users = [u for u, s in enumerate(splits.train) if len(s) >= 2]
        kept: int | None = None
        if self.phase == "target" and self.few_shot is not None:
            chosen = set(
                few_shot_users([user_ids[u] for u in train_users], self.few_shot, self.few_shot_seed)
            )
            train_users = [u for u in train_users if user_ids[u] in chosen]
            kept = len(train_users)
        data = PhaseData(
            domains, offsets, item_ids, user_ids, user_domain, sequences, splits, train_users, kept
        )
        cache[key] = data
        return data

    # ----------------------------------------------------------------- info
    @property
    def catalog(self) -> dict[str, Any]:
        """Sizes, feature dims and the domain layout of the current phase (loads the datasets once)."""
        data = self.phase_data()
        dims = {n: int(m["dim"]) for n, m in next(iter(self.manifests.values())).items()}
        domains = [
            {
                "name": dom.name,
                "offset": off,
                "num_items": len(dom.item_ids),
                "num_users": len(dom.user_ids),
                "dataset": dom.dataset_name,
                "fingerprint": dom.dataset_fingerprint,
            }
            for dom, off in zip(data.domains, data.offsets)
        ]
        return {
            "num_items": len(data.item_ids),
            "num_users": len(data.user_ids),
            "max_len": self.max_len,
            "feature_dims": dims,
            "dataset": "+".join(d["name"] for d in domains),
            "fingerprint": self.fingerprint(),
            "domains": domains,
            "phase": self.phase,
        }

    def fingerprint(self) -> str:
        """Hash of what the current phase's data depends on: domain specs, dataset fingerprints, store
        fingerprints, ``max_len`` and (target) the few-shot setting. 16 hex digits."""
        payload = {
            "phase": self.phase,
            "max_len": self.max_len,
            "domains": [
                {
                    "spec": {k: v for k, v in asdict(s).items() if k not in ("dataset", "stores")},
                    "dataset": read_meta(resolve_user_path(s.dataset)).get("fingerprint"),
                    "stores": {n: m.get("fingerprint") for n, m in sorted(self.manifests[s.name].items())},
                }
                for s in self.specs
            ],
        }
        if self.phase == "target":
            payload["few_shot"] = [self.few_shot, self.few_shot_seed]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> list[dict[str, Any]]:
        """Per-domain counts of the current phase (items, users, interactions, evaluated / training users)."""
        data = self.phase_data()
        rows = []
        evaluated = {u for u in data.splits.test.users}
        train = set(data.train_users)
        for d_idx, (dom, off) in enumerate(zip(data.domains, data.offsets)):
            users = [u for u, d in enumerate(data.user_domain) if d == d_idx]
            rows.append(
                {
                    "domain": dom.name,
                    "dataset": dom.dataset_name,
                    "offset": off,
                    "items": len(dom.item_ids),
                    "users": len(users),
                    "interactions": dom.num_interactions,
                    "evaluated_users": sum(u in evaluated for u in users),
                    "training_users": sum(u in train for u in users),
                }
            )
        return rows

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to download: datasets come from ``mmrec data prepare`` and stores from ``mmrec embed``."""

    def setup(self, stage: str | None = None) -> None:
        self.phase_data()

    def train_dataloader(self) -> DataLoader:
        data = self.phase_data()
        chosen = set(data.train_users)
        seqs = [s if u in chosen else [] for u, s in enumerate(data.splits.train)]
        return length_grouped_loader(
            DomainTrainSequences(range(len(seqs)), seqs, self.max_len, data.user_domain),
            batch_size=self.batch_size,
            seed=self.seed,
            collate_fn=collate_domain_train,
            num_workers=self.num_workers,
            where=str(self.phase),
        )

    def _eval_loader(self, split: EvalSplit, by_length: bool = True) -> DataLoader:
        data = self.phase_data()
        return ranking_loader(
            DomainEvalSequences(split, self.max_len, self.mask_history, data.user_domain),
            batch_size=self.eval_batch_size,
            collate_fn=collate_domain_eval,
            num_workers=self.num_workers,
            by_length=by_length,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.phase_data().splits.valid)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.phase_data().splits.test)

    def predict_dataloader(self) -> DataLoader:
        """Every user of the phase with their full history, for next-item recommendations."""
        data = self.phase_data()
        return self._eval_loader(EvalSplit.full_histories(data.sequences), by_length=False)

    # ----------------------------------------------------------------- features
    def model_inputs(self) -> ModelInputs:
        """Lazy model inputs of the current phase: ``features`` (see :class:`~mmrec.protocols.ModelInputs`)."""
        return ModelInputs({"features": self.item_feature_tables})

    def item_feature_tables(
        self, dtype: torch.dtype = torch.float32
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Frozen item features of the phase's catalogue, domain blocks in catalogue order.

        Returns:
            name -> ``(features (N+1, D), valid (N+1,))``; row 0 (padding) is zeros / False.
        """
        data = self.phase_data()
        tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self.feature_names:
            vecs: list[torch.Tensor] = []
            masks: list[torch.Tensor] = []
            for dom in data.domains:
                v, m = EmbeddingStore.open(dom.stores[name]).aligned(dom.item_ids, dtype=dtype)
                missing = int((~m).sum())
                if missing:
                    log.warning(
                        "domain %r, feature %r: %d of %d items have no valid vector (masked).",
                        dom.name,
                        name,
                        missing,
                        len(m),
                    )
                vecs.append(v)
                masks.append(m)
            dim = vecs[0].shape[1]
            tables[name] = (
                torch.cat([torch.zeros(1, dim, dtype=dtype), *vecs]),
                torch.cat([torch.zeros(1, dtype=torch.bool), *masks]),
            )
        return tables
