"""Kinds of item index, their parameters and defaults (no faiss needed: configs import this)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf")


METRICS: tuple[str, ...] = ("ip", "cosine")


#: ``kind="auto"`` uses exact search up to this many items, ``ivf`` above.
AUTO_FLAT_MAX_ITEMS = 100_000


Kind = Literal["auto", "flat", "hnsw", "ivf"]


Metric = Literal["ip", "cosine"]


# Parameters per kind, with their defaults (None = derived from the catalogue size at build time).
# Build parameters fix the index; search parameters (nprobe, ef_search, rerank_factor) can be changed
# after loading (ItemIndex.load(..., params=...) or ItemIndex.set_search_params).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {
        "nlist": None,
        "nprobe": None,
        "encoding": "pq4fs",
        "pq_m": None,
        "train_size": None,
        "rerank_factor": None,
        "seed": 0,
        "target_recall": 0.97,
    },
    "hnsw": {
        "M": 32,
        "ef_construction": 80,
        "ef_search": None,
        "rerank_factor": 2,
        "seed": 0,
        "target_recall": 0.97,
    },
}


SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "ivf": ("nprobe", "rerank_factor"),
    "hnsw": ("ef_search", "rerank_factor"),
}


IVF_ENCODINGS = {"pq4fs": None, "flat": None, "sq8": "QT_8bit", "sq4": "QT_4bit", "fp16": "QT_fp16"}


#: Candidates re-scored exactly per result (``rerank_factor``) when not given: 4-bit PQ codes only rank
#: coarsely, so they shortlist more; scalar / exact codes rank almost exactly.
DEFAULT_RERANK = {"pq4fs": 8.0}


#: Most sub-quantisers of a ``pq4fs`` code (one per dimension up to this; beyond, several dimensions each).
PQ_MAX_SUBQUANTIZERS = 128


class ItemIndexError(ValueError):
    """Raised when an index cannot be built, loaded or queried as asked (the message says how to fix it)."""


# --------------------------------------------------------------------------------------------- helpers
def choose_kind(num_items: int, kind: str = "auto") -> str:
    """Resolve ``kind="auto"`` from the catalogue size: ``flat`` up to 100k items, ``ivf`` above.

    Example:
        >>> choose_kind(50_000), choose_kind(1_000_000), choose_kind(10, "hnsw")
        ('flat', 'ivf', 'hnsw')
    """
    if kind not in KINDS:
        raise ItemIndexError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if kind != "auto":
        return kind
    return "flat" if num_items <= AUTO_FLAT_MAX_ITEMS else "ivf"


def default_nlist(num_items: int) -> int:
    """IVF cells: the power of two nearest ``2 * sqrt(N)``, at most ``N / 39`` (faiss wants >= 39 training
    points per cell) and at least 1. 1M items -> 2048, 100k -> 512, 20k -> 256.
    """
    target = 2.0 * math.sqrt(max(1, num_items))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and nlist * 39 > num_items:
        nlist //= 2
    return max(1, nlist)


def default_pq_m(dim: int) -> int:
    """Sub-quantisers of a ``pq4fs`` code: the largest divisor of ``dim`` up to 128 (64-d -> 64, 384 -> 128,
    768 -> 128, 100 -> 100).

    Example:
        >>> default_pq_m(64), default_pq_m(384), default_pq_m(257)
        (64, 128, 1)
    """
    return max(m for m in range(1, min(dim, PQ_MAX_SUBQUANTIZERS) + 1) if dim % m == 0)


def resolve_params(kind: str, num_items: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``kind`` overridden by ``params``, with derived values filled in and every value checked.

    Raises:
        ItemIndexError: unknown parameter names (listing the valid ones) or invalid values.

    Example:
        >>> resolve_params("ivf", 1_000_000)["nlist"], resolve_params("ivf", 1_000_000, {"nprobe": 64})["nprobe"]
        (2048, 64)
        >>> resolve_params("ivf", 1_000_000)["nprobe"] is None  # calibrated at build time
        True
    """
    if kind not in DEFAULT_PARAMS:
        raise ItemIndexError(f"kind must be one of flat, hnsw, ivf here; got {kind!r}.")
    out = dict(DEFAULT_PARAMS[kind])
    unknown = sorted(set(params or {}) - set(out))
    if unknown:
        valid = ", ".join(sorted(out)) or "none"
        raise ItemIndexError(f"unknown parameter(s) {unknown} for kind {kind!r}; valid parameters: {valid}.")
    out.update(dict(params or {}))
    if kind == "ivf":
        out["nlist"] = int(out["nlist"] or default_nlist(num_items))
        if out["nlist"] < 1 or out["nlist"] > num_items:
            raise ItemIndexError(f"nlist must be in [1, number of items = {num_items}]; got {out['nlist']}.")
        if out["nprobe"] is not None:
            out["nprobe"] = min(int(out["nprobe"]), out["nlist"])
            if out["nprobe"] < 1:
                raise ItemIndexError(f"nprobe must be >= 1; got {out['nprobe']}.")
        if out["encoding"] not in IVF_ENCODINGS:
            raise ItemIndexError(f"encoding must be one of {sorted(IVF_ENCODINGS)}; got {out['encoding']!r}.")
        if out["pq_m"] is not None:
            out["pq_m"] = int(out["pq_m"])
            if out["pq_m"] < 1:
                raise ItemIndexError(f"pq_m must be >= 1 (and divide the dimension); got {out['pq_m']}.")
        out["train_size"] = int(out["train_size"] or min(num_items, max(64 * out["nlist"], 10_000)))
        out["train_size"] = min(max(out["train_size"], out["nlist"]), num_items)
    if kind == "hnsw":
        for name in ("M", "ef_construction", "ef_search"):
            if out[name] is None:
                continue
            out[name] = int(out[name])
            if out[name] < 2:
                raise ItemIndexError(f"{name} must be >= 2; got {out[name]}.")
    if kind != "flat":
        out["seed"] = int(out["seed"])
        out["target_recall"] = float(out["target_recall"])
        if not 0 < out["target_recall"] <= 1:
            raise ItemIndexError(f"target_recall must be in (0, 1]; got {out['target_recall']}.")
    if "rerank_factor" in out:
        if out["rerank_factor"] is None:
            out["rerank_factor"] = DEFAULT_RERANK.get(out.get("encoding") or "", 2.0)
        out["rerank_factor"] = float(out["rerank_factor"])
        if out["rerank_factor"] < 1:
            raise ItemIndexError(
                f"rerank_factor must be >= 1 (candidates = k * rerank_factor); got {out['rerank_factor']}."
            )
    return out


def faiss_description(kind: str, p: Mapping[str, Any]) -> str:
    """A faiss ``index_factory``-style name of the index, recorded in the manifest (e.g. ``IVF2048,PQ64x4fs``)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{p['M']},Flat"
    if p["encoding"] == "pq4fs":
        return f"IVF{p['nlist']},PQ{p['pq_m']}x4fs"
    return f"IVF{p['nlist']},{'Flat' if p['encoding'] == 'flat' else p['encoding'].upper()}"
