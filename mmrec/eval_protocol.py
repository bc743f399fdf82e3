"""The evaluation protocol as a named value: which split, which items are ranked, whether history is masked.

Every result mmrec prints or writes names the protocol it was measured under (``mmrec fit`` / ``mmrec test``
print it, ``test_metrics.json`` and ``mmrec bench quality`` records carry it), because the same model scores
differently under different protocols: masking the user's known items from a full ranking adds 0.004-0.02
NDCG@10 to a sequential model on Amazon data, and a sampled ranking (1 positive + 100 negatives) inflates
everything several-fold.

Fields:

- ``split``: ``leave-one-out`` (by time: last interaction = test, second to last = validation) or
  ``given`` (the dataset's own ``split`` column, e.g. MMRec's ``x_label`` or RecBole's benchmark files).
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

SplitKind = Literal["leave-one-out", "given"]
RankingKind = Literal["full", "sampled"]

SPLITS: tuple[str, ...] = ("leave-one-out", "given")
RANKINGS: tuple[str, ...] = ("full", "sampled")


@dataclass(frozen=True)
class EvalProtocol:
    """How a result was measured (see the module docstring).

    Args:
        split: ``leave-one-out`` or ``given``.
        mask_history: remove the user's known items from the ranking.
        ranking: ``full`` or ``sampled``.
        num_candidates: candidates per user (positive included) for ``sampled``; ``None`` for ``full``.

    Raises:
        ValueError: an unknown split or ranking, or ``num_candidates`` inconsistent with ``ranking``.
    """

    split: SplitKind = "leave-one-out"
    mask_history: bool = False
    ranking: RankingKind = "full"
    num_candidates: int | None = None

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

    @property
    def name(self) -> str:
        """The preset these fields equal (``recbole``, ``given``, ``masked``, ``mmrec``), else ``custom``."""
        for key, value in PRESETS.items():
            if value == self:
                return key
        return "custom"

    def describe(self) -> str:
        """One human-readable line, e.g. ``recbole (leave-one-out by time, full ranking, history not masked)``."""
        split = "leave-one-out by time" if self.split == "leave-one-out" else "given split"
        ranking = (
            "full ranking"
            if self.ranking == "full"
            else f"sampled ranking ({self.num_candidates} candidates)"
        )
        mask = "history masked" if self.mask_history else "history not masked"
        return f"{self.name} ({split}, {ranking}, {mask})"

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "split", "mask_history", "ranking", "num_candidates"}`` (JSON friendly)."""
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
