"""``mmrec index`` and ``mmrec recommend``.

Build an index over a checkpoint's item vectors (or an embedding store's valid rows)::

    mmrec index --ckpt runs/demo/version_0/checkpoints/last.ckpt --out indexes/demo
    mmrec index --store cache/demo/image --out indexes/demo-image --kind hnsw --param M=16 --metric cosine
    mmrec index --ckpt last.ckpt --out indexes/big --kind ivf --param nlist=4096 --param nprobe=64 --overwrite

Serve recommendations as JSON lines ``{"user_id": ..., "items": [...], "scores": [...]}``::

    mmrec recommend --ckpt last.ckpt --user u001 --k 10
    mmrec recommend --ckpt last.ckpt --index indexes/demo --items i001,i002       # a new user
    mmrec recommend --ckpt last.ckpt --index indexes/demo --users-file users.txt --out recs.jsonl

A users file holds one request per line: a user id, or a JSON object ``{"user_id": "u001"}`` (known user)
or ``{"items": ["i001", "i002"]}`` (new user; an optional ``user_id`` is echoed). Blank lines are skipped.
A bad line or unknown user gives ``{"line": n, "error": "..."}`` on stderr and the other lines are served.
Exit codes: 0 all served, 1 some requests failed, 2 usage errors (bad arguments, unreadable checkpoint,
index built for another model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger("mmrec")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_LINES = 1000


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` -> ``(key, value)`` with ints, floats, booleans and ``none`` converted.

    Example:
        >>> parse_param("nlist=4096"), parse_param("encoding=flat"), parse_param("rerank_factor=2.5")
        (('nlist', 4096), ('encoding', 'flat'), ('rerank_factor', 2.5))
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param takes key=value (e.g. nprobe=32); got {text!r}.")
    raw = raw.strip()
    value: Any = raw
    low = raw.lower()
    if low in ("true", "false"):
        value = low == "true"
    elif low in ("none", "null"):
        value = None
    else:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return key.strip(), value


def _exit_code(e: SystemExit) -> int:
    return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)


def _error(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


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
def build_index_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmrec index",
        description="Build a faiss index over item vectors: a checkpoint's item representations (what the model "
        "scores with) or an embedding store's valid rows. The folder holds index.faiss, vectors.npy, keys.parquet "
        "and manifest.json (kind, params, build time, and the source it was built from).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint written by `mmrec fit`")
    src.add_argument("--store", help="embedding store folder (or <cache>/<name> following CURRENT)")
    p.add_argument("--out", required=True, help="index folder to create")
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of index settings (kind, metric, threads, params; see configs/index/); "
        "the flags below override it",
    )
    p.add_argument(
        "--kind",
        default=None,
        choices=("auto", "flat", "hnsw", "ivf"),
        help="auto: exact (flat) up to 100k items, ivf above (4-bit fast-scan PQ codes + exact re-ranking, "
        "nprobe calibrated to target_recall) (default)",
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=("ip", "cosine"),
        help="ip (default; checkpoints always use ip, the models' score) or cosine (stores only)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="index parameter, repeatable: ivf nlist, nprobe, encoding (pq4fs|flat|sq8|sq4|fp16; default pq4fs, "
        "sq8 on a GPU), pq_m, train_size, rerank_factor, seed, target_recall (nprobe calibration, default 0.97); "
        "hnsw M, ef_construction, ef_search, rerank_factor, seed, target_recall",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--threads", type=int, default=None, help="faiss CPU threads (default: all cores)")
    p.add_argument(
        "--device", default="cpu", help="device of the model when building from --ckpt (cpu, cuda)"
    )
    p.add_argument(
        "--faiss-gpu",
        default="auto",
        choices=("auto", "yes", "no"),
        help="build on a GPU with faiss-gpu (auto: when installed and a GPU is present)",
    )
    p.add_argument("--dataset", default=None, help="--ckpt: the dataset folder, when it moved since training")
    return p


def _gpu_flag(value: str) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[value]


def index_main(argv: Sequence[str] | None = None) -> int:
    """``mmrec index``: build and save an item index. Returns the exit code."""
    from mmrec.retrieval.index import ItemIndexError, build_index, store_source
    from mmrec.retrieval.recommender import RecommenderError

    parser = build_index_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return _exit_code(e)
    from mmrec.retrieval.config import IndexConfig, check_params, load_index_config

    try:
        cfg = load_index_config(args.config) if args.config else IndexConfig()
        kind = args.kind or cfg.kind
        metric = args.metric or cfg.metric
        threads = args.threads if args.threads is not None else cfg.threads
        # the file's params belong to its kind: a different --kind starts from that kind's defaults
        params = {**(cfg.params if kind == cfg.kind else {}), **dict(args.param)}
        check_params(kind, params, "--param / --config")
    except ItemIndexError as e:
        return _error(str(e))
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not args.overwrite:
        return _error(f"{out} already exists; pass --overwrite to replace it.")
    t0 = time.perf_counter()
    try:
        if args.ckpt:
            if metric != "ip":
                return _error(
                    "--metric cosine is for --store indexes: a checkpoint's items are scored by inner product."
                )
            from mmrec.retrieval.recommender import Recommender

            overrides = {"dataset": args.dataset} if args.dataset else None
            rec = Recommender.from_checkpoint(args.ckpt, device=args.device, data_overrides=overrides)
            vectors: Any = rec.item_vectors().numpy()
            item_ids = rec.item_ids
            source = rec.source
            # approximate kinds calibrate nprobe / ef_search on real queries: a sample of the users' vectors
            rng = np.random.default_rng(0)
            sample = rng.choice(len(rec.user_ids), size=min(256, len(rec.user_ids)), replace=False)
            try:
                calibration = rec.user_vectors([rec.user_ids[i] for i in sorted(sample)]).numpy()
            except RecommenderError as e:  # a model whose queries this datamodule cannot build
                print(f"[mmrec] calibrating on item vectors: {e}", file=sys.stderr)
                calibration = None
        else:
            from mmrec.store import EmbeddingStore, StoreError

            try:
                store = EmbeddingStore.open(args.store)
            except StoreError as e:
                return _error(str(e))
            valid = np.nonzero(store.mask)[0]
            if valid.size == 0:
                return _error(f"store {store.path} has no valid rows to index.")
            calibration = None  # item vectors (neighbours of items) calibrate store indexes
            vectors = store.vectors if valid.size == store.num_items else _ValidRows(store.vectors, valid)
            item_ids = [store.item_ids[i] for i in valid]
            source = store_source(store, rows=int(valid.size))
            if valid.size < store.num_items:
                print(
                    f"[mmrec] indexing {valid.size:,} valid rows of {store.num_items:,} (invalid rows skipped)",
                    file=sys.stderr,
                )
        index = build_index(
            vectors,
            item_ids,
            kind=kind,
            metric=metric,
            params=params,
            source=source,
            out=out,
            overwrite=args.overwrite,
            threads=threads,
            gpu=_gpu_flag(args.faiss_gpu),
            calibration_queries=calibration,
        )
    except (ItemIndexError, RecommenderError) as e:
        return _error(str(e))
    m = index.manifest
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
def build_recommend_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmrec recommend",
        description="Top-K recommendations from a checkpoint (exact torch scoring, or a faiss index built by "
        '`mmrec index --ckpt`), as JSON lines {"user_id", "items", "scores"}. Known items of the history are '
        "excluded. Exit code 0: all served, 1: some requests failed (reported on stderr), 2: usage error.",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint written by `mmrec fit`")
    p.add_argument(
        "--index", default=None, help="index folder built for this checkpoint (default: exact scoring)"
    )
    req = p.add_mutually_exclusive_group(required=True)
    req.add_argument("--user", action="append", metavar="ID", help="a known user id (repeatable)")
    req.add_argument(
        "--users-file",
        metavar="F",
        help='one request per line: a user id, {"user_id": ...} or {"items": [...]} (\'-\' = stdin)',
    )
    req.add_argument(
        "--items", metavar="ID,ID,...", help="a new user's history: comma-separated item ids, oldest first"
    )
    p.add_argument("--k", type=int, default=10, help="items per list (default 10)")
    p.add_argument("--out", default=None, help="write the JSON lines here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=256, help="requests scored together (default 256)")
    p.add_argument("--include-history", action="store_true", help="do not exclude the history's items")
    p.add_argument("--device", default="cpu", help="model device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="faiss CPU threads (default: all cores)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="index search parameter, repeatable: nprobe, ef_search, rerank_factor",
    )
    p.add_argument("--dataset", default=None, help="the dataset folder, when it moved since training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for large users files")
    return p


Request = tuple[int, dict[str, Any]]  # (line number, {"user_id": ...} and / or {"items": [...]})


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


def _iter_requests(args: argparse.Namespace) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line, request, error)``; exactly one of ``request`` / ``error`` is set."""
    if args.user:
        for n, uid in enumerate(args.user, 1):
            yield n, {"user_id": uid}, None
        return
    if args.items is not None:
        yield 1, {"user_id": None, "items": [x.strip() for x in args.items.split(",") if x.strip()]}, None
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


def recommend_main(argv: Sequence[str] | None = None) -> int:
    """``mmrec recommend``: serve requests, report bad ones, never stop half-way. Returns the exit code."""
    from mmrec.retrieval.recommender import Recommender, RecommenderError

    parser = build_recommend_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return _exit_code(e)
    if args.k < 1:
        return _error(f"--k must be >= 1; got {args.k}.")
    if args.batch_size < 1:
        return _error(f"--batch-size must be >= 1; got {args.batch_size}.")
    if args.users_file and args.users_file != "-" and not Path(args.users_file).is_file():
        return _error(f"users file {args.users_file} does not exist.")
    if args.param and not args.index:
        return _error("--param sets index search parameters; it needs --index.")
    try:
        rec = Recommender.from_checkpoint(
            args.ckpt,
            index_dir=args.index,
            device=args.device,
            threads=args.threads,
            data_overrides={"dataset": args.dataset} if args.dataset else None,
            index_params=dict(args.param) or None,
        )
    except RecommenderError as e:
        return _error(str(e))

    total_lines = None
    if args.users_file and args.users_file != "-" and not args.no_progress:
        with open(args.users_file, "rb") as f:
            total_lines = sum(1 for _ in f)
    progress = None
    if total_lines is not None and total_lines >= PROGRESS_MIN_LINES:
        from tqdm import tqdm

        progress = tqdm(total=total_lines, desc="recommend", unit="line", file=sys.stderr, mininterval=1.0)

    served = failed = 0
    exclude = not args.include_history

    def report(line: int, error: str, req: dict[str, Any] | None = None) -> None:
        nonlocal failed
        failed += 1
        rec_err: dict[str, Any] = {"line": line, "error": error}
        if req and req.get("user_id") is not None:
            rec_err["user_id"] = req["user_id"]
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
            except RecommenderError as e:
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
    print(
        f"[mmrec] served {served} of {served + failed} requests ({failed} failed) with {via}{where}",
        file=sys.stderr,
    )
    return EXIT_OK if failed == 0 else EXIT_FAILED
