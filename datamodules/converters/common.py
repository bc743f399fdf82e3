"""Shared helpers for dataset converters: line-numbered reading, malformed-line handling, text cleaning.

Every converter reads its raw files through a :class:`ConvertContext`, which

- opens plain or gzip-compressed text (detected from the file's first bytes, not its name),
- yields ``(line_number, text)`` pairs with 1-based line numbers, decoding each line on its own so that
  a line in the wrong encoding is reported with its number instead of failing the whole file,
- turns a :class:`Malformed` raised by a parser into a :class:`DatasetError` that names the file, the
  line and what was wrong, or, with ``skip_bad=True``, counts the line in the
  :class:`ConversionReport` that ends up in ``dataset.json``.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.txt"
    >>> _ = p.write_text("a 1\\nb two\\n")
    >>> ctx = ConvertContext(skip_bad=True)
    >>> def parse(line: str) -> tuple[str, int]:
    ...     user, n = line.split()
    ...     return user, parse_int(n, "count")
    >>> [rec for _, rec in ctx.records(p, parse)]
    [('a', 1)]
    >>> ctx.report.skipped
    {'malformed lines in pairs.txt': 1}
"""

from __future__ import annotations

import gzip
import html
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd

from mmrec.data.canonical import ConversionReport, DatasetError

T = TypeVar("T")

ItemsPolicy = Literal["all", "interacted"]
"""Which items a converter keeps: every item of the item table (``all``) or only the interacted ones."""

_GZIP_MAGIC = b"\x1f\x8b"
_SNIPPET = 120


class Malformed(ValueError):
    """Raised by a line parser when a line does not have the expected format (message says why)."""


@dataclass
class StoreImport:
    """An embedding matrix to import into the dataset folder as an embedding store.

    Attributes:
        name: store folder name, written at ``<dataset>/stores/<name>/``.
        npy: path of the ``.npy`` file, ``(num_items, dim)``, row k = the k-th item of the items table.
    """

    name: str
    npy: Path


@dataclass
class Converted:
    """What a converter read: canonical tables plus provenance, ready for ``write_dataset``.

    Attributes:
        items: item table (``item_id`` plus canonical and extra columns), in the dataset's item order.
        interactions: ``user_id``, ``item_id``, ``timestamp`` and optional columns.
        source_files: the raw files read, recorded in ``dataset.json``.
        extra_meta: more keys for ``dataset.json`` (e.g. ``{"timestamps": "sequence-order"}``).
        stores: embedding matrices to import into ``<dataset>/stores/`` once the tables are validated.
    """

    items: pd.DataFrame
    interactions: pd.DataFrame
    source_files: list[str] = field(default_factory=list)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    stores: list[StoreImport] = field(default_factory=list)


@dataclass
class ConvertContext:
    """Per-conversion state shared by the reading helpers.

    Attributes:
        skip_bad: skip (and count) malformed lines instead of raising.
        report: where skipped lines are counted; stored in ``dataset.json``.
    """

    skip_bad: bool = False
    report: ConversionReport = field(default_factory=ConversionReport)

    def bad(self, path: Path, lineno: int, reason: str, line: str | None = None) -> None:
        """Handle one malformed line: raise, or count it when ``skip_bad``.

        Args:
            path: the file the line comes from.
            lineno: 1-based line number.
            reason: what was wrong with it.
            line: the line's text, quoted (shortened) in the message.

        Raises:
            DatasetError: unless ``skip_bad``; names the file, the line number and the reason.
        """
        where = f"{path.name}:{lineno}"
        if self.skip_bad:
            self.report.add(f"malformed lines in {path.name}", f"{where}: {reason}")
            return
        quoted = f" (line: {_snippet(line)})" if line is not None else ""
        raise DatasetError(
            f"{path}:{lineno}: {reason}{quoted}. Fix or remove this line, or pass --skip_bad "
            "(skip_bad=True) to skip malformed lines; they are counted in dataset.json."
        )

    def lines(
        self, path: Path, *, encoding: str = "utf-8", skip_blank: bool = True
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(line_number, text)`` for each line of a plain or gzip text file.

        Line endings are removed; line numbers are 1-based and count every physical line (blank ones
        too). A line that cannot be decoded in ``encoding`` goes through :meth:`bad`.

        Args:
            path: the file; gzip compression is detected from its first bytes.
            encoding: text encoding (``utf-8``; MovieLens uses ``latin-1``).
            skip_blank: silently skip lines holding only whitespace.
        """
        path = require_file(path)
        with open(path, "rb") as probe:
            gz = probe.read(2) == _GZIP_MAGIC
        lineno = 0
        try:
            with gzip.open(path, "rb") if gz else open(path, "rb") as f:
                for raw in f:
                    lineno += 1
                    try:
                        text = raw.decode(encoding)
                    except UnicodeDecodeError as e:
                        self.bad(path, lineno, f"not valid {encoding} text ({e.reason} at byte {e.start})")
                        continue
                    if lineno == 1:
                        text = text.lstrip("\ufeff")
                    text = text.rstrip("\r\n")
                    if skip_blank and not text.strip():
                        continue
                    yield lineno, text
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise DatasetError(
                f"{path}: the gzip stream is truncated or corrupt after line {lineno} ({e}). "
                "Download or decompress the file again."
            ) from e

    def records(
        self, path: Path, parse: Callable[[str], T], *, encoding: str = "utf-8", start: int = 1
    ) -> Iterator[tuple[int, T]]:
        """Parse each line with ``parse``; lines raising :class:`Malformed` go through :meth:`bad`.

        Args:
            path: the file.
            parse: line text -> record; raises :class:`Malformed` (message = what is wrong).
            encoding: text encoding.
            start: first line number to parse (2 skips a header line already read).
        """
        for lineno, text in self.lines(path, encoding=encoding):
            if lineno < start:
                continue
            try:
                rec = parse(text)
            except Malformed as e:
                self.bad(path, lineno, str(e), text)
                continue
            yield lineno, rec

    def header(self, path: Path, *, encoding: str = "utf-8", sep: str = "\t") -> list[str]:
        """The fields of the first non-blank line (a header; an empty file raises).

        Args:
            path: the file.
            encoding: text encoding.
            sep: field separator.

        Raises:
            DatasetError: when the file has no non-blank line.
        """
        for _, text in self.lines(path, encoding=encoding):
            return [f.strip() for f in text.split(sep)]
        raise DatasetError(f"{path} is empty; expected a header line. Check the file.")


def require_file(path: str | os.PathLike[str], what: str = "input file") -> Path:
    """``path`` as a :class:`Path`, checked to be an existing file.

    Args:
        path: the path given by the user.
        what: what the file is, for the error message (``"reviews file"``).

    Raises:
        DatasetError: when the file does not exist or is a folder.

    Example:
        >>> require_file("/no/such/file.json", "reviews file")
        Traceback (most recent call last):
        ...
        mmrec.data.canonical.DatasetError: reviews file /no/such/file.json does not exist; check the path.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise DatasetError(f"{what} {p} is a folder; pass the file itself.")
    if not p.is_file():
        raise DatasetError(f"{what} {p} does not exist; check the path.")
    return p


def require_dir(path: str | os.PathLike[str], what: str, expect: Sequence[str] = ()) -> Path:
    """``path`` as a :class:`Path`, checked to be a folder holding the files named in ``expect``.

    Args:
        path: the folder given by the user.
        what: what the folder is, for the error message.
        expect: file names that must exist inside it.

    Raises:
        DatasetError: when the folder or one of the expected files is missing.

    Example:
        >>> require_dir("/no/such/dir", "MovieLens folder")
        Traceback (most recent call last):
        ...
        mmrec.data.canonical.DatasetError: MovieLens folder /no/such/dir does not exist; check the path.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        if p.is_file():
            raise DatasetError(
                f"{what} {p} is a file; pass the folder that holds {', '.join(expect) or 'it'}."
            )
        raise DatasetError(f"{what} {p} does not exist; check the path.")
    missing = [name for name in expect if not (p / name).is_file()]
    if missing:
        raise DatasetError(f"{what} {p} lacks {', '.join(missing)}; is this the right folder?")
    return p


def clean_text(value: Any, *, unescape: bool = False) -> str | None:
    """A text cell: surrounding whitespace removed, HTML entities decoded, ``None`` when empty.

    Args:
        value: the raw value (``None``, a string, or anything ``str()`` can print).
        unescape: decode HTML entities (``&amp;`` -> ``&``) as scraped Amazon text needs.

    Example:
        >>> clean_text("  Strap 2&quot; ", unescape=True), clean_text("   "), clean_text(None)
        ('Strap 2"', None, None)
    """
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    if unescape:
        s = html.unescape(s)
    s = s.strip()
    return s or None


def parse_int(value: Any, what: str) -> int:
    """``value`` as an int (accepts ``"12"``, ``12``, ``"12.0"``); raises :class:`Malformed` otherwise.

    Args:
        value: raw value.
        what: field name for the message.

    Example:
        >>> parse_int("1393545600", "unixReviewTime")
        1393545600
    """
    if isinstance(value, bool):
        raise Malformed(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        pass
    try:
        f = float(str(value).strip())
    except (TypeError, ValueError):
        raise Malformed(f"{what} must be an integer, got {_snippet(value)}") from None
    if not f.is_integer():
        raise Malformed(f"{what} must be an integer, got {_snippet(value)}")
    return int(f)


def parse_float(value: Any, what: str) -> float:
    """``value`` as a finite float (accepts numbers and numeric strings); raises :class:`Malformed`.

    Args:
        value: raw value.
        what: field name for the message.

    Example:
        >>> parse_float("4.0", "overall")
        4.0
    """
    if isinstance(value, bool):
        raise Malformed(f"{what} must be a number, got {value!r}")
    try:
        f = float(value if isinstance(value, (int, float)) else str(value).strip())
    except (TypeError, ValueError):
        raise Malformed(f"{what} must be a number, got {_snippet(value)}") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise Malformed(f"{what} must be a finite number, got {_snippet(value)}")
    return f


def unique_list(values: Any) -> list[str]:
    """Flatten nested lists of strings into a list of unique, non-empty strings (first occurrence order).

    Example:
        >>> unique_list([["Beauty", "Skin Care"], ["Beauty", " Face "], []])
        ['Beauty', 'Skin Care', 'Face']
    """
    out: list[str] = []
    seen: set[str] = set()

    def walk(v: Any) -> None:
        if v is None:
            return
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
            return
        s = clean_text(v, unescape=True)
        if s is not None and s not in seen:
            seen.add(s)
            out.append(s)

    walk(values)
    return out


def restrict_items(items: pd.DataFrame, interactions: pd.DataFrame, policy: ItemsPolicy) -> pd.DataFrame:
    """Apply an items policy: keep every catalogue item (``all``) or only interacted ones.

    Args:
        items: the item table.
        interactions: the interactions (their ``item_id`` column decides what ``interacted`` keeps).
        policy: ``"all"`` or ``"interacted"``.

    Raises:
        DatasetError: for an unknown policy.

    Example:
        >>> items = pd.DataFrame({"item_id": ["a", "b"]})
        >>> restrict_items(items, pd.DataFrame({"item_id": ["b"]}), "interacted")["item_id"].tolist()
        ['b']
    """
    if policy == "all":
        return items
    if policy == "interacted":
        used = set(interactions["item_id"].astype(str))
        return items.loc[items["item_id"].astype(str).isin(used)].reset_index(drop=True)
    raise DatasetError(f"items must be 'all' or 'interacted', got {policy!r}.")


def sorted_ids(ids: Sequence[str]) -> list[str]:
    """Unique ids, in numeric order when all are integers, else in order of first appearance.

    Example:
        >>> sorted_ids(["10", "2", "2", "1"]), sorted_ids(["b", "a", "b"])
        (['1', '2', '10'], ['b', 'a'])
    """
    uniq = list(dict.fromkeys(ids))
    if all(s.isdigit() for s in uniq):
        return sorted(uniq, key=int)
    return uniq


def _snippet(value: Any) -> str:
    s = value if isinstance(value, str) else str(value)
    if len(s) > _SNIPPET:
        s = s[:_SNIPPET] + "..."
    return repr(s)
