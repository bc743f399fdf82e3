"""RecBole's benchmark layout: a pre-split dataset as ``<dataset>.{train,valid,test}.inter`` prefix files.

The layout, as RecBole reads it and UniSRec (RUCAIBox) writes its downstream datasets:

- RecBole (github.com/RUCAIBox/RecBole), ``recbole/data/dataset/dataset.py`` (``Dataset._load_inter_feat``): with the config key
  ``benchmark_filename: [train, valid, test]`` it loads ``<dataset>.<suffix>.inter`` for each suffix, in
  that order, and the file boundaries are the split (no filtering or re-splitting).
  ``recbole/data/dataset/sequential_dataset.py`` (``SequentialDataset._benchmark_presets``): rows are used
  as they are, without augmentation; ``<field><LIST_SUFFIX>`` (``item_id_list``, ``LIST_SUFFIX`` = ``_list``)
  is the history of the ``item_id`` target. Config docs: https://recbole.io/docs/user_guide/config/data_settings.html
- UniSRec (github.com/RUCAIBox/UniSRec), ``dataset/preprocessing/process_amazon.py`` (``convert_to_atomic_files``, ``write_text_file``,
  ``write_remap_index``) and ``props/finetune.yaml`` (``benchmark_filename: [train, valid, test]``,
  ``load_col: inter: [user_id, item_id_list, item_id]``):

  - each ``.inter`` file starts with ``user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token``; a row
    is a user, the items before the target (space-separated, the last 50 only) and the target;
  - leave-one-out: for a user with items ``i0 .. in`` the train file has one row per training target
    ``i1 .. i(n-2)`` (written last target first, so the file runs backwards in time; ``i0`` is never a
    target), the valid file one row (history ``i0 .. i(n-2)``, target ``i(n-1)``), the test file one row
    (history ``i0 .. i(n-1)``, target ``in``);
  - user and item tokens in the ``.inter`` files are 0-based indices; ``<dataset>.user2index`` and
    ``<dataset>.item2index`` map the original ids to them (``original<TAB>index``, no header);
  - ``<dataset>.text`` holds the item text keyed by the *original* item id:
    ``item_id:token<TAB>text:token_seq`` (title, categories and brand joined, as UniSRec encodes them).

What the converter writes: each user's sequence rebuilt from the prefixes and targets of all three files
and checked to be one consistent history (every row's prefix is the user's items before its target,
truncated to the longest prefix of that file; train targets come before the valid target, which comes
before the test target; the test history is the valid history plus the valid target). Timestamps are the
positions in that sequence (``"timestamps": "sequence-order"``), so time never runs backwards, and the
``split`` column is 0 for the training items (including the first item, which is only ever history), 1
for the valid target and 2 for the test target. ``SequentialDataModule(split="given")`` then splits each
user exactly as RecBole does: training sequence = the train items in order (its next-item targets are the
train file's targets, every prefix), valid = (train items, valid target), test = (train + valid items, test
target). (Whether a model is trained on every prefix of a long training sequence is the training loader's
business: ``TrainSequences`` keeps the last ``max_len + 1`` items, issue 10.)

With ``item2index`` / ``user2index`` present the canonical ids are the original ids (ASINs...), items are
in index order (row k of UniSRec's ``.feat1CLS`` matrices = item k) and the index is kept as
``recbole_item_index``; titles come from ``.text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.data.canonical import DatasetError
from mmrec.datamodules.converters import CONVERTERS
from mmrec.datamodules.converters.common import (
    ConvertContext,
    Converted,
    ItemsPolicy,
    Malformed,
    clean_text,
    parse_int,
    restrict_items,
    sorted_ids,
)
from mmrec.datamodules.converters.recbole import typed_header

SPLIT_NAMES = ("train", "valid", "test")
"""Split codes 0, 1, 2 in the order of RecBole's ``benchmark_filename``."""


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of a benchmark ``.inter`` file.

    Attributes:
        split: 0 train, 1 valid, 2 test (which file it comes from).
        lineno: 1-based line number in that file.
        prefix: the items before the target (``item_id_list``), oldest first.
        target: the target item (``item_id``).
    """

    split: int
    lineno: int
    prefix: tuple[str, ...]
    target: str


class InconsistentRows(ValueError):
    """The rows of one user do not form one chronological sequence; ``row`` is the one that breaks it."""

    def __init__(self, row: BenchmarkRow, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


def _tail(items: Sequence[str], n: int = 5) -> str:
    shown = [repr(i) for i in items[-n:]]
    return "[" + ("..., " if len(items) > n else "") + ", ".join(shown) + "]"


def rebuild_sequence(
    rows: Sequence[BenchmarkRow], max_prefix: Sequence[int], list_field: str = "item_id_list"
) -> tuple[list[str], list[int]]:
    """One user's chronological item sequence and split codes from their benchmark rows.

    The sequence starts with the prefix of the user's earliest row (at most one item: the first item,
    which RecBole never has as a target) and grows one target at a time: the next row of the current split
    is the one whose prefix is the last ``max_prefix[split]`` items of the sequence so far. Splits follow
    each other (train, valid, test), so a row that does not continue the sequence is refused.

    Args:
        rows: the user's rows from the three files (any order).
        max_prefix: per split, the longest prefix in its file (RecBole files truncate prefixes to a fixed
            length, 50 in UniSRec's; a shorter prefix is never truncated).
        list_field: the prefix field's name, for messages.

    Returns:
        ``(items, codes)``: items oldest first and their split codes (0 train / history, 1 valid, 2 test).

    Raises:
        InconsistentRows: the row that breaks the sequence and why: a prefix that is not the user's items
            before it, several valid (test) rows, more than one leading history item, or two rows with the
            same prefix and different targets (order ambiguous).

    Example:
        >>> rows = [BenchmarkRow(0, 2, ("a", "b"), "c"), BenchmarkRow(0, 3, ("a",), "b"),
        ...         BenchmarkRow(1, 2, ("a", "b", "c"), "d"), BenchmarkRow(2, 2, ("a", "b", "c", "d"), "e")]
        >>> rebuild_sequence(rows, max_prefix=(2, 3, 4))
        (['a', 'b', 'c', 'd', 'e'], [0, 0, 0, 1, 2])
    """
    if not rows:
        raise ValueError("rebuild_sequence needs at least one row")
    for code in (1, 2):
        own = sorted((r for r in rows if r.split == code), key=lambda r: r.lineno)
        if len(own) > 1:
            raise InconsistentRows(
                own[1],
                f"a second {SPLIT_NAMES[code]} row for this user (the first is on line {own[0].lineno}); "
                f"the given split has one {SPLIT_NAMES[code]} target per user, as RecBole's leave-one-out "
                "benchmark files do",
            )
    first = min(rows, key=lambda r: (r.split, len(r.prefix), r.lineno))
    if len(first.prefix) > 1:
        raise InconsistentRows(
            first,
            f"the user's earliest row already has {len(first.prefix)} items before its target, and no row has "
            f"{_tail(first.prefix[1:])} as a target: RecBole never trains on them but a given split would "
            "(every training item after the first is a next-item target). Benchmark files have one train row "
            "per training item after the first (a row is missing)",
        )
    seq = list(first.prefix)
    codes = [0] * len(seq)
    consumed: dict[tuple[tuple[str, ...], str], int] = {}
    for code in range(len(SPLIT_NAMES)):
        pending: dict[tuple[str, ...], list[BenchmarkRow]] = {}
        for r in sorted((r for r in rows if r.split == code), key=lambda r: r.lineno):
            pending.setdefault(r.prefix, []).append(r)
        width = max_prefix[code]
        while pending:
            key = tuple(seq[max(0, len(seq) - width) :])
            candidates = pending.get(key)
            if not candidates:
                nxt = min((r for rs in pending.values() for r in rs), key=lambda r: (len(r.prefix), r.lineno))
                if (nxt.prefix, nxt.target) in consumed:
                    why = f"it repeats line {consumed[nxt.prefix, nxt.target]}"
                else:
                    why = (
                        f"its {list_field} {_tail(nxt.prefix)} ({len(nxt.prefix)} items) is not the user's items "
                        f"before it: the rows before it give {_tail(key)} ({len(key)} items; prefixes of this "
                        f"file keep the last {width}): a row is missing, repeated or out of order"
                    )
                raise InconsistentRows(
                    nxt, f"this {SPLIT_NAMES[code]} row does not continue the user's sequence: {why}"
                )
            targets = sorted({r.target for r in candidates})
            if len(targets) > 1:
                raise InconsistentRows(
                    candidates[1],
                    f"rows {candidates[0].lineno} and {candidates[1].lineno} have the same {list_field} "
                    f"{_tail(key)} and different targets {targets}: the order of the user's items cannot be "
                    "rebuilt (prefixes truncated too short to tell the positions apart)",
                )
            row = candidates.pop(0)
            if not candidates:
                del pending[key]
            consumed.setdefault((row.prefix, row.target), row.lineno)
            seq.append(row.target)
            codes.append(code)
    return seq, codes


def _read_index_map(ctx: ConvertContext, path: Path, what: str) -> dict[str, str]:
    """``index (as written in the .inter files) -> original id`` from an ``original<TAB>index`` file."""
    out: dict[str, str] = {}
    original_line: dict[str, int] = {}
    for lineno, text in ctx.lines(path):
        fields = text.split("\t")
        try:
            if lineno == 1 and ":" in text and len(fields) == 2 and not fields[1].strip().isdigit():
                continue  # a typed header ('item_id:token<TAB>index:token'); UniSRec writes none
            if len(fields) != 2:
                raise Malformed(
                    f"expected 2 tab-separated fields (original {what} id, index), got {len(fields)}"
                )
            original = clean_text(fields[0])
            if original is None:
                raise Malformed(f"empty original {what} id")
            index = parse_int(fields[1], f"{what} index")
            if index < 0:
                raise Malformed(f"{what} index must be >= 0, got {index}")
            if str(index) in out:
                raise Malformed(f"index {index} already belongs to {what} {out[str(index)]!r}")
            if original in original_line:
                raise Malformed(f"{what} {original!r} already has an index on line {original_line[original]}")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        out[str(index)] = original
        original_line[original] = lineno
    if not out:
        raise DatasetError(f"{path}: no '{what} id<TAB>index' lines; is this a {what}2index file?")
    return out


def _read_split_file(
    ctx: ConvertContext,
    path: Path,
    code: int,
    fields: tuple[str, str, str],
    seq_separator: str,
    known_users: dict[str, str] | None,
    known_items: dict[str, str] | None,
    rows_by_user: dict[str, list[BenchmarkRow]],
) -> tuple[int, int, list[str]]:
    """Add the rows of one split file to ``rows_by_user``; returns ``(rows, longest prefix, ignored fields)``."""
    user_field, list_field, item_field = fields
    header = typed_header(ctx, path)
    names = [n for n, _ in header]
    types = dict(header)
    wanted = {user_field: "token", list_field: "token_seq", item_field: "token"}
    for name, typ in wanted.items():
        if name not in types:
            raise DatasetError(
                f"{path}:1: the header {names} has no {name!r} field. RecBole benchmark files start with "
                f"'{user_field}:token<TAB>{list_field}:token_seq<TAB>{item_field}:token'; name other fields with "
                "--user-field / --item-field / --list-suffix. An atomic file of one interaction per row is "
                "format recbole/atomic."
            )
        if types[name] != typ:
            raise DatasetError(
                f"{path}:1: field {name!r} is declared {types[name]!r}; expected {name}:{typ}."
            )
    pos = {n: i for i, n in enumerate(names)}
    count = longest = 0
    lines = ctx.lines(path)
    next(lines)  # header
    for lineno, text in lines:
        values = text.split("\t")
        try:
            if len(values) != len(names):
                raise Malformed(
                    f"expected {len(names)} tab-separated fields ({', '.join(names)}), got {len(values)}"
                )
            user = clean_text(values[pos[user_field]])
            target = clean_text(values[pos[item_field]])
            if user is None or target is None:
                raise Malformed(f"empty {user_field if user is None else item_field!r}")
            prefix = tuple(t for t in values[pos[list_field]].strip().split(seq_separator) if t.strip())
            prefix = tuple(t.strip() for t in prefix)
            if known_users is not None and user not in known_users:
                raise Malformed(f"user {user!r} is not an index of the user2index file")
            if known_items is not None:
                unknown = [t for t in (*prefix, target) if t not in known_items]
                if unknown:
                    raise Malformed(f"item(s) {unknown[:5]} are not indices of the item2index file")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), text)
            continue
        rows_by_user.setdefault(user, []).append(BenchmarkRow(code, lineno, prefix, target))
        count += 1
        longest = max(longest, len(prefix))
    return count, longest, [n for n in names if n not in wanted]


def _read_text(
    ctx: ConvertContext, path: Path, item_field: str, catalogue: set[str], keyed_by: str
) -> dict[str, str | None]:
    """``item id -> text`` from ``<dataset>.text`` (``item_id:token<TAB>text:token_seq``)."""
    header = typed_header(ctx, path)
    names = [n for n, _ in header]
    if item_field not in names:
        raise DatasetError(
            f"{path}:1: the header {names} has no {item_field!r} field; expected 'item_id:token<TAB>text:token_seq'."
        )
    others = [n for n in names if n != item_field]
    text_field = next((n for n in ("text", "title") if n in others), others[0] if len(others) == 1 else None)
    if text_field is None:
        raise DatasetError(
            f"{path}:1: no 'text' field among {names}; expected 'item_id:token<TAB>text:token_seq'."
        )
    id_pos, text_pos = names.index(item_field), names.index(text_field)
    out: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    lines = ctx.lines(path)
    next(lines)  # header
    for lineno, line in lines:
        # UniSRec writes 'id<TAB>text' and its reader splits once: a tab inside the text stays text
        values = line.split("\t", 1) if len(names) == 2 else line.split("\t")
        try:
            if len(values) != len(names) and not (len(names) == 2 and len(values) == 1):
                raise Malformed(
                    f"expected {len(names)} tab-separated fields ({', '.join(names)}), got {len(values)}"
                )
            item = clean_text(values[id_pos])
            if item is None:
                raise Malformed(f"empty {item_field!r}")
            if item not in catalogue:
                raise Malformed(
                    f"item {item!r} is not an item of the dataset ({keyed_by}); UniSRec's .text is keyed by the "
                    "original ids, which need <dataset>.item2index beside the .inter files"
                )
            if item in first_line:
                raise Malformed(f"item {item!r} already has a text on line {first_line[item]}")
        except Malformed as e:
            ctx.bad(path, lineno, str(e), line)
            continue
        text = clean_text(values[text_pos]) if text_pos < len(values) else None
        # UniSRec ends every text with '.' and writes '.' for items without metadata
        out[item] = text if text is not None and text.strip(" .") else None
        first_line[item] = lineno
    return out


def _find_dataset(root: Path, suffix: str) -> str:
    found = sorted(p.name[: -len(f".{suffix}.inter")] for p in root.glob(f"*.{suffix}.inter") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(
            f"{root} has no '<dataset>.{suffix}.inter' file; pass the folder holding RecBole's benchmark files "
            "(e.g. UniSRec's dataset/downstream/Scientific)."
        )
    raise DatasetError(f"{root} holds several benchmark datasets {found}; choose one with --dataset.")


@CONVERTERS.register(
    "recbole/benchmark",
    description="RecBole benchmark layout: pre-split <dataset>.train/.valid/.test.inter prefix files "
    "(+ item2index, user2index, .text), split kept exactly",
    aliases=("recbole-benchmark",),
    example="dataset/downstream/Scientific",
)
def recbole_benchmark(
    ctx: ConvertContext,
    root: str | Path,
    dataset: str | None = None,
    benchmark_filename: str = "train,valid,test",
    user_field: str = "user_id",
    item_field: str = "item_id",
    list_suffix: str = "_list",
    seq_separator: str = " ",
    items: ItemsPolicy = "all",
) -> Converted:
    """Read RecBole's benchmark layout (pre-split prefix files) and keep its split exactly.

    Args:
        root: the folder holding ``<dataset>.train.inter``, ``.valid.inter``, ``.test.inter`` and, when
            present, ``<dataset>.item2index``, ``<dataset>.user2index`` and ``<dataset>.text``.
        dataset: the dataset name (RecBole's ``dataset``: the files' common stem); default: the only
            ``*.train.inter`` in ``root``.
        benchmark_filename: RecBole's ``benchmark_filename``: the train, valid and test file suffixes,
            comma-separated.
        user_field: RecBole's ``USER_ID_FIELD``.
        item_field: RecBole's ``ITEM_ID_FIELD`` (the target).
        list_suffix: RecBole's ``LIST_SUFFIX``: the prefix field is ``<item_field><list_suffix>``.
        seq_separator: RecBole's ``seq_separator`` between the prefix's items.
        items: ``all`` keeps every item of ``item2index``; ``interacted`` only items in the files.

    Returns:
        The tables to write: interactions with positions as timestamps and the ``split`` column.

    Raises:
        DatasetError: a missing file or field, a malformed line, or rows that do not form one sequence per
            user (file, line, user and reason named); with ``skip_bad`` such users are dropped and counted.

    Example:
        >>> from mmrec.datamodules.converters import prepare_dataset
        >>> ds = prepare_dataset("recbole/benchmark", "data/scientific",
        ...                      root="UniSRec/dataset/downstream/Scientific")  # doctest: +SKIP
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(
            f"benchmark folder {base} {'is a file' if base.is_file() else 'does not exist'}; pass the folder "
            "that holds <dataset>.train.inter, .valid.inter and .test.inter."
        )
    suffixes = [s.strip() for s in benchmark_filename.split(",") if s.strip()]
    if len(suffixes) != 3:
        raise DatasetError(
            f"benchmark_filename must name 3 files (train, valid, test), comma-separated; got {benchmark_filename!r}."
        )
    name = dataset or _find_dataset(base, suffixes[0])
    paths = [base / f"{name}.{s}.inter" for s in suffixes]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{base} lacks {', '.join(missing)}; RecBole's benchmark layout has all three split files."
        )
    maps = {kind: base / f"{name}.{kind}" for kind in ("user2index", "item2index", "text")}
    index2user = _read_index_map(ctx, maps["user2index"], "user") if maps["user2index"].is_file() else None
    index2item = _read_index_map(ctx, maps["item2index"], "item") if maps["item2index"].is_file() else None

    fields = (user_field, f"{item_field}{list_suffix}", item_field)
    rows_by_user: dict[str, list[BenchmarkRow]] = {}
    counts: list[int] = []
    longest: list[int] = []
    ignored: set[str] = set()
    for code, path in enumerate(paths):
        n, width, unknown_fields = _read_split_file(
            ctx, path, code, fields, seq_separator, index2user, index2item, rows_by_user
        )
        counts.append(n)
        longest.append(width)
        ignored.update(unknown_fields)

    users: list[str] = []
    item_col: list[str] = []
    positions: list[int] = []
    codes_col: list[int] = []
    leading_history = 0
    for user, rows in rows_by_user.items():
        try:
            seq, codes = rebuild_sequence(rows, longest, fields[1])
        except InconsistentRows as e:
            where = f"{paths[e.row.split].name}:{e.row.lineno}"
            if not ctx.skip_bad:
                raise DatasetError(
                    f"{paths[e.row.split]}:{e.row.lineno}: user {user!r}: {e.reason}. Fix the files, or pass "
                    "--skip-bad (skip_bad=True) to drop this user (counted in dataset.json)."
                ) from None
            ctx.report.add(
                "users whose rows do not form one sequence (dropped)", f"{where}: user {user!r}: {e.reason}"
            )
            continue
        leading_history += int(not any(len(r.prefix) == 0 for r in rows))
        raw_user = index2user[user] if index2user is not None else user
        users.extend([raw_user] * len(seq))
        item_col.extend(seq if index2item is None else [index2item[i] for i in seq])
        positions.extend(range(len(seq)))
        codes_col.extend(codes)
    inter = pd.DataFrame({"user_id": users, "item_id": item_col, "timestamp": positions, "split": codes_col})

    if index2item is not None:
        order = sorted(index2item, key=int)
        item_df = pd.DataFrame(
            {
                "item_id": [index2item[i] for i in order],
                "recbole_item_index": pd.array([int(i) for i in order], dtype="Int64"),
            }
        )
    else:
        item_df = pd.DataFrame({"item_id": sorted_ids(inter["item_id"].tolist())})
    sources = [str(p) for p in paths]
    for kind in ("user2index", "item2index"):
        if maps[kind].is_file():
            sources.append(str(maps[kind]))
    if maps["text"].is_file():
        keyed_by = "original ids of item2index" if index2item is not None else "the ids of the .inter files"
        titles = _read_text(ctx, maps["text"], item_field, set(item_df["item_id"]), keyed_by)
        item_df["title"] = item_df["item_id"].map(titles)
        sources.append(str(maps["text"]))
    item_df = restrict_items(item_df, inter, items)

    extra: dict[str, Any] = {
        "timestamps": "sequence-order",
        "repeated_user_item_pairs": int(inter.duplicated(subset=["user_id", "item_id"]).sum()),
        "recbole_benchmark": {
            "dataset": name,
            "benchmark_filename": suffixes,
            "rows": dict(zip(SPLIT_NAMES, counts)),
            "longest_prefix": dict(zip(SPLIT_NAMES, longest)),
            "index_maps": [k for k in ("user2index", "item2index") if maps[k].is_file()],
            "users_whose_first_item_is_history_only": leading_history,
            "ignored_fields": sorted(ignored),
        },
    }
    return Converted(items=item_df, interactions=inter, source_files=sources, extra_meta=extra)
