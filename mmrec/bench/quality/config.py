"""The quality recipe: one dataset + split + protocol, a list of models x seeds, how to flag a broken model.

A recipe is a YAML file (``configs/bench/<dataset>.yaml``) read into :class:`QualityConfig`, a plain
dataclass tree that :func:`load_quality_config` builds strictly (unknown keys are errors that list the valid
ones) and that jsonargparse reads as it is (``parser.add_class_arguments(QualityConfig)``).

Example recipe::

    name: demo
    out: runs/bench/quality/demo
    seeds: [0, 1, 2]
    data:
      datamodule: data/sequential
      args: {dataset: assets/demo, max_len: 20, protocol: recbole}
    trainer: {max_epochs: 30, patience: 6}
    models:
      - {model: baseline/mostpop, label: MostPop}
      - {model: sequential/sasrec, label: SASRec, args: {dim: 64, lr: 0.002}, baseline: true}

Example:
    >>> cfg = load_quality_config("configs/bench/demo.yaml", ["seeds=[0]"])  # doctest: +SKIP
    >>> [m.display for m in cfg.models]  # doctest: +SKIP
    ['MostPop', 'SASRec', 'Multimodal']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmrec.bench.crossdomain import apply_override

#: the registry key of the popularity reference every table carries
MOSTPOP_KEY = "baseline/mostpop"


class QualityConfigError(ValueError):
    """A quality recipe is malformed (the message names the key and how to fix it)."""


@dataclass
class ModelEntry:
    """One model of the table (trained and evaluated once per seed).

    Args:
        model: registry key of the model (``mmrec models`` lists them), e.g. ``sequential/sasrec``.
        label: row name (default: the key).
        args: the model's constructor arguments (``catalog`` is linked from the datamodule). Not called
            ``init_args``: jsonargparse reads an ``init_args`` key of a dataclass as the dataclass's own fields.
        max_epochs: overrides ``trainer.max_epochs`` for this model.
        patience: overrides ``trainer.patience`` (epochs without validation improvement before stopping).
        data: overrides of ``data.args`` for this model only (e.g. ``{shuffle_train_targets: true}``, the
            negative control, or other ``stores``).
        baseline: a baseline the other models are tested against (the best of them on validation is "the
            best baseline"); the MostPop reference always is one.
        seeds: overrides the recipe's ``seeds`` for this model.
    """

    model: str
    label: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int | None = None
    patience: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    seeds: list[int] | None = None

    @property
    def display(self) -> str:
        """The row label."""
        return self.label or self.model


@dataclass
class DataConfig:
    """The datamodule shared by every model: a ``DATAMODULES`` key and its arguments (dataset, ``max_len``,
    ``stores``, ``protocol`` / ``mask_history``...). Its ``seed`` is set per run."""

    datamodule: str = "data/sequential"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    """Training with model selection on validation only.

    Args:
        max_epochs: epoch limit.
        patience: early stopping patience on ``monitor`` (validation).
        monitor: the validation metric that selects the epoch (and stops training).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        threads: ``torch.set_num_threads`` for the whole benchmark (``null`` = torch's default); one thread
            per process is fastest on a shared CPU.
    """

    max_epochs: int = 50
    patience: int = 10
    monitor: str = "val/ndcg@10"
    accelerator: str = "auto"
    threads: int | None = 1


@dataclass
class GroupsConfig:
    """Item groups of the tail / cold / head metrics (:func:`mmrec.metrics.item_groups`).

    Args:
        head_fraction: the most popular share of the catalogue (by training interactions) that is the head;
            the rest is the tail.
        cold_max_count: items with at most this many training interactions are cold.
    """

    head_fraction: float = 0.2
    cold_max_count: int = 5


@dataclass
class FlagsConfig:
    """When a row is flagged as broken (the ``warning`` column).

    Args:
        max_same_top10_share: a model whose most common top-10 list is shared by more users than this
            (unmasked ranking) is flagged as collapsed (user-independent).
        min_gain_over_mostpop: relative test NDCG@10 gain over MostPop a model needs (0.05 = +5%) ...
        alpha: ... and a Holm-adjusted paired Wilcoxon p-value against MostPop below this, or it is flagged
            as not above MostPop.
    """

    max_same_top10_share: float = 0.10
    min_gain_over_mostpop: float = 0.05
    alpha: float = 0.05


@dataclass
class QualityConfig:
    """A quality benchmark recipe (see the module docstring).

    Args:
        name: recipe name (table title).
        out: output folder (``results.{md,csv,png}``, ``summary.json``, ``runs/*.json``).
        data: :class:`DataConfig`.
        models: the rows (:class:`ModelEntry`); a MostPop reference row is added first when absent.
        seeds: seeds of every trained model (models without training run once, with the first seed).
        trainer: :class:`TrainerConfig`.
        groups: :class:`GroupsConfig`.
        flags: :class:`FlagsConfig`.
        rerun: recompute runs whose JSON result already exists (otherwise a finished run is reused).
        path: the YAML it came from (informational).
    """

    name: str
    out: str
    data: DataConfig = field(default_factory=DataConfig)
    models: list[ModelEntry] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    flags: FlagsConfig = field(default_factory=FlagsConfig)
    rerun: bool = False
    path: str | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate values (also after jsonargparse built the object); raises :class:`QualityConfigError`."""
        if not self.name or not self.out:
            raise QualityConfigError(
                "the recipe needs `name:` and `out:` (e.g. out: runs/bench/quality/demo)."
            )
        if not self.models:
            raise QualityConfigError(
                "models is empty; list rows such as {model: sequential/sasrec, label: SASRec}."
            )
        if not self.seeds:
            raise QualityConfigError("seeds is empty; give at least one seed, e.g. [0, 1, 2].")
        labels = [m.display for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise QualityConfigError(f"model labels must be unique, repeated: {dup}; give them `label:`.")
        if self.trainer.max_epochs < 1 or self.trainer.patience < 0:
            raise QualityConfigError("trainer.max_epochs must be >= 1 and trainer.patience >= 0.")
        if self.trainer.threads is not None and self.trainer.threads < 1:
            raise QualityConfigError(f"trainer.threads must be >= 1 or null, got {self.trainer.threads}.")
        if not 0.0 < self.groups.head_fraction < 1.0 or self.groups.cold_max_count < 0:
            raise QualityConfigError("groups.head_fraction must be in (0, 1) and groups.cold_max_count >= 0.")
        if "dataset" not in self.data.args:
            raise QualityConfigError("data.args needs `dataset:` (a canonical dataset folder).")
        if "seed" in self.data.args:
            raise QualityConfigError("data.args.seed is set per run from `seeds`; remove it.")
        for m in self.models:
            if m.max_epochs is not None and m.max_epochs < 1:
                raise QualityConfigError(f"models[{m.display}].max_epochs must be >= 1.")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str | None = None) -> QualityConfig:
        """Build and check a recipe from its YAML mapping (:func:`config_from_dict`)."""
        return config_from_dict(raw, path)

    def with_reference(self) -> list[ModelEntry]:
        """The rows with the MostPop reference first (added when the recipe has none)."""
        if any(m.model == MOSTPOP_KEY for m in self.models):
            return list(self.models)
        return [ModelEntry(model=MOSTPOP_KEY, label="MostPop", baseline=True), *self.models]

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping (JSON / YAML friendly)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- loading
def _build(cls: type, value: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, refusing unknown keys (typos) with the valid ones."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise QualityConfigError(f"{where} must be a mapping, got {type(value).__name__}: {value!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise QualityConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(names)}.")
    try:
        return cls(**dict(value))
    except TypeError as e:
        raise QualityConfigError(f"{where}: {e}") from e


def config_from_dict(raw: Mapping[str, Any], path: str | None = None) -> QualityConfig:
    """Build and check a :class:`QualityConfig` from its YAML mapping."""
    top = {f.name for f in dataclasses.fields(QualityConfig)} - {"path"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise QualityConfigError(f"unknown top-level key(s) {unknown}; valid keys: {sorted(top)}.")
    models_raw = raw.get("models") or []
    if not isinstance(models_raw, Sequence) or isinstance(models_raw, str):
        raise QualityConfigError("models must be a list of {model: <registry key>, label: ...} entries.")
    models = [
        _build(ModelEntry, {"model": m} if isinstance(m, str) else m, f"models[{i}]")
        for i, m in enumerate(models_raw)
    ]
    kwargs: dict[str, Any] = {k: raw[k] for k in ("name", "out", "seeds", "rerun") if k in raw}
    return QualityConfig(
        **kwargs,
        data=_build(DataConfig, raw.get("data"), "data"),
        models=models,
        trainer=_build(TrainerConfig, raw.get("trainer"), "trainer"),
        groups=_build(GroupsConfig, raw.get("groups"), "groups"),
        flags=_build(FlagsConfig, raw.get("flags"), "flags"),
        path=path,
    )


def load_quality_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> QualityConfig:
    """Read a recipe YAML and apply ``key.path=value`` overrides (YAML-parsed values; list items by index:
    ``models.1.max_epochs=3``, ``seeds=[0]``, ``data.args.protocol=masked``, ``rerun=true``).

    Args:
        path: the YAML file.
        overrides: assignments applied in order.

    Returns:
        the checked :class:`QualityConfig`.

    Raises:
        QualityConfigError: a missing file, an unknown key or a bad value (the message says which).
    """
    p = Path(path)
    if not p.is_file():
        raise QualityConfigError(
            f"recipe {p} does not exist; recipes live in configs/bench/ (demo.yaml, beauty.yaml, ml100k.yaml...)."
        )
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise QualityConfigError(f"{p} must hold a YAML mapping.")
    for a in overrides:
        try:
            apply_override(raw, a)
        except ValueError as e:
            raise QualityConfigError(str(e)) from e
    return config_from_dict(raw, path=str(p))
