"""A saved or freshly built faiss item index: search with exclusions and exact re-ranking, save, load."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mmrec.retrieval.faiss_runtime import read_faiss, set_threads, to_cpu, to_gpu
from mmrec.retrieval.index_params import SEARCH_PARAMS, ItemIndexError, resolve_params
from mmrec.retrieval.topk import as_queries, excluded_mask, normalize_rows, topk_rows
from mmrec.store.reader import write_keys

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU builds are noise here
import faiss  # noqa: E402  (after the line above, which silences its import-time logging)

INDEX_FORMAT = "mmrec-item-index"


INDEX_VERSION = 1


#: Rows copied / added per step while building (bounded memory).
BUILD_BATCH_ROWS = 65_536


#: faiss-gpu cannot return more than this many neighbours per query.
GPU_MAX_K = 2048


# --------------------------------------------------------------------------------------------- the index
@dataclass
class ItemIndex:
    """A searchable item index: a faiss index, the exact vectors it was built from, and its item ids.

    Build one with :func:`~mmrec.retrieval.index_build.build_index`, reopen a saved one with :meth:`load`.

    Attributes:
        index: the faiss index (CPU or GPU).
        vectors: ``(N, d)`` float32 vectors (memory-mapped when loaded), used for exact re-ranking and
            the exact fallback; normalised when ``metric == "cosine"``.
        item_ids: ``N`` item ids; row ``r`` of every result is ``item_ids[r]``.
        manifest: what :meth:`save` writes to ``manifest.json``.
        path: the folder it was loaded from / saved to (None while only in memory).
    """

    index: Any
    vectors: np.ndarray
    item_ids: list[str]
    manifest: dict[str, Any]
    path: Path | None = None
    on_gpu: bool = False
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.manifest.get("source") or {})

    def row_of(self, item_id: str) -> int:
        """Row of ``item_id`` (KeyError when absent)."""
        if self._row_of is None:
            self._row_of = {k: i for i, k in enumerate(self.item_ids)}
        return self._row_of[item_id]

    def set_search_params(self, **params: Any) -> None:
        """Change query-time parameters (``nprobe`` for ivf, ``ef_search`` for hnsw, ``rerank_factor``).

        Example:
            >>> idx.set_search_params(nprobe=64)  # doctest: +SKIP
        """
        allowed = SEARCH_PARAMS[self.kind]
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ItemIndexError(
                f"{bad} cannot be changed on a built {self.kind!r} index; search parameters: {list(allowed) or 'none'} "
                "(build parameters need a rebuild: `mmrec index ... --overwrite`)."
            )
        merged = resolve_params(self.kind, self.count, {**self.manifest["params"], **params})
        self.manifest["params"] = merged
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        p = self.manifest["params"]
        if self.kind == "ivf" and p.get("nprobe") is not None:
            faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", int(p["nprobe"]))
        elif self.kind == "hnsw" and p.get("ef_search") is not None:
            self.index.hnsw.efSearch = int(p["ef_search"])

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: Any,
        k: int,
        exclude: Sequence[set[int]] | None = None,
        *,
        batch_size: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query by inner product (exact scores), skipping excluded rows.

        Args:
            queries: ``(B, d)`` float array or tensor (a ``(d,)`` vector is one query).
            k: results per query.
            exclude: per query, a set of rows never to return (e.g. the user's history), or None.
            batch_size: queries searched per faiss call.

        Returns:
            ``(scores (B, k) float32, rows (B, k) int64)``, best first (ties: lower row first). ``k`` is
            honoured whenever the catalogue has ``k`` non-excluded items; otherwise the tail holds
            ``-inf`` / ``-1``.

        Example:
            >>> scores, rows = idx.search(user_vecs, k=10, exclude=[{3, 7}, set()])  # doctest: +SKIP
        """
        if isinstance(k, bool) or int(k) < 1:
            raise ItemIndexError(f"k must be a positive integer; got {k!r}.")
        k = int(k)
        q = as_queries(queries, self.dim)
        if self.metric == "cosine":
            q = normalize_rows(q)
        b_total = q.shape[0]
        no_exclusions = exclude is None
        if exclude is None:
            exclude = [set()] * b_total
        if len(exclude) != b_total:
            raise ItemIndexError(f"exclude must hold one set per query ({b_total}); got {len(exclude)}.")
        out_s = np.full((b_total, k), -np.inf, dtype=np.float32)
        out_r = np.full((b_total, k), -1, dtype=np.int64)
        for start in range(0, b_total, batch_size):
            sl = slice(start, min(start + batch_size, b_total))
            ex = list(exclude[sl]) if no_exclusions else [set(e) for e in exclude[sl]]
            s, r = self._search_batch(q[sl], k, ex)
            out_s[sl], out_r[sl] = s, r
        return out_s, out_r

    def _search_batch(self, q: np.ndarray, k: int, exclude: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
        n = self.count
        b = q.shape[0]
        # how many results each query can have: items that exist and are not excluded
        n_excl = np.array([sum(1 for r in e if 0 <= r < n) if e else 0 for e in exclude], dtype=np.int64)
        want = np.minimum(k, n - n_excl)
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_r = np.full((b, k), -1, dtype=np.int64)
        # group queries by fetch size (powers of two), so one long history does not inflate every query
        fetch = np.array([1 << max(0, int(k + e - 1).bit_length()) for e in n_excl], dtype=np.int64)
        pending = np.arange(b)
        while pending.size:
            f = int(fetch[pending].min())
            group = pending[fetch[pending] == f]
            s, r = self._fetch(q[group], f, [exclude[i] for i in group], k)
            out_s[group], out_r[group] = s, r
            got = (r >= 0).sum(axis=1)
            short = group[got < want[group]]
            done_fetch = f * self._candidate_factor() >= n
            if short.size and done_fetch:
                # everything was fetched and some queries still miss results (ivf probes too few cells):
                # exact scan for them
                s2, r2 = self._exact(q[short], k, [exclude[i] for i in short])
                out_s[short], out_r[short] = s2, r2
                short = short[:0]
            fetch[short] = f * 4  # retried with a bigger fetch; satisfied queries leave `pending`
            pending = pending[fetch[pending] != f]
        return out_s, out_r

    def _candidate_factor(self) -> float:
        return float(self.manifest["params"].get("rerank_factor", 1.0)) if self.kind != "flat" else 1.0

    def _fetch(self, q: np.ndarray, f: int, exclude: list[set[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Fetch ``f`` (x rerank_factor for approximate kinds) candidates, drop excluded, re-rank, keep ``k``."""
        n = self.count
        c = min(n, max(1, math.ceil(f * self._candidate_factor())))
        if self.on_gpu and c > GPU_MAX_K:
            return self._exact(q, k, exclude)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(self.manifest["params"]["ef_search"] or 16), c)
        scores, rows = self.index.search(q, c)
        rows = rows.astype(np.int64, copy=False)
        invalid = (rows < 0) | excluded_mask(rows, exclude)
        if self.kind != "flat":
            scores = self._rescore(q, rows, invalid)
        scores = np.where(invalid, -np.inf, scores).astype(np.float32, copy=False)
        rows = np.where(invalid, -1, rows)
        s, r = topk_rows(scores, rows, min(k, c))
        if s.shape[1] < k:
            s = np.pad(s, ((0, 0), (0, k - s.shape[1])), constant_values=-np.inf)
            r = np.pad(r, ((0, 0), (0, k - r.shape[1])), constant_values=-1)
        r = np.where(np.isfinite(s), r, -1)
        return s, r

    def _rescore(self, q: np.ndarray, rows: np.ndarray, invalid: np.ndarray) -> np.ndarray:
        """Exact inner products ``(B, C)`` of queries ``q (B, d)`` with candidates ``rows (B, C)``.

        Read straight from the stored vectors (a memory map once saved) by faiss's multi-threaded
        gather-and-dot kernel when they are a C-contiguous float32 array, else with numpy.
        """
        rows = np.ascontiguousarray(np.where(invalid, 0, rows), dtype=np.int64)
        vecs = self.vectors
        if isinstance(vecs, np.ndarray) and vecs.dtype == np.float32 and vecs.flags.c_contiguous:
            out = np.empty(rows.shape, dtype=np.float32)
            q = np.ascontiguousarray(q, dtype=np.float32)
            faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]  # not in faiss's stubs
                faiss.swig_ptr(out),
                faiss.swig_ptr(q),
                faiss.swig_ptr(vecs),
                faiss.swig_ptr(rows),
                self.dim,
                rows.shape[0],
                rows.shape[1],
            )
            return out
        gathered = np.asarray(np.take(vecs, rows.ravel(), axis=0), dtype=np.float32)
        return np.einsum("bcd,bd->bc", gathered.reshape(*rows.shape, self.dim), q, optimize=False)

    def _exact(
        self, q: np.ndarray, k: int, exclude: list[set[int]], chunk: int = BUILD_BATCH_ROWS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by scanning the stored vectors in chunks (bounded memory)."""
        b = q.shape[0]
        best_s = np.full((b, 0), -np.inf, dtype=np.float32)
        best_r = np.full((b, 0), -1, dtype=np.int64)
        for start in range(0, self.count, chunk):
            block = np.asarray(self.vectors[start : start + chunk], dtype=np.float32)
            s = q @ block.T
            r = np.broadcast_to(np.arange(start, start + block.shape[0], dtype=np.int64), s.shape)
            s = np.where(excluded_mask(r, exclude), -np.inf, s).astype(np.float32)
            best_s, best_r = topk_rows(np.concatenate([best_s, s], 1), np.concatenate([best_r, r], 1), k)
        if best_s.shape[1] < k:
            best_s = np.pad(best_s, ((0, 0), (0, k - best_s.shape[1])), constant_values=-np.inf)
            best_r = np.pad(best_r, ((0, 0), (0, k - best_r.shape[1])), constant_values=-1)
        return best_s, np.where(np.isfinite(best_s), best_r, -1)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index folder atomically (temporary folder, renamed when complete).

        Args:
            path: the folder to create.
            overwrite: replace an existing folder.

        Returns:
            The folder.

        Example:
            >>> idx.save("indexes/demo")  # doctest: +SKIP
        """
        root = Path(path).expanduser().resolve()
        if self.path is not None and root == self.path:
            return root
        if root.exists() and not overwrite:
            raise ItemIndexError(
                f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
            )
        tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            out = np.lib.format.open_memmap(
                tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=self.vectors.shape
            )
            for start in range(0, self.count, BUILD_BATCH_ROWS):
                out[start : start + BUILD_BATCH_ROWS] = self.vectors[start : start + BUILD_BATCH_ROWS]
            out.flush()
            del out
            write_index_files(tmp, self.index, self.item_ids, self.manifest)
            commit_folder(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = root
        self.vectors = np.load(root / "vectors.npy", mmap_mode="r")
        return root

    @staticmethod
    def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
        """``manifest.json`` of a saved index (without loading it)."""
        root = Path(path).expanduser().resolve()
        mpath = root / "manifest.json"
        if not mpath.is_file():
            if not root.exists():
                raise ItemIndexError(
                    f"index folder {root} does not exist; build it with `mmrec index --ckpt CKPT --out {root}`."
                )
            raise ItemIndexError(
                f"{root} is not a complete mmrec index (no manifest.json); rebuild it with `mmrec index ... --out {root} --overwrite`."
            )
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("format") != INDEX_FORMAT:
            raise ItemIndexError(
                f"{mpath} is not an mmrec item index manifest (format {manifest.get('format')!r})."
            )
        if int(manifest.get("version", 0)) > INDEX_VERSION:
            raise ItemIndexError(
                f"{root} was written by a newer mmrec (index version {manifest['version']}); upgrade mmrec."
            )
        return manifest

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        params: Mapping[str, Any] | None = None,
        threads: int | None = None,
        gpu: bool | None = None,
    ) -> ItemIndex:
        """Open a saved index folder; ``vectors.npy`` and (where faiss can) ``index.faiss`` are memory-mapped.

        Args:
            path: the folder written by :meth:`save` / ``mmrec index``.
            params: search parameters to override (``nprobe``, ``ef_search``, ``rerank_factor``).
            threads: faiss CPU threads (None = faiss default, all cores).
            gpu: move the index to a GPU (None = when faiss-gpu sees one, True = require, False = never).

        Raises:
            ItemIndexError: missing / incomplete / inconsistent folder.

        Example:
            >>> idx = ItemIndex.load("indexes/demo", params={"nprobe": 32})  # doctest: +SKIP
        """
        root = Path(path).expanduser().resolve()
        manifest = cls.read_manifest(root)
        set_threads(threads)
        vectors = np.load(root / "vectors.npy", mmap_mode="r")
        item_ids = pq.read_table(root / "keys.parquet").column("item_id").to_pylist()
        index = read_faiss(root / "index.faiss")
        n, d = int(manifest["count"]), int(manifest["dim"])
        if vectors.shape != (n, d) or len(item_ids) != n or index.ntotal != n or index.d != d:
            raise ItemIndexError(
                f"{root} is inconsistent: manifest {n} x {d}, vectors {vectors.shape}, {len(item_ids)} keys, "
                f"faiss {index.ntotal} x {index.d}. Rebuild it with `mmrec index ... --overwrite`."
            )
        index, on_gpu = to_gpu(index, manifest["kind"], gpu, manifest.get("params"))
        obj = cls(
            index=index, vectors=vectors, item_ids=item_ids, manifest=manifest, path=root, on_gpu=on_gpu
        )
        obj._apply_search_params()
        if params:
            obj.set_search_params(**params)
        return obj


def write_index_files(folder: Path, index: Any, item_ids: Sequence[str], manifest: Mapping[str, Any]) -> None:
    faiss.write_index(to_cpu(index), str(folder / "index.faiss"))
    write_keys(folder, item_ids)
    with open(folder / "manifest.json", "w", encoding="utf-8") as f:  # written last
        json.dump(dict(manifest), f, indent=2, default=str)
        f.write("\n")


def commit_folder(tmp: Path, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
