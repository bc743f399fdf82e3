"""Items of a canonical dataset folder, random access in ``items.parquet`` order.

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> from mmrec.data.canonical import write_dataset
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ds = write_dataset(d / "ds", pd.DataFrame({"item_id": ["a", "b"], "title": ["Red", None]}),
    ...                    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}),
    ...                    name="toy", source_format="python")
    >>> src = DatasetSource(ds.path)
    >>> src.item_ids, src.load(0, ["title"], "text")
    (['a', 'b'], ('Red', 'items.parquet[a].title'))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrec.data.canonical import CanonicalDataset, DatasetError, read_meta
from mmrec.embedding.sources.base import MissingValue, is_null, join_text
from mmrec.encoders.media import MediaError, decode


class DatasetSource:
    """Items of a canonical dataset, in ``items.parquet`` order.

    Only ``dataset.json`` is read on construction; the item table is loaded on first use.

    Args:
        path: the dataset folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.meta = read_meta(self.path)
        self._ds: CanonicalDataset | None = None

    @property
    def dataset(self) -> CanonicalDataset:
        if self._ds is None:
            self._ds = CanonicalDataset.load(self.path)
        return self._ds

    @property
    def item_ids(self) -> list[str]:
        return self.dataset.item_ids

    def media_path(self, value: Any) -> str | None:
        """The local file a media cell names, or ``None`` for a null cell, a URL or an unsafe path."""
        if is_null(value) or "://" in str(value):
            return None
        try:
            return self.dataset.resolve_media(str(value))
        except DatasetError:
            return None

    def input_fingerprint(self, hashes: Any, columns: Sequence[str] = (), modality: str = "text") -> str:
        """``dataset:<content fingerprint from dataset.json>``, plus for a media column the sha256 of every
        file it names (``|media-sha256:<digest over the items' file hashes, in order>``).

        File hashes come from ``hashes`` (a :class:`~mmrec.embedding.fingerprint.FileHashCache`), so each
        file is read once and again only when it changed. A fresh copy of the same files gives the same
        fingerprint; a file replaced under the same path gives a new one.
        """
        fp = self.meta.get("fingerprint")
        if not fp:
            raise DatasetError(
                f"{self.path}/dataset.json has no fingerprint; rewrite the dataset with mmrec."
            )
        if modality == "text" or not columns:
            return f"dataset:{fp}"
        paths = [self.media_path(v) for v in self.dataset.items[columns[0]].tolist()]
        readable = sorted({p for p in paths if p is not None and os.path.isfile(p)})
        digests = dict(zip(readable, hashes.sha256_many(readable, what=f"{columns[0]} files")))
        h = hashlib.sha256()
        for p in paths:
            h.update((digests.get(p, "missing") if p is not None else "-").encode() + b"\n")
        return f"dataset:{fp}|media-sha256:{h.hexdigest()[:16]}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "path": str(self.path),
            "name": self.meta.get("name"),
            "fingerprint": self.meta.get("fingerprint"),
        }

    def check_columns(self, columns: Sequence[str], modality: str) -> None:
        """Raise a :class:`DatasetError` naming the available columns when one is absent."""
        have = list(self.dataset.items.columns)
        missing = [c for c in columns if c not in have]
        if missing:
            raise DatasetError(
                f"dataset {self.path} has no item column(s) {missing}; its columns are {have}. "
                "Fix `column:` in the recipe."
            )

    def where(self, index: int, columns: Sequence[str], modality: str) -> str:
        """Where item ``index``'s input lives (for failure reports)."""
        items = self.dataset.items
        if modality == "text":
            return f"items.parquet[{items['item_id'].iat[index]}].{'+'.join(columns)}"
        value = items[columns[0]].iat[index]
        try:
            return str(self.dataset.resolve_media(str(value)))
        except Exception:
            return str(value)

    def load(self, index: int, columns: Sequence[str], modality: str, **decode_args: Any) -> tuple[Any, str]:
        """Raw item ``index`` and a description of where it came from.

        Raises:
            MissingValue: null media cell.
            MediaError: missing / corrupt media, empty text.
        """
        items = self.dataset.items
        key = str(items["item_id"].iat[index])
        if modality == "text":
            origin = f"items.parquet[{key}].{'+'.join(columns)}"
            return join_text([items[c].iat[index] for c in columns]), origin
        value = items[columns[0]].iat[index]
        if is_null(value):
            raise MissingValue()
        try:
            path = self.dataset.resolve_media(str(value))
        except DatasetError as e:
            raise MediaError("bad source", str(e)) from e
        assert path is not None
        if "://" in path:
            raise MediaError(
                "remote media", f"{path} is a URL; download the media and store local paths first"
            )
        return decode(modality, path, **decode_args), path
