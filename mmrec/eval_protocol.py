"""The evaluation protocol as a named value: which split, which items are ranked, whether history is masked.

Every result mmrec prints or writes names the protocol it was measured under (``mmrec fit`` / ``mmrec test``
print it, ``test_metrics.json`` and ``mmrec bench quality`` records carry it), because the same model scores
differently under different protocols: masking the user's known items from a full ranking adds 0.004-0.02
NDCG@10 to a sequential model on Amazon data, and a sampled ranking (1 positive + 100 negatives) inflates
everything several-fold.

Fields:

- ``split``: ``leave-one-out`` (by time: last interaction = test, second to last = validation),
  ``given`` (the dataset's own ``split`` column, e.g. MMRec's ``x_label`` or RecBole's benchmark files),
  ``cold-items`` (item cold start: a seeded ``holdout_fraction`` of the items is withheld from training
  entirely; half of them are validation targets, half test targets, see
  :func:`mmrec.datamodules.splits.cold_item_split`) or ``temporal`` (one global time cut for all users: the
  latest ``holdout_fraction`` of all interactions is held out, its first half is the validation window and
  its second half the test window, see :func:`mmrec.datamodules.splits.temporal_split`).
- ``holdout_fraction``: the share held out by ``cold-items`` (of the items) and ``temporal`` (of the
  interactions, by time); ``None`` for the other splits.
- ``split_seed``: the seed that draws the withheld items of ``cold-items`` (fixed across model seeds, so
  every run of a table sees the same items); ``None`` for the other splits.
- ``mask_history``: the user's known items are removed from the ranking (targets never are).
- ``ranking``: ``full`` (every item of the catalogue is ranked) or ``sampled`` (the positive among
  ``num_candidates - 1`` negatives drawn once with a seed).

Presets (:data:`PRESETS`):

==============  ==============  =============  =====  ==========================================================
name            split           mask_history   rank   what uses it
==============  ==============  =============  =====  ==========================================================
``recbole``     leave-one-out   no             full   RecBole's sequential models and the published sequential
                                                      numbers (SASRec, BERT4Rec, S3-Rec, UniSRec...); **the
                                                      default of the sequential DataModule**
``given``       given           no             full   the same on a dataset's given split (RecBole benchmark
                                                      files); the default when the dataset has a split column
``masked``      leave-one-out   yes            full   history-masked leave-one-out (mmrec's former default;
                                                      RecBole's general / CF recommenders)
``mmrec``       given           yes            full   the MMRec toolkit's protocol for multimodal CF (VBPR,
                                                      LATTICE, FREEDOM...): given split, training items masked
==============  ==============  =============  =====  ==========================================================

Example:
    >>> p = preset("recbole")
    >>> p.name, p.describe()
    ('recbole', 'recbole (leave-one-out by time, full ranking, history not masked)')
    >>> EvalProtocol(split="leave-one-out", mask_history=True).name
    'masked'
    >>> EvalProtocol(split="leave-one-out", mask_history=True, ranking="sampled", num_candidates=101).name
    'custom'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

SplitKind = Literal["leave-one-out", "given", "cold-items", "temporal"]
RankingKind = Literal["full", "sampled"]

SPLITS: tuple[str, ...] = ("leave-one-out", "given", "cold-items", "temporal")
#: splits that hold out a share (``holdout_fraction``) rather than the last interactions / a given column
HOLDOUT_SPLITS: tuple[str, ...] = ("cold-items", "temporal")
RANKINGS: tuple[str, ...] = ("full", "sampled")


@dataclass(frozen=True)
class EvalProtocol:
    """How a result was measured (see the module docstring).

    Args:
        split: ``leave-one-out`` or ``given``.
        mask_history: remove the user's known items from the ranking.
        ranking: ``full`` or ``sampled``.
        num_candidates: candidates per user (positive included) for ``sampled``; ``None`` for ``full``.
        holdout_fraction: share held out by ``cold-items`` / ``temporal`` (in ``(0, 1)``; required there,
            ``None`` elsewhere).
        split_seed: seed of the withheld items of ``cold-items`` (default 0 there; ``None`` elsewhere).

    Raises:
        ValueError: an unknown split or ranking, ``num_candidates`` inconsistent with ``ranking``, or
            ``holdout_fraction`` / ``split_seed`` inconsistent with ``split``.
    """

    split: SplitKind = "leave-one-out"
    mask_history: bool = False
    ranking: RankingKind = "full"
    num_candidates: int | None = None
    holdout_fraction: float | None = None
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"protocol split must be one of {SPLITS}, got {self.split!r}.")
        if self.ranking not in RANKINGS:
            raise ValueError(f"protocol ranking must be one of {RANKINGS}, got {self.ranking!r}.")
        if self.ranking == "sampled" and (self.num_candidates is None or self.num_candidates < 2):
            raise ValueError(
                "a sampled ranking needs num_candidates >= 2 (the positive plus at least one negative), "
                f"got {self.num_candidates!r}."
            )
        if self.ranking == "full" and self.num_candidates is not None:
            raise ValueError(
                "num_candidates is only meaningful for ranking: sampled; drop it for full ranking."
            )
        if self.split in HOLDOUT_SPLITS:
            f = self.holdout_fraction
            if f is None or not 0.0 < float(f) < 1.0:
                raise ValueError(
                    f"split {self.split} needs holdout_fraction in (0, 1) (e.g. 0.2: the share of "
                    f"{'items' if self.split == 'cold-items' else 'interactions, latest first,'} held out), "
                    f"got {f!r}."
                )
            if self.split == "cold-items" and self.split_seed is None:
                object.__setattr__(self, "split_seed", 0)
            if self.split == "temporal" and self.split_seed is not None:
                raise ValueError("split_seed is only used by split: cold-items; drop it for split: temporal.")
        elif self.holdout_fraction is not None or self.split_seed is not None:
            raise ValueError(
                f"holdout_fraction / split_seed are only meaningful for splits {HOLDOUT_SPLITS}; drop them for "
                f"split: {self.split}."
            )

    @property
    def name(self) -> str:
        """The preset these fields equal (``recbole``, ``given``, ``masked``, ``mmrec``, ``cold-items``,
        ``temporal``; the held-out share and seed may differ from the preset's), else ``custom``."""
        for key, value in PRESETS.items():
            same = dataclasses.replace(
                self, holdout_fraction=value.holdout_fraction, split_seed=value.split_seed
            ) if self.split == value.split and self.split in HOLDOUT_SPLITS else self
            if value == same:
                return key
        return "custom"

    def describe(self) -> str:
        """One human-readable line, e.g. ``recbole (leave-one-out by time, full ranking, history not masked)``."""
        if self.split == "cold-items":
            split = f"cold items: {self.holdout_fraction:g} of the items withheld, seed {self.split_seed}"
        elif self.split == "temporal":
            split = f"global time cut: latest {self.holdout_fraction:g} of the interactions held out"
        else:
            split = "leave-one-out by time" if self.split == "leave-one-out" else "given split"
        ranking = (
            "full ranking"
            if self.ranking == "full"
            else f"sampled ranking ({self.num_candidates} candidates)"
        )
        mask = "history masked" if self.mask_history else "history not masked"
        return f"{self.name} ({split}, {ranking}, {mask})"

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "split", "mask_history", "ranking", "num_candidates", "holdout_fraction", "split_seed"}``
        (JSON friendly)."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EvalProtocol:
        """Inverse of :meth:`as_dict` (the ``name`` key is ignored: it is derived from the fields)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})


PRESETS: dict[str, EvalProtocol] = {
    "recbole": EvalProtocol(split="leave-one-out", mask_history=False),
    "given": EvalProtocol(split="given", mask_history=False),
    "masked": EvalProtocol(split="leave-one-out", mask_history=True),
    "mmrec": EvalProtocol(split="given", mask_history=True),
    "cold-items": EvalProtocol(split="cold-items", mask_history=False, holdout_fraction=0.2, split_seed=0),
    "temporal": EvalProtocol(split="temporal", mask_history=False, holdout_fraction=0.2),
}


def preset(name: str) -> EvalProtocol:
    """The preset called ``name``.

    Raises:
        ValueError: naming the presets when ``name`` is not one of them.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown evaluation protocol {name!r}; presets: {', '.join(PRESETS)}.")
    return PRESETS[name]


@runtime_checkable
class ProtocolSource(Protocol):
    """A DataModule that declares the protocol its validation / test batches follow."""

    @property
    def protocol(self) -> EvalProtocol:
        """The :class:`EvalProtocol` of ``val_dataloader`` / ``test_dataloader``."""
        ...


def protocol_of(datamodule: Any) -> EvalProtocol | None:
    """``datamodule.protocol`` when the datamodule declares one, else ``None`` (then results say so)."""
    if datamodule is not None and isinstance(datamodule, ProtocolSource):
        value = datamodule.protocol
        return value if isinstance(value, EvalProtocol) else None
    return None
