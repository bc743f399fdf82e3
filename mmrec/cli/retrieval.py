"""``mmrec index`` and ``mmrec recommend``.

Build an index over a checkpoint's item vectors (or an embedding store's valid rows); the index settings
are :class:`mmrec.retrieval.config.IndexConfig` (``kind``, ``metric``, ``threads``, ``params``)::

    mmrec index --ckpt runs/demo/version_0/checkpoints/last.ckpt --out indexes/demo
    mmrec index --store cache/demo/image --out indexes/demo-image --kind hnsw --params.M=16 --metric cosine
    mmrec index --ckpt last.ckpt --out indexes/big --config configs/index/fast.yaml --params.nlist=4096

Serve recommendations as JSON lines ``{"user_id": ..., "items": [...], "scores": [...]}``::

    mmrec recommend --ckpt last.ckpt --user u001 --k 10
    mmrec recommend --ckpt last.ckpt --user u001,u002
    mmrec recommend --ckpt last.ckpt --index indexes/demo --items i001,i002       # a new user
    mmrec recommend --ckpt last.ckpt --index indexes/demo --users_file users.txt --out recs.jsonl

A users file holds one request per line: a user id, or a JSON object ``{"user_id": "u001"}`` (known user)
or ``{"items": ["i001", "i002"]}`` (new user; an optional ``user_id`` is echoed). Blank lines are skipped.
A bad line or unknown user gives ``{"line": n, "error": "..."}`` on stderr and the other lines are served.
Exit codes: 0 all served, 1 some requests failed (or the checkpoint / index cannot be used), 2 usage errors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from jsonargparse import ArgumentParser

from mmrec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    UsageError,
    apply_threads,
    check_checkpoint_file,
    load,
    say,
    shorten,
)
from mmrec.cli.dialect import bare_flags, new_parser, parse
from mmrec.retrieval.config import IndexConfig
from mmrec.retrieval.index import ItemIndexError

BUILD_INDEX = "mmrec.retrieval.index:build_index"
STORE_SOURCE = "mmrec.retrieval.index:store_source"
RECOMMENDER = "mmrec.retrieval.recommender:Recommender"
RECOMMENDER_ERROR = "mmrec.retrieval.recommender:RecommenderError"
STORE = "mmrec.store.reader:EmbeddingStore"
PROGRESS_MIN_LINES = 1000


class _ValidRows:
    """Read-only view of the rows ``rows`` (sorted) of a memory-mapped matrix, sliceable like an array."""

    def __init__(self, matrix: np.ndarray, rows: np.ndarray) -> None:
        self.matrix, self.rows = matrix, rows
        self.shape = (len(rows), matrix.shape[1])
        self.dtype = matrix.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sl: Any) -> np.ndarray:
        return np.asarray(self.matrix[self.rows[sl]])


# --------------------------------------------------------------------------------------------- mmrec index
def build_index_parser() -> ArgumentParser:
    """The ``mmrec index`` parser: sources and output, plus every :class:`IndexConfig` key."""
    p = new_parser(
        "mmrec index",
        "Build a faiss index over item vectors: a checkpoint's item representations (what the model scores "
        "with) or an embedding store's valid rows. The folder holds index.faiss, vectors.npy, keys.parquet and "
        "manifest.json (kind, params, build time, and the source it was built from).",
    )
    p.add_argument("--ckpt", type=str | None, default=None, help="checkpoint written by `mmrec fit`")
    p.add_argument(
        "--store", type=str | None, default=None, help="embedding store folder (or <cache>/<name>)"
    )
    p.add_argument("--out", type=str, required=True, help="index folder to create")
    p.add_class_arguments(IndexConfig, as_group=False)
    p.add_argument("--overwrite", type=bool, default=False, help="replace an existing --out folder")
    p.add_argument("--device", type=str, default="cpu", help="device of the model when building from --ckpt")
    p.add_argument(
        "--faiss_gpu",
        type=Literal["auto", "yes", "no"],
        default="auto",
        help="build on a GPU with faiss-gpu (auto: when installed and a GPU is present)",
    )
    p.add_argument(
        "--dataset", type=str | None, default=None, help="--ckpt: the dataset folder, when it moved"
    )
    return bare_flags(p)


def index(argv: list[str]) -> int:
    """``mmrec index``: build and save an item index. Returns the exit code."""
    args = parse(build_index_parser(), argv)
    if (args.ckpt is None) == (args.store is None):
        raise UsageError("give exactly one source: --ckpt <checkpoint> or --store <embedding store>.")
    try:
        cfg = IndexConfig(kind=args.kind, metric=args.metric, threads=args.threads, params=args.params)
    except ItemIndexError as e:  # a parameter the kind does not have: the config is wrong
        raise UsageError(str(e)) from None
    logging.getLogger("mmrec.retrieval.index").setLevel(logging.WARNING)  # the summary line below says it
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it.")
    threads = apply_threads(cfg.threads)
    t0 = time.perf_counter()
    if args.ckpt:
        if cfg.metric != "ip":
            raise UsageError(
                "--metric cosine is for --store indexes: a checkpoint's items are scored by inner product."
            )
        check_checkpoint_file(args.ckpt)
        overrides = {"dataset": args.dataset} if args.dataset else None
        rec = load(RECOMMENDER).from_checkpoint(args.ckpt, device=args.device, data_overrides=overrides)
        vectors: Any = rec.item_vectors().numpy()
        item_ids = rec.item_ids
        source = rec.source
        # approximate kinds calibrate nprobe / ef_search on real queries: a sample of the users' vectors
        rng = np.random.default_rng(0)
        sample = rng.choice(len(rec.user_ids), size=min(256, len(rec.user_ids)), replace=False)
        try:
            calibration = rec.user_vectors([rec.user_ids[i] for i in sorted(sample)]).numpy()
        except load(RECOMMENDER_ERROR) as e:  # a model whose queries this datamodule cannot build
            say(f"calibrating on item vectors: {e}")
            calibration = None
    else:
        store = load(STORE).open(args.store)
        valid = np.nonzero(store.mask)[0]
        if valid.size == 0:
            raise CommandError(f"store {store.path} has no valid rows to index.")
        calibration = None  # item vectors (neighbours of items) calibrate store indexes
        vectors = store.vectors if valid.size == store.num_items else _ValidRows(store.vectors, valid)
        item_ids = [store.item_ids[i] for i in valid]
        source = load(STORE_SOURCE)(store, rows=int(valid.size))
        if valid.size < store.num_items:
            say(f"indexing {valid.size:,} valid rows of {store.num_items:,} (invalid rows skipped)")
    built = load(BUILD_INDEX)(
        vectors,
        item_ids,
        kind=cfg.kind,
        metric=cfg.metric,
        params=cfg.params,
        source=source,
        out=out,
        overwrite=args.overwrite,
        threads=threads,
        gpu={"auto": None, "yes": True, "no": False}[args.faiss_gpu],
        calibration_queries=calibration,
    )
    m = built.manifest
    cal = m.get("calibration")
    tuned = (
        f"; {cal['param']}={cal['value']} for recall@10 {cal['recall@10']:.3f} on {cal['queries']} {cal['query_kind']}"
        if cal
        else ""
    )
    print(
        f"[mmrec] built {m['faiss_index']} ({m['kind']}) index over {m['count']:,} x {m['dim']} in "
        f"{m['build_seconds']:.1f}s (total {time.perf_counter() - t0:.1f}s){tuned} -> {out}"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------- mmrec recommend
def build_recommend_parser() -> ArgumentParser:
    """The ``mmrec recommend`` parser."""
    p = new_parser(
        "mmrec recommend",
        "Top-K recommendations from a checkpoint (exact torch scoring, or a faiss index built by "
        '`mmrec index --ckpt`), as JSON lines {"user_id", "items", "scores"}. Known items of the history are '
        "excluded. Exit code 0: all served, 1: some requests failed (reported on stderr), 2: usage error.",
    )
    p.add_argument("--ckpt", type=str, required=True, help="checkpoint written by `mmrec fit`")
    p.add_argument("--index", type=str | None, default=None, help="index folder built for this checkpoint")
    p.add_argument(
        "--user", type=str | list[str] | None, default=None, help="known user id(s): u1 or '[u1, u2]'"
    )
    p.add_argument(
        "--users_file",
        type=str | None,
        default=None,
        help='one request per line: a user id, {"user_id": ...} or {"items": [...]} (\'-\' = stdin)',
    )
    p.add_argument(
        "--items",
        type=str | list[str] | None,
        default=None,
        help="a new user's history, oldest first: i1,i2,...",
    )
    p.add_argument("--k", type=int, default=10, help="items per list")
    p.add_argument("--out", type=str | None, default=None, help="write the JSON lines here (default: stdout)")
    p.add_argument("--batch_size", type=int, default=256, help="requests scored together")
    p.add_argument("--include_history", type=bool, default=False, help="do not exclude the history's items")
    p.add_argument("--device", type=str, default="cpu", help="model device (cpu, cuda)")
    p.add_argument("--threads", type=int | None, default=None, help="CPU threads (torch and faiss)")
    p.add_argument(
        "--params",
        type=dict[str, Any],
        default={},
        help="index search parameters: --params.nprobe=64, --params.ef_search=128, --params.rerank_factor=4",
    )
    p.add_argument("--dataset", type=str | None, default=None, help="the dataset folder, when it moved")
    return bare_flags(p)


def _parse_line(raw: str) -> dict[str, Any]:
    text = raw.strip()
    if not text.startswith("{"):
        if any(c.isspace() for c in text):
            raise ValueError(
                f"a plain line holds one user id without spaces; got {text[:80]!r} (JSON objects start with '{{')."
            )
        return {"user_id": text}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f'invalid JSON ({e.msg} at column {e.colno}); expected {{"user_id": ...}} or {{"items": [...]}}.'
        ) from e
    if not isinstance(obj, dict):
        raise ValueError('a JSON line must be an object: {"user_id": ...} or {"items": [...]}.')
    unknown = sorted(set(obj) - {"user_id", "items"})
    if unknown:
        raise ValueError(f'unknown key(s) {unknown}; a request has "user_id" and / or "items".')
    if "items" in obj:
        items = obj["items"]
        if not isinstance(items, list) or not all(isinstance(x, (str, int)) for x in items):
            raise ValueError('"items" must be a list of item ids.')
        return {"user_id": obj.get("user_id"), "items": [str(x) for x in items]}
    if "user_id" not in obj or obj["user_id"] is None or isinstance(obj["user_id"], (dict, list)):
        raise ValueError('the object needs "user_id" (a known user) or "items" (a new user\'s history).')
    return {"user_id": str(obj["user_id"])}


def _as_list(value: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` (ids never contain commas; spaces around them are dropped)."""
    return None if value is None else [x.strip() for x in value.split(",") if x.strip()]


def _iter_requests(args: Any) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line, request, error)``; exactly one of ``request`` / ``error`` is set."""
    users = _as_list(args.user)
    if users:
        for n, uid in enumerate(users, 1):
            yield n, {"user_id": uid}, None
        return
    items = _as_list(args["items"])
    if items is not None:
        yield 1, {"user_id": None, "items": items}, None
        return
    with (
        nullcontext(sys.stdin)
        if args.users_file == "-"
        else open(args.users_file, encoding="utf-8", errors="replace") as handle
    ):
        for n, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                yield n, _parse_line(raw), None
            except ValueError as e:
                yield n, None, str(e)


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file written under a temporary name and renamed when complete."""
    if path is None:
        yield sys.stdout
        return
    final = Path(path).expanduser().resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def recommend(argv: list[str]) -> int:
    """``mmrec recommend``: serve requests, report bad ones, never stop half-way. Returns the exit code."""
    args = parse(build_recommend_parser(), argv)
    given = [
        name for name in ("user", "users_file", "items") if args[name] is not None
    ]  # (`args.items` is a method)
    if len(given) != 1:
        raise UsageError("give exactly one request source: --user ID, --users_file F or --items I1,I2,...")
    if args.k < 1:
        raise UsageError(f"--k must be >= 1; got {args.k}.")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1; got {args.batch_size}.")
    if args.users_file and args.users_file != "-" and not Path(args.users_file).is_file():
        raise CommandError(f"users file {shorten(args.users_file)} does not exist.")
    if args.params and not args.index:
        raise UsageError("--params sets index search parameters; it needs --index.")
    check_checkpoint_file(args.ckpt)
    threads = apply_threads(args.threads)
    recommender_error = load(RECOMMENDER_ERROR)
    rec = load(RECOMMENDER).from_checkpoint(
        args.ckpt,
        index_dir=args.index,
        device=args.device,
        threads=threads,
        data_overrides={"dataset": args.dataset} if args.dataset else None,
        index_params=dict(args.params) or None,
    )

    total_lines = None
    if args.users_file and args.users_file != "-":
        with open(args.users_file, "rb") as f:
            total_lines = sum(1 for _ in f)
    progress = None
    if total_lines is not None and total_lines >= PROGRESS_MIN_LINES:
        from tqdm import tqdm  # bars obey --no_progress (TQDM_DISABLE)

        progress = tqdm(total=total_lines, desc="recommend", unit="line", file=sys.stderr, mininterval=1.0)

    served = failed = 0
    exclude = not args.include_history

    def report(line: int, error: str, req: dict[str, Any] | None = None) -> None:
        nonlocal failed
        failed += 1
        rec_err: dict[str, Any] = {"line": line, "error": shorten(error)}
        if req and req.get("user_id") is not None:
            rec_err["user_id"] = shorten(str(req["user_id"]))
        if progress is not None:
            progress.write(json.dumps(rec_err), file=sys.stderr)  # above the bar, not through it
        else:
            print(json.dumps(rec_err), file=sys.stderr, flush=True)

    with _output(args.out) as out:
        pending: list[tuple[int, dict[str, Any], list[int], int]] = []

        def flush() -> None:
            nonlocal served
            if not pending:
                return
            try:
                scores, idx = rec.topk(
                    [h for _, _, h, _ in pending],
                    args.k,
                    users=[u for *_, u in pending],
                    exclude_history=exclude,
                )
            except Exception as e:  # a model / index failure on this batch: report its lines, keep serving
                for line, req, _, _ in pending:
                    report(line, f"scoring failed: {e}", req)
                pending.clear()
                return
            for (_, req, _, _), lst in zip(pending, rec._format(scores, idx)):
                out.write(
                    json.dumps(
                        {
                            "user_id": req.get("user_id"),
                            "items": [i for i, _ in lst],
                            "scores": [s for _, s in lst],
                        }
                    )
                    + "\n"
                )
                served += 1
            out.flush()
            if progress is not None:
                progress.update(len(pending))
            pending.clear()

        for line, req, error in _iter_requests(args):
            if error is not None or req is None:
                report(line, error or "unreadable line")
                if progress is not None:
                    progress.update(1)
                continue
            try:
                if "items" in req:
                    hist, user = rec._history_indices(req["items"]), -1
                else:
                    hist, user = rec._history_of(req["user_id"]), rec._user_index[req["user_id"]]
            except recommender_error as e:
                report(line, str(e), req)
                if progress is not None:
                    progress.update(1)
                continue
            pending.append((line, req, hist, user))
            if len(pending) >= args.batch_size:
                flush()
        flush()
    if progress is not None:
        progress.close()
    where = f" -> {Path(args.out).expanduser().resolve()}" if args.out else ""
    via = (
        f"index {rec.index.path} ({rec.index.manifest['faiss_index']})"
        if rec.index is not None
        else "exact scoring"
    )
    say(f"served {served} of {served + failed} requests ({failed} failed) with {via}{where}")
    return EXIT_OK if failed == 0 else EXIT_FAILED
