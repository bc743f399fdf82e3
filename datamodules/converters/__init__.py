"""Dataset converters: raw public formats -> the canonical dataset format (DESIGN §3).

One registry, :data:`CONVERTERS`, keyed ``family/name`` (``amazon/2014``, ``sequence/s3rec``,
``movielens/100k``, ``mmrec/inter``, ``recbole/atomic``...), one module per family that registers its
converters itself (the registry imports this package's modules on its first lookup), and one entry point,
:func:`prepare_dataset`, which reads the raw files, validates the tables and writes the dataset
atomically (a failed conversion leaves nothing behind; an existing dataset is replaced only with
``overwrite=True``). ``mmrec data prepare <format> ...`` is the command-line face of the same function.

A converter is a function ``(ctx: ConvertContext, <raw files>, <options>) -> Converted`` registered with
``description`` (one line, shown by ``--help``), ``aliases`` and ``example`` metadata; its signature and
docstring generate its command-line arguments.

Example:
    >>> from mmrec.datamodules.converters import CONVERTERS, resolve_format
    >>> "amazon/2014" in CONVERTERS, resolve_format("s3rec")
    (True, 'sequence/s3rec')
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data.canonical import CanonicalDataset, DatasetError, write_dataset
from mmrec.datamodules.converters.common import ConvertContext, Converted, StoreImport
from mmrec.registry import Registry
from mmrec.store import file_sha256, store_fingerprint, write_store

CONVERTERS: Registry[Converted] = Registry(
    "dataset converter", packages=("mmrec.datamodules.converters",), entry_point_group="mmrec.converters"
)
"""``family/name`` -> converter function ``(ctx, **format_args) -> Converted``."""

__all__ = [
    "CONVERTERS",
    "ConvertContext",
    "Converted",
    "StoreImport",
    "convert",
    "format_aliases",
    "prepare_dataset",
    "resolve_format",
]


def format_aliases() -> dict[str, str]:
    """Friendly alias -> registry key (``amazon2014`` -> ``amazon/2014``), from the registry metadata.

    Example:
        >>> format_aliases()["ml-100k"]
        'movielens/100k'
    """
    out: dict[str, str] = {}
    for key in CONVERTERS:
        for alias in CONVERTERS.meta(key).get("aliases", ()):
            out[str(alias)] = key
    return out


def resolve_format(name: str) -> str:
    """The registry key for a format key or alias.

    Args:
        name: ``family/name`` or an alias such as ``amazon2014``, ``s3rec``, ``movielens``.

    Raises:
        DatasetError: unknown format, with close matches and the list of formats.

    Example:
        >>> resolve_format("amazon2018")
        'amazon/2018'
    """
    if name in CONVERTERS:
        return name
    aliases = format_aliases()
    if name in aliases:
        return aliases[name]
    known = [*CONVERTERS, *aliases]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise DatasetError(
        f"unknown dataset format {name!r}.{hint} Formats: {', '.join(CONVERTERS)} (see `mmrec data prepare --help`)."
    )


def _check_args(key: str, format_args: dict[str, Any]) -> None:
    params = list(inspect.signature(CONVERTERS.get(key)).parameters.values())[1:]  # drop ctx
    names = [p.name for p in params]
    unknown = [a for a in format_args if a not in names]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in format_args]
    if unknown or missing:
        what = []
        if unknown:
            what.append(f"unknown argument(s) {unknown}")
        if missing:
            what.append(f"missing required argument(s) {missing}")
        raise TypeError(f"{key}: {' and '.join(what)}; its arguments are {names}.")


def convert(
    format_key: str, *, skip_bad: bool = False, **format_args: Any
) -> tuple[Converted, ConvertContext]:
    """Read raw files into canonical tables without writing anything (what ``prepare_dataset`` writes).

    Args:
        format_key: registry key or alias.
        skip_bad: skip and count malformed lines instead of raising.
        **format_args: the converter's arguments (raw file paths and options).

    Returns:
        The converted tables and the context holding the report of skipped lines.

    Example:
        >>> conv, ctx = convert("movielens/100k", root="raw/ml-100k")  # doctest: +SKIP
        >>> len(conv.interactions)  # doctest: +SKIP
        100000
    """
    key = resolve_format(format_key)
    _check_args(key, format_args)
    ctx = ConvertContext(skip_bad=skip_bad)
    return CONVERTERS.get(key)(ctx, **format_args), ctx


def _write_stores(staging: Path, conv: Converted) -> dict[str, Any]:
    """Import each matrix of ``conv.stores`` into ``staging/<name>``; returns the ``stores`` meta entry."""
    item_ids = conv.items["item_id"].astype(str).tolist()
    inputs = hashlib.sha256("\n".join(item_ids).encode()).hexdigest()
    meta: dict[str, Any] = {}
    for spec in conv.stores:
        vectors = np.load(spec.npy, allow_pickle=False)
        weights = f"sha256:{file_sha256(spec.npy)}"
        dtype = "float16" if vectors.dtype == np.float16 else "float32"
        fp = store_fingerprint(
            encoder="import/npy", weights=weights, dtype=dtype, inputs=f"item-ids:{inputs}"
        )
        store = write_store(
            staging / spec.name,
            item_ids,
            vectors,
            encoder="import/npy",
            weights=weights,
            dtype=dtype,
            fingerprint=fp,
            source=str(spec.npy),
            source_dtype=str(vectors.dtype),
        )
        meta[spec.name] = {
            "path": f"stores/{spec.name}",
            "dim": store.dim,
            "count": store.num_items,
            "valid": int(store.mask.sum()),
            "weights": weights,
            "source": str(spec.npy),
        }
    return meta


def prepare_dataset(
    format_key: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    skip_bad: bool = False,
    name: str | None = None,
    **format_args: Any,
) -> CanonicalDataset:
    """Convert raw files of a known format into a canonical dataset folder.

    Reading, validation (unknown items, duplicates, empty tables: see
    :func:`~mmrec.data.canonical.validate_tables`) and writing happen before anything appears at
    ``out``: the folder is renamed into place complete, or not at all. Feature matrices of the format
    (MMRec ``features_npy/``) are imported as embedding stores under ``out/stores/<name>/`` in the same
    atomic step.

    Args:
        format_key: registry key (``amazon/2014``...) or alias (``amazon2014``, ``s3rec``, ``movielens``).
        out: the dataset folder to create.
        overwrite: replace an existing dataset at ``out``.
        skip_bad: skip malformed lines, unknown-item interactions and duplicates, counting them in
            ``dataset.json``'s ``conversion_report``, instead of raising.
        name: dataset name in ``dataset.json`` (default: the folder name).
        **format_args: the converter's arguments, e.g. ``reviews=...``, ``meta=...``
            (``mmrec data prepare <format> --help`` lists them).

    Returns:
        The written dataset, loaded.

    Raises:
        DatasetError: malformed input (file and line named), invalid tables, or ``out`` already exists.

    Example:
        >>> ds = prepare_dataset("amazon/2014", "data/mi", reviews="reviews_Musical_Instruments_5.json.gz")  # doctest: +SKIP
        >>> ds.counts  # doctest: +SKIP
        {'users': 1429, 'items': 900, 'interactions': 10261}
    """
    key = resolve_format(format_key)
    out_path = Path(out).expanduser().resolve()
    if out_path.exists() and not overwrite:
        raise DatasetError(
            f"{out_path} already exists; pass --overwrite (overwrite=True) to replace it (nothing was written)."
        )
    conv, ctx = convert(key, skip_bad=skip_bad, **format_args)
    if len(conv.interactions) == 0:
        skipped = f" ({ctx.report.summary()})" if ctx.report.total_skipped else ""
        raise DatasetError(
            f"no interactions were read from {', '.join(conv.source_files)}{skipped}; the dataset would be "
            "empty. Check that these are the right files for the format."
        )
    extra = dict(conv.extra_meta)
    staging: Path | None = None
    media_dirs: list[str] = []
    try:
        if conv.stores:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            staging = out_path.parent / f".{out_path.name}.stores-{uuid.uuid4().hex[:8]}"
            extra["stores"] = _write_stores(staging / "stores", conv)
            media_dirs.append(str(staging / "stores"))
        return write_dataset(
            out_path,
            conv.items,
            conv.interactions,
            name=name or out_path.name,
            source_format=key,
            source_files=conv.source_files,
            overwrite=overwrite,
            skip_bad=skip_bad,
            report=ctx.report,
            extra_meta=extra,
            media_dirs=media_dirs,
        )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
