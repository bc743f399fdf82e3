"""Typed, validated index settings read from a YAML file (``mmrec index --config``).

A file holds the settings that :func:`mmrec.retrieval.index.build_index` takes besides the vectors::

    kind: ivf            # auto | flat | hnsw | ivf  (auto: flat up to 100k items, ivf above)
    metric: ip           # ip | cosine (cosine: store indexes only)
    threads: 4           # faiss CPU threads (default: all cores)
    params:              # per-kind parameters (mmrec.retrieval.index.DEFAULT_PARAMS; with kind auto: ivf's,
                         # ignored when the catalogue is small enough for exact search)
      target_recall: 0.95
      nlist: 4096

Every key is optional; unknown keys, values of the wrong type and parameters the kind does not have are
errors that name the key and the valid choices. ``mmrec index`` reads these keys with the rest of its
options (``--config FILE``, dotted overrides such as ``--params.nprobe=32``, merged over ``params``).

Example:
    >>> cfg = IndexConfig.from_mapping({"kind": "ivf", "params": {"target_recall": 0.95}})
    >>> cfg.kind, cfg.params["target_recall"], cfg.metric
    ('ivf', 0.95, 'ip')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmrec.retrieval.index import KINDS, METRICS, ItemIndexError, resolve_params

_KEYS = ("kind", "metric", "threads", "params")


@dataclass(frozen=True)
class IndexConfig:
    """Index settings, checked when constructed.

    Args:
        kind: ``auto`` (exact up to 100k items, ``ivf`` above), ``flat``, ``hnsw`` or ``ivf``.
        metric: ``ip`` (inner product; checkpoints always use it) or ``cosine`` (store indexes only).
        threads: faiss CPU threads (``None``: all cores, or the thread rule of the ``mmrec`` command).
        params: parameters of the kind (:data:`mmrec.retrieval.index.DEFAULT_PARAMS`), e.g. ``nlist``,
            ``nprobe``, ``target_recall`` for ivf; ``M``, ``ef_search`` for hnsw.

    Raises:
        ItemIndexError: bad kind / metric / threads, or parameters the kind does not have.
    """

    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    metric: Literal["ip", "cosine"] = "ip"
    threads: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = "index config"
        if self.kind not in KINDS:
            raise ItemIndexError(f"{source}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if self.metric not in METRICS:
            raise ItemIndexError(
                f"{source}: metric must be one of {', '.join(METRICS)}; got {self.metric!r}."
            )
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ItemIndexError(f"{source}: threads must be a positive integer or absent; got {t!r}.")
        if not isinstance(self.params, Mapping):
            raise ItemIndexError(f"{source}: params must be a mapping of name: value; got {self.params!r}.")
        object.__setattr__(self, "params", dict(self.params))
        check_params(self.kind, self.params, "index params")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "index config") -> IndexConfig:
        """Check and build a config from a parsed mapping.

        Args:
            data: the mapping (e.g. a parsed YAML document).
            source: how errors name it (the file path).

        Raises:
            ItemIndexError: unknown keys, bad kind / metric / threads, or parameters the kind does not have.
        """
        if not isinstance(data, Mapping):
            raise ItemIndexError(
                f"{source} must hold a mapping of {', '.join(_KEYS)}; got {type(data).__name__}."
            )
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ItemIndexError(f"{source}: unknown key(s) {unknown}; valid keys: {', '.join(_KEYS)}.")
        values = {k: data[k] for k in _KEYS if k in data}
        if values.get("params") is None:
            values.pop("params", None)
        try:
            return cls(**values)
        except ItemIndexError as e:
            raise ItemIndexError(
                str(e).replace("index config", source, 1).replace("index params", source, 1)
            ) from None


def check_params(kind: str, params: Mapping[str, Any], source: str = "index config") -> None:
    """Fail early on parameters ``kind`` does not have (for ``auto``: parameters no approximate kind has).

    Raises:
        ItemIndexError: naming ``source`` and the valid parameters.
    """
    if not params:
        return
    if kind == "auto":  # flat or ivf, decided by the catalogue size: only ivf takes parameters
        kind = "ivf"
    try:
        resolve_params(kind, 1_000_000, params)
    except ItemIndexError as e:
        raise ItemIndexError(f"{source}: {e}") from None


def load_index_config(path: str | os.PathLike[str]) -> IndexConfig:
    """Read and check an index config file (YAML).

    Raises:
        ItemIndexError: missing / unreadable file or invalid content (the message names the file).

    Example:
        >>> load_index_config("configs/index/fast.yaml").params  # doctest: +SKIP
        {'target_recall': 0.95}
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ItemIndexError(f"index config {p} does not exist; see configs/index/ for examples.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ItemIndexError(f"index config {p} is not valid YAML: {e}") from None
    return IndexConfig.from_mapping(data or {}, source=str(p))


__all__ = ["IndexConfig", "check_params", "load_index_config"]
