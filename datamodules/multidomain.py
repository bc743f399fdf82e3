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

The parts live in modules of their own: a domain's spec and user draws in
:mod:`mmrec.datamodules.domains`, loading and store checks in :mod:`mmrec.datamodules.domain_loading`, the
datasets and collate functions in :mod:`mmrec.datamodules.domain_batches` (their names are re-exported here).

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
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from mmrec.data.canonical import read_meta
from mmrec.datamodules.domain_batches import (
    DomainEvalSequences,
    DomainTrainSequences,
    collate_domain_eval,
    collate_domain_train,
)
from mmrec.datamodules.domain_loading import (
    LoadedDomain,
    check_store_agreement,
    load_domain,
    read_domain_manifest,
    resolve_domain_stores,
)
from mmrec.datamodules.domains import DomainSpec, few_shot_users, user_bucket
from mmrec.datamodules.paths import resolve_user_path
from mmrec.datamodules.registry import DATAMODULES
from mmrec.datamodules.sequence_loaders import length_grouped_loader, ranking_loader
from mmrec.datamodules.splits import EvalSplit, SplitResult, leave_one_out
from mmrec.protocols import ModelInputs
from mmrec.store import EmbeddingStore, StoreError

# the parts of a domain live in their own modules; their names stay importable from here
__all__ = [
    "ID_SEPARATOR",
    "PHASES",
    "DomainEvalSequences",
    "DomainSpec",
    "DomainTrainSequences",
    "LoadedDomain",
    "MultiDomainDataModule",
    "Phase",
    "PhaseData",
    "check_store_agreement",
    "collate_domain_eval",
    "collate_domain_train",
    "few_shot_users",
    "load_domain",
    "read_domain_manifest",
    "resolve_domain_stores",
    "user_bucket",
]

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "target"]
PHASES: tuple[str, ...] = ("pretrain", "target")
ID_SEPARATOR = ":"


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
            d: {n: read_domain_manifest(d, n, p) for n, p in paths.items()}
            for d, paths in self.store_paths.items()
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
        payload: dict[str, Any] = {
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
