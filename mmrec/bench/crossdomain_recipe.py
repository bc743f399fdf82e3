"""The cross-domain benchmark's recipe (``configs/crossdomain/*.yaml``): typed, checked, and light to import.

:class:`Recipe` and its parts are dataclasses: ``mmrec bench crossdomain`` reads their fields with jsonargparse
(so ``--config FILE``, ``--print_config`` and dotted overrides such as ``--transfer.seeds=[0]`` work), and
:meth:`Recipe.from_dict` checks a whole mapping (unknown keys, with a "did you mean"; unknown strategies;
empty lists). :func:`load_recipe` and :func:`apply_override` are the same for Python callers. The training
code is :mod:`mmrec.bench.crossdomain`.

Example:
    >>> r = Recipe.from_dict({"name": "demo", "out": "runs/x",
    ...     "data": {"sources": [{"name": "a", "dataset": "d"}], "target": {"name": "t", "dataset": "d"}},
    ...     "transfer": {"strategies": ["transfer/scratch", {"name": "lora/peft", "options": {"r": 4}}]}})
    >>> [s.display for s in r.transfer.strategies], r.transfer.seeds
    (['scratch', 'lora'], [0, 1, 2])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from mmrec.adapters.strategies import strategy_keys, strategy_label

MONITOR = "val/ndcg@10"
ZERO_SHOT = "zero-shot"
CONTENT_KNN = "content-knn"
#: rows evaluated without any training (one run each, the first seed only)
NO_TRAINING = (ZERO_SHOT, CONTENT_KNN)
#: bumped when what pre-training produces changes for the same recipe (part of the cache fingerprint)
PRETRAIN_REVISION = 2


#: ``content-knn`` history modes (:class:`mmrec.models.knn.ContentKNN`, the zoo's `knn/content`)
CONTENT_KNN_HISTORY = ("all", "last")


class RecipeError(ValueError):
    """A cross-domain recipe is malformed (the message names the key and how to fix it)."""


def _did_you_mean(word: str, known: Sequence[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------------------------- recipe
def _build(cls: type, value: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, refusing unknown keys (typos) with the valid ones."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where} must be a mapping, got {type(value).__name__}: {value!r}.")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise RecipeError(
            f"unknown key(s) {unknown} in {where};{_did_you_mean(unknown[0], fields)} valid keys: {sorted(fields)}."
        )
    try:
        return cls(**dict(value))
    except TypeError as e:
        raise RecipeError(f"{where}: {e}") from e


@dataclass
class StrategySpec:
    """One transfer strategy of the benchmark.

    Args:
        name: ``transfer/scratch``, ``transfer/full``, an adapter key (``bottleneck/houlsby``, ``lora/peft``...;
            :func:`mmrec.adapters.strategies.strategy_keys` lists them), ``zero-shot`` (the pre-trained model evaluated on the target without any training), or
            ``content-knn`` (the parameter-free content baseline :class:`ContentKNN`; ``options``:
            ``history: all | last``, ``feature``).
        label: row name in the table (default: the name, plus ``[where]`` and ``+LN`` when set).
        where: towers (``item``, ``sequence``); ``null`` = every tower the method applies to.
        tune_layer_norm: also train the LayerNorms of those towers.
        options: the method's options (``reduction_factor``, ``r``, ``n_tokens``...).
        lr: learning rate for this strategy (default: ``transfer.lr``).
    """

    name: str
    label: str | None = None
    where: list[str] | None = None
    tune_layer_norm: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.name not in NO_TRAINING and self.name not in strategy_keys():
            close = difflib.get_close_matches(self.name, [*strategy_keys(), *NO_TRAINING], n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise RecipeError(
                f"unknown strategy {self.name!r}.{hint} Known: {', '.join([*strategy_keys(), *NO_TRAINING])}."
            )
        if self.name == CONTENT_KNN:
            unknown = sorted(set(self.options) - {"history", "feature"})
            if unknown or self.options.get("history", "all") not in CONTENT_KNN_HISTORY:
                raise RecipeError(
                    f"content-knn options are history: {' | '.join(CONTENT_KNN_HISTORY)} and feature: <store "
                    f"name>; got {self.options}."
                )
        if isinstance(self.where, str):
            self.where = [self.where]
        if self.lr is not None and self.lr <= 0:
            raise RecipeError(f"strategy {self.name}: lr must be > 0, got {self.lr}.")

    @property
    def display(self) -> str:
        """The row label."""
        if self.label:
            return self.label
        base = strategy_label(self.name)
        if self.where:
            base += f"[{'+'.join(self.where)}]"
        return base + ("+LN" if self.tune_layer_norm else "")


@dataclass
class DataSpec:
    """Domains and loader settings (see :class:`~mmrec.datamodules.multidomain.MultiDomainDataModule`)."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, str] | None = None
    max_len: int = 50
    batch_size: int = 256
    eval_batch_size: int = 512
    few_shot: float | None = None
    few_shot_seed: int = 0
    num_workers: int = 0


@dataclass
class ModelSpec:
    """Architecture of the transferable recommender (:class:`TransferableRecommender` arguments; see its
    module docstring for why ``score``, ``center_features``, ``input_scale`` and ``item_dropout`` matter)."""

    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    fusion: str = "sum"
    id_embedding: bool = False
    in_domain_softmax: bool = True
    score: str = "cosine"
    temperature: float = 0.07
    center_features: str = "domain"
    input_scale: float | None = None
    item_dropout: float | None = 0.0


@dataclass
class PretrainSpec:
    """Pre-training on the sources: epochs, early stopping patience (validation NDCG@10), optimiser, seed."""

    max_epochs: int = 20
    patience: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class TransferSpec:
    """Training on the target, for every strategy and seed."""

    max_epochs: int = 20
    patience: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    strategies: list[StrategySpec] = field(default_factory=list)
    baseline: str = "transfer/scratch"


@dataclass
class Recipe:
    """A cross-domain benchmark recipe (``configs/crossdomain/*.yaml``).

    Args:
        name: recipe name (table title).
        out: output folder (``results.{csv,md,png}``, ``runs/*.json``), relative to the current directory.
        cache: folder of cached pre-trained models.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: ``torch.set_num_threads`` for the whole benchmark (``null`` = torch's default). On a shared
            CPU, 1 thread is often several times faster than oversubscribed cores; timings compare only
            within one run.
        data: :class:`DataSpec`.
        model: :class:`ModelSpec`.
        pretrain: :class:`PretrainSpec`.
        transfer: :class:`TransferSpec`.
        path: the YAML it came from (informational).
    """

    name: str
    out: str
    cache: str = "cache/crossdomain"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    path: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str | None = None) -> Recipe:
        """Build and check a recipe from its YAML mapping."""
        top = {f.name for f in dataclasses.fields(cls)} - {"path"}
        unknown = sorted(set(raw) - top)
        if unknown:
            raise RecipeError(
                f"unknown top-level key(s) {unknown};{_did_you_mean(unknown[0], top)} valid keys: {sorted(top)}."
            )
        for key in ("name", "out"):
            if not raw.get(key):
                raise RecipeError(f"the recipe needs `{key}:` (e.g. name: demo, out: runs/crossdomain/demo).")
        transfer_raw = dict(raw.get("transfer") or {})
        strategies = [
            _build(StrategySpec, {"name": s} if isinstance(s, str) else s, f"transfer.strategies[{i}]")
            for i, s in enumerate(transfer_raw.pop("strategies", None) or [])
        ]
        transfer = _build(TransferSpec, transfer_raw, "transfer")
        transfer.strategies = strategies
        if not strategies:
            raise RecipeError(
                "transfer.strategies is empty; list e.g. [transfer/scratch, transfer/full, bottleneck/houlsby, lora/peft, side/iisan]."
            )
        labels = [s.display for s in strategies]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise RecipeError(f"strategy labels must be unique, repeated: {dup}; give them `label:`.")
        if not transfer.seeds:
            raise RecipeError("transfer.seeds is empty; give at least one seed, e.g. [0, 1, 2].")
        data = _build(DataSpec, raw.get("data"), "data")
        if not data.sources or not data.target:
            raise RecipeError("data needs `sources:` (a list of domains) and `target:` (one domain).")
        device = str(raw.get("device", "auto"))
        if device != "auto" and device != "cpu" and device != "cuda":
            raise RecipeError(f"device must be auto, cpu or cuda; got {device!r}.")
        threads = raw.get("threads")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise RecipeError(f"threads must be a positive integer or null, got {threads!r}.")
        return cls(
            name=str(raw["name"]),
            out=str(raw["out"]),
            cache=str(raw.get("cache", "cache/crossdomain")),
            device=cast(Literal["auto", "cpu", "cuda"], device),  # checked above
            threads=threads,
            data=data,
            model=_build(ModelSpec, raw.get("model"), "model"),
            pretrain=_build(PretrainSpec, raw.get("pretrain"), "pretrain"),
            transfer=transfer,
            path=path,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping (JSON / YAML friendly)."""
        return dataclasses.asdict(self)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override (value parsed as YAML) to a recipe mapping, in place.

    List items are addressed by index (``data.sources.0.max_users=500``); missing mapping keys are created.

    Example:
        >>> r = {"transfer": {"seeds": [0, 1, 2]}, "data": {"sources": [{"name": "a"}]}}
        >>> apply_override(r, "transfer.seeds=[0]"); apply_override(r, "data.sources.0.max_users=5")
        >>> r["transfer"]["seeds"], r["data"]["sources"][0]["max_users"]
        ([0], 5)
    """
    if "=" not in assignment:
        raise RecipeError(f"override {assignment!r} must look like key.path=value (e.g. transfer.seeds=[0]).")
    path, text = assignment.split("=", 1)
    value = yaml.safe_load(text) if text.strip() else None
    keys = path.strip().split(".")
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            try:
                idx = int(key)
                node[idx]  # IndexError when out of range
            except (ValueError, IndexError):
                raise RecipeError(
                    f"override {path!r}: {'.'.join(keys[:depth]) or 'root'} is a list of {len(node)}; "
                    f"{key!r} is not a valid index."
                ) from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise RecipeError(
                f"override {path!r}: {'.'.join(keys[:depth])} is a value, not a mapping or list."
            )


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML and apply ``key.path=value`` overrides.

    Args:
        path: the YAML file.
        overrides: assignments applied in order (see :func:`apply_override`).

    Returns:
        the checked :class:`Recipe`.
    """
    p = Path(path)
    if not p.is_file():
        raise RecipeError(
            f"recipe {p} does not exist; recipes live in configs/crossdomain/ (demo.yaml, real.yaml)."
        )
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{p} must hold a YAML mapping.")
    for a in overrides:
        apply_override(raw, a)
    return Recipe.from_dict(raw, path=str(p))
