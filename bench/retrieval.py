"""Benchmark: exact vs approximate top-10 retrieval at 100k and 1M items, plus store and evaluation memory.

Data (synthetic, seeded, :func:`mmrec.retrieval.synthetic.clustered_vectors`): ``--dim`` 64 item vectors
from a mixture of ``--clusters`` (1000) isotropic Gaussians with long-tailed cluster sizes (Zipf exponent
``--zipf`` 1.0) and per-cluster widths ``--spread * U(0.5, 1.5)``, because real embeddings are clustered
and uniform noise would misrepresent approximate indexes (the noise is full-rank, so this is a hard
case for them, harder than real embeddings of low intrinsic dimension). ``--queries`` query vectors come
from the same mixture (another random stream). Scores are inner products, as mmrec models use.

Measured for each size, in the same run and on the same machine, each step in its own subprocess (so
that every peak RSS is that step's own, not the maximum of everything before it):

* **torch exact**: batched ``Q @ I.T`` + ``topk`` (item chunks bound the score block); gives the ground
  truth top-10.
* **faiss exact**: ``IndexFlatIP`` (build = ``add``; search = all queries in one call).
* **approximate**: :func:`mmrec.retrieval.index.build_index` with ``--approx-kind`` (default ``ivf``, the
  large-catalogue default of ``kind="auto"``) and its default parameters (override with ``--param``), the
  index written to disk as ``mmrec index`` does, its ``nprobe`` calibrated at build time on sampled item
  vectors (never on the benchmark's queries), searched through :meth:`ItemIndex.search` (exact re-ranking
  included); recall@10 before re-ranking is reported too. ``--nprobe-sweep`` adds rows for other
  ``nprobe`` values (tuning).
* **race**: queries/s of all of the above, side by side in one process: ``--repeats`` (5) rounds, each
  timing one full search (all queries) with every method, the order rotating between rounds. Per method
  the fastest round is reported (and the median): on a shared 2-core machine other tenants only ever slow
  a run down (single runs of the same search varied by up to 1.5x here), and interleaving makes a slow
  spell hit every method alike instead of whichever ran during it.
* **store**: ``write_store`` of the items, then ``EmbeddingStore.open`` (memory-mapped) and a chunked scan.
* **eval**: :class:`mmrec.metrics.FullRankingEvaluator` over ``--eval-users`` users in batches of
  ``--eval-batch`` (a ``(batch, N+1)`` score block at a time), history masked.

Queries/s compare the approximate index with the faster of the two exact methods (``x best exact``). Goal:
>= 10x with recall@10 >= 0.95, for catalogues where ``kind="auto"`` is approximate (above 100k items).

Usage:
    python bench/retrieval.py                                  # 100k and 1M, 2 threads
    python bench/retrieval.py --sizes 20000 --queries 500      # quick
    python bench/retrieval.py --sizes 1000000 --nprobe-sweep 8,16,32,64 --threads 4

The last line of output is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # run as `python bench/retrieval.py` (bench/ on sys.path) ...
    from common import Timer, emit_json, peak_rss_mb, print_table
except ImportError:  # ... or as `python -m bench.retrieval` from the repository root
    from bench.common import Timer, emit_json, peak_rss_mb, print_table

PHASES = ("gen", "torch", "flat", "approx", "race", "store", "eval")
AUTO_FLAT_MAX_ITEMS = 100_000  # mmrec.retrieval.index.AUTO_FLAT_MAX_ITEMS (not imported: faiss loads slowly)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated catalogue sizes")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=2000, help="queries per size (recall and queries/s)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=1000, help="mixture components")
    p.add_argument("--zipf", type=float, default=1.0, help="cluster-size exponent (0 = equal sizes)")
    p.add_argument("--spread", type=float, default=1.0, help="component std around N(0, I) centres")
    p.add_argument("--threads", type=int, default=2, help="torch and faiss CPU threads")
    p.add_argument("--query-batch", type=int, default=512, help="queries per torch matmul")
    p.add_argument(
        "--repeats", type=int, default=5, help="timing rounds, each searching once with every method"
    )
    p.add_argument("--approx-kind", default="ivf", choices=("ivf", "hnsw"))
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="approximate index parameter"
    )
    p.add_argument("--nprobe-sweep", default="", help="extra ivf nprobe values to measure, e.g. 8,16,32,64")
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="target_recall the index calibrates nprobe for (the goal's recall; --param target_recall wins)",
    )
    p.add_argument(
        "--also-target",
        default="0.97",
        help="ivf: also calibrate nprobe for these target_recall values on the same index and measure them "
        "(0.97 = mmrec's default); empty to skip",
    )
    p.add_argument("--eval-users", type=int, default=4096)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--skip", default="", help=f"comma-separated steps to skip among {','.join(PHASES[1:])}")
    p.add_argument(
        "--workdir", default=None, help="where data and indexes go (default: a temp folder, removed)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every step in this process (quick checks: saves the imports, but peak RSS figures then "
        "accumulate over the steps)",
    )
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _set_threads(n: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def _current_rss_mb() -> float:
    """Resident set size now (Linux ``/proc``), to separate the libraries' footprint from the data's."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))


# --------------------------------------------------------------------------------------------- phases (children)
def phase_gen(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    from mmrec.retrieval.synthetic import clustered_vectors

    with Timer() as t:
        items = np.lib.format.open_memmap(d / "items.npy", mode="w+", dtype=np.float32, shape=(a.size, a.dim))
        clustered_vectors(
            a.size, a.dim, clusters=a.clusters, spread=a.spread, zipf=a.zipf, seed=a.seed, out=items
        )
        items.flush()
        q = clustered_vectors(
            a.queries, a.dim, clusters=a.clusters, spread=a.spread, zipf=a.zipf, seed=a.seed, stream=1
        )
        np.save(d / "queries.npy", q)
    return {"seconds": t.seconds, "peak_rss_mb": peak_rss_mb()}


def _torch_exact(items: Any, q: Any, k: int, query_batch: int) -> Any:
    """Exact top-``k`` rows ``(B, k)`` by batched ``Q @ I.T`` + ``topk`` (item chunks bound the score block)."""
    import torch

    chunk = 131_072

    def search(qb: torch.Tensor) -> torch.Tensor:
        best_s = torch.full((qb.shape[0], 0), float("-inf"))
        best_i = torch.zeros((qb.shape[0], 0), dtype=torch.long)
        for s in range(0, items.shape[0], chunk):
            top = (qb @ items[s : s + chunk].T).topk(k, dim=1)
            cs, ci = torch.cat([best_s, top.values], 1), torch.cat([best_i, top.indices + s], 1)
            keep = cs.topk(k, dim=1)
            best_s, best_i = keep.values, ci.gather(1, keep.indices)
        return best_i

    return torch.cat([search(q[s : s + query_batch]) for s in range(0, q.shape[0], query_batch)])


def phase_torch(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    import torch

    items = torch.from_numpy(np.load(d / "items.npy"))
    q = torch.from_numpy(np.load(d / "queries.npy"))
    with Timer() as t:
        gt = _torch_exact(items, q, a.k, a.query_batch).numpy()
    np.save(d / "gt.npy", gt)
    return {"search_seconds_single_run": t.seconds, "recall@10": 1.0, "peak_rss_mb": peak_rss_mb()}


def phase_flat(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    import faiss

    items = np.load(d / "items.npy", mmap_mode="r")
    q = np.load(d / "queries.npy")
    gt = np.load(d / "gt.npy")
    with Timer() as tb:
        index = faiss.IndexFlatIP(a.dim)
        for s in range(0, items.shape[0], 65_536):
            index.add(np.ascontiguousarray(items[s : s + 65_536]))
    _, found = index.search(q, a.k)
    return {
        "build_seconds": tb.seconds,
        "recall@10": _recall(found, gt),
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_approx(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    from mmrec.retrieval.index import ItemIndex, build_index, calibrate

    items = np.load(d / "items.npy", mmap_mode="r")
    q = np.load(d / "queries.npy")
    gt = np.load(d / "gt.npy")
    params = {"target_recall": a.target_recall, **dict(_parse_kv(x) for x in a.param)}
    ids = [f"i{j:07d}" for j in range(items.shape[0])]
    out = d / f"index-{a.approx_kind}"
    with Timer() as tb:
        build_index(
            items,
            ids,
            kind=a.approx_kind,
            params=params,
            out=out,
            overwrite=True,
            threads=a.threads,
            gpu=False,
        )
    del ids
    index = ItemIndex.load(out, threads=a.threads, gpu=False)
    default_params = index.params
    rows: list[dict[str, Any]] = []
    sweep = [int(x) for x in a.nprobe_sweep.split(",") if x.strip()] if a.approx_kind == "ivf" else []
    default_nprobe = index.params.get("nprobe")
    targets: dict[int, dict[str, Any]] = {}  # nprobe -> calibration, for the --also-target values
    for t in [float(x) for x in a.also_target.split(",") if x.strip()] if a.approx_kind == "ivf" else []:
        index.manifest["params"] = {**default_params, "nprobe": None, "target_recall": t}
        cal = calibrate(index)  # on the same calibration queries as the build, never the benchmark's
        if cal is not None:
            targets[int(cal["value"])] = cal
    index.manifest["params"] = dict(default_params)
    nprobes = [default_nprobe, *[v for v in [*targets, *sweep] if v != default_nprobe]]
    nprobes = list(dict.fromkeys(nprobes))
    (d / "approx_nprobes.json").write_text(json.dumps(nprobes))
    for nprobe in nprobes:
        if nprobe is not None:
            index.set_search_params(nprobe=nprobe)
        _, found = index.search(q, a.k)
        _, raw = index.index.search(q, a.k)
        rows.append(
            {
                "nprobe": nprobe,
                "recall@10": _recall(found, gt),
                "recall@10_before_rerank": _recall(raw, gt),
                **(
                    {"calibrated_for": targets[nprobe]}
                    if nprobe in targets and nprobe != default_nprobe
                    else {}
                ),
            }
        )
    return {
        "kind": index.kind,
        "faiss_index": index.manifest["faiss_index"],
        "params": default_params,
        "build_seconds": tb.seconds,
        "index_build_seconds": index.manifest["build_seconds"],
        "calibration": index.manifest.get("calibration"),
        **{k: v for k, v in rows[0].items() if k != "nprobe"},
        "sweep": rows[1:],
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_race(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    """Queries/s of every method, measured side by side: ``--repeats`` rounds, each timing one full search
    of every method (the order rotating between rounds), so a slow spell of the shared machine hits all
    methods alike; per method the fastest round (and the median) is reported."""
    import faiss
    import torch

    from mmrec.retrieval.index import ItemIndex

    skip = {x for x in a.skip.split(",") if x}
    q_np = np.load(d / "queries.npy")
    items_t = torch.from_numpy(np.load(d / "items.npy"))
    q_t = torch.from_numpy(q_np)
    methods: dict[str, Callable[[], Any]] = {
        "torch": lambda: _torch_exact(items_t, q_t, a.k, a.query_batch),
    }
    if "flat" not in skip:
        flat = faiss.IndexFlatIP(a.dim)
        flat.add(items_t.numpy())
        methods["flat"] = lambda: flat.search(q_np, a.k)
    index = None
    if "approx" not in skip:
        index = ItemIndex.load(d / f"index-{a.approx_kind}", threads=a.threads, gpu=False)
        default_nprobe = index.params.get("nprobe")
        for nprobe in json.loads((d / "approx_nprobes.json").read_text()):  # written by phase_approx

            def search(nprobe: int | None = nprobe) -> Any:
                if nprobe is not None:
                    index.set_search_params(nprobe=nprobe)
                return index.search(q_np, a.k)

            methods["approx" if nprobe == default_nprobe else f"nprobe={nprobe}"] = search
    names = list(methods)
    _torch_exact(items_t, q_t[:8], a.k, a.query_batch)  # warm-up (page cache, lazy allocations)
    for name in names[1:]:
        methods[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, a.repeats)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with Timer() as t:
                methods[name]()
            times[name].append(t.seconds)
    return {
        "rounds": max(1, a.repeats),
        "qps": {name: len(q_np) / min(ts) for name, ts in times.items()},
        "qps_median": {name: len(q_np) / float(np.median(ts)) for name, ts in times.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_store(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    from mmrec.store import EmbeddingStore, write_store

    items = np.load(d / "items.npy", mmap_mode="r")
    ids = [f"i{j:07d}" for j in range(items.shape[0])]
    with Timer() as tw:
        write_store(d / "store", ids, items, encoder="bench/synthetic", overwrite=True)
    rss_after_write = peak_rss_mb()
    with Timer() as to:
        store = EmbeddingStore.open(d / "store")
    with Timer() as tscan:
        total = np.zeros(store.dim, dtype=np.float64)
        for s in range(0, store.num_items, 65_536):
            total += np.asarray(store.vectors[s : s + 65_536], dtype=np.float64).sum(0)
    return {
        "write_seconds": tw.seconds,
        "open_seconds": to.seconds,
        "scan_seconds": tscan.seconds,
        "peak_rss_mb_after_write": rss_after_write,
        "peak_rss_mb": peak_rss_mb(),
        "mmap": isinstance(store.vectors, np.memmap),
    }


def phase_eval(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    import torch

    from mmrec.metrics import FullRankingEvaluator
    from mmrec.retrieval.synthetic import clustered_vectors

    items = np.load(d / "items.npy", mmap_mode="r")
    n = items.shape[0]
    table = torch.zeros(n + 1, a.dim)  # (N+1, d): row 0 = padding, as models give it
    for s in range(0, n, 65_536):
        table[1 + s : 1 + s + 65_536] = torch.from_numpy(np.asarray(items[s : s + 65_536]))
    users = torch.from_numpy(
        clustered_vectors(
            a.eval_users, a.dim, clusters=a.clusters, spread=a.spread, zipf=a.zipf, seed=a.seed, stream=2
        )
    )
    g = torch.Generator().manual_seed(a.seed)
    targets = torch.randint(1, n + 1, (a.eval_users, 1), generator=g)
    hist = torch.randint(1, n + 1, (a.eval_users, 8), generator=g)
    ev = FullRankingEvaluator(ks=(10,), ignore_columns=(0,))
    with Timer() as t:
        for s in range(0, a.eval_users, a.eval_batch):
            ub = users[s : s + a.eval_batch]
            scores = ub @ table.T
            h = hist[s : s + a.eval_batch]
            rows = torch.arange(h.shape[0]).repeat_interleave(h.shape[1])
            ev.update(scores, targets[s : s + a.eval_batch], exclude=(rows, h.reshape(-1)))
    res = ev.compute()
    return {
        "users_per_s": a.eval_users / t.seconds,
        "seconds": t.seconds,
        "users": int(res["num_users"]),
        "score_block_mb": a.eval_batch * (n + 1) * 4 / 2**20,
        "peak_rss_mb": peak_rss_mb(),
    }


def _parse_kv(text: str) -> tuple[str, Any]:
    """``key=value`` -> ``(key, value)``, the value read as YAML (``nlist=4096`` -> 4096)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. nprobe=32); got {text!r}.")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


# --------------------------------------------------------------------------------------------- driver
def _run_phase(a: argparse.Namespace) -> dict[str, Any]:
    """Run step ``a.phase`` for ``a.size`` items in this process (a child's whole job)."""
    _set_threads(a.threads)
    import mmrec.metrics  # so the baseline below includes every library a step imports
    import mmrec.retrieval.index  # noqa: F401

    baseline = _current_rss_mb()
    d = Path(a.workdir) / f"n{a.size}"
    d.mkdir(parents=True, exist_ok=True)
    result = globals()[f"phase_{a.phase}"](a, d)
    result["rss_after_imports_mb"] = baseline
    return result


def _run_child(phase: str, size: int, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if a.in_process:  # through JSON as a child's output would be: numpy scalars become plain numbers
        return json.loads(
            json.dumps(
                _run_phase(
                    argparse.Namespace(**{**vars(a), "phase": phase, "size": size, "workdir": str(workdir)})
                ),
                default=float,
            )
        )
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--phase",
        phase,
        "--size",
        str(size),
        "--workdir",
        str(workdir),
    ]
    for name in (
        "dim",
        "queries",
        "k",
        "clusters",
        "spread",
        "zipf",
        "threads",
        "query_batch",
        "repeats",
        "approx_kind",
        "nprobe_sweep",
        "target_recall",
        "also_target",
        "eval_users",
        "eval_batch",
        "seed",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(a, name))]
    for p in a.param:
        cmd += ["--param", p]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench step {phase} at {size:,} items failed (exit {proc.returncode}).")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.phase:
        print(json.dumps(_run_phase(a), default=float))
        return 0
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="mmrec-bench-retrieval-"))
    print(
        f"data: {a.clusters} clustered Gaussians (spread {a.spread}) in {a.dim}-d, {a.queries} queries, k={a.k}, "
        f"threads={a.threads}, workdir {workdir}",
        flush=True,
    )
    results: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        for n in sizes:
            r: dict[str, Any] = {"gen": _run_child("gen", n, a, workdir)}
            for phase in ("torch", "flat", "approx", "race", "store", "eval"):
                if phase in skip and phase not in ("torch", "race"):
                    continue
                r[phase] = _run_child(phase, n, a, workdir)
                print(
                    f"  {n:>9,} {phase:<6} {json.dumps({k: v for k, v in r[phase].items() if k != 'sweep'}, default=str)}",
                    flush=True,
                )
            race = r.pop("race")
            for m in ("torch", "flat", "approx"):
                if m in r:
                    r[m]["qps"], r[m]["qps_median"] = race["qps"][m], race["qps_median"][m]
            for row in r.get("approx", {}).get("sweep", []):
                key = f"nprobe={row['nprobe']}"
                row["qps"], row["qps_median"] = race["qps"][key], race["qps_median"][key]
            r["timing"] = {"rounds": race["rounds"], "peak_rss_mb": race["peak_rss_mb"]}
            exact_best = max(("torch", "flat"), key=lambda m: r[m]["qps"] if m in r else -1)
            if "approx" in r:
                r["best_exact"] = "torch matmul" if exact_best == "torch" else "faiss IndexFlatIP"
                r["speedup_vs_best_exact"] = r["approx"]["qps"] / r[exact_best]["qps"]
                r["speedup_vs_torch_exact"] = r["approx"]["qps"] / r["torch"]["qps"]
                r["goal_met"] = r["speedup_vs_best_exact"] >= 10 and r["approx"]["recall@10"] >= 0.95
                for row in r["approx"]["sweep"]:
                    row["speedup_vs_best_exact"] = row["qps"] / r[exact_best]["qps"]
            results[str(n)] = r
            for m, label in (("torch", "torch exact (matmul+topk)"), ("flat", "faiss exact (IndexFlatIP)")):
                if m in r:
                    table.append(
                        {
                            "items": n,
                            "method": label,
                            "build s": r[m].get("build_seconds", 0.0),
                            "queries/s": r[m]["qps"],
                            "median q/s": r[m]["qps_median"],
                            "x best exact": r[m]["qps"] / r[exact_best]["qps"],
                            "recall@10": r[m]["recall@10"],
                            "peak RSS MB": r[m]["peak_rss_mb"],
                        }
                    )
            if "approx" in r:
                ap = r["approx"]
                table.append(
                    {
                        "items": n,
                        "method": f"{ap['faiss_index']} nprobe={ap['params'].get('nprobe', '-')} + rerank "
                        f"(target {ap['params'].get('target_recall', '-')})",
                        "build s": ap["build_seconds"],
                        "queries/s": ap["qps"],
                        "median q/s": ap["qps_median"],
                        "x best exact": r["speedup_vs_best_exact"],
                        "recall@10": ap["recall@10"],
                        "peak RSS MB": ap["peak_rss_mb"],
                    }
                )
                for row in ap["sweep"]:
                    table.append(
                        {
                            "items": n,
                            "method": f"  same, nprobe={row['nprobe']}"
                            + (
                                f" (target {row['calibrated_for']['target_recall']})"
                                if "calibrated_for" in row
                                else ""
                            ),
                            "build s": "",
                            "queries/s": row["qps"],
                            "median q/s": row["qps_median"],
                            "x best exact": row["speedup_vs_best_exact"],
                            "recall@10": row["recall@10"],
                            "peak RSS MB": "",
                        }
                    )
    finally:
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(table)
    print()
    mem_rows = []
    for n, r in results.items():
        data_mb = int(n) * a.dim * 4 / 2**20
        if "store" in r:
            mem_rows.append(
                {
                    "items": int(n),
                    "step": "store write+open+scan",
                    "seconds": r["store"]["write_seconds"] + r["store"]["scan_seconds"],
                    "peak RSS MB": r["store"]["peak_rss_mb"],
                    "RSS after imports MB": r["store"]["rss_after_imports_mb"],
                    "matrix MB": data_mb,
                }
            )
        if "eval" in r:
            mem_rows.append(
                {
                    "items": int(n),
                    "step": f"eval {r['eval']['users']} users",
                    "seconds": r["eval"]["seconds"],
                    "peak RSS MB": r["eval"]["peak_rss_mb"],
                    "RSS after imports MB": r["eval"]["rss_after_imports_mb"],
                    "matrix MB": data_mb,
                }
            )
    print_table(mem_rows)
    for n, r in results.items():
        if "speedup_vs_best_exact" in r:
            print(
                f"{int(n):,} items: approximate is {r['speedup_vs_best_exact']:.1f}x the faster exact method "
                f"({r['best_exact']}) at recall@10 {r['approx']['recall@10']:.3f}"
            )
    emit_json(
        {
            "bench": "retrieval",
            "config": {
                k: getattr(a, k)
                for k in (
                    "dim",
                    "queries",
                    "k",
                    "clusters",
                    "spread",
                    "zipf",
                    "threads",
                    "repeats",
                    "target_recall",
                    "approx_kind",
                    "param",
                    "seed",
                )
            },
            "sizes": results,
            # the goal concerns catalogues where `kind="auto"` is approximate (above 100k items; up to 100k
            # it is exact search, a few thousand queries/s already); every size's own figure is in `sizes`
            # (None when no size above 100k was measured)
            "goal_met": (
                all(r.get("goal_met", False) for n, r in large.items())
                if (large := {n: r for n, r in results.items() if int(n) > AUTO_FLAT_MAX_ITEMS})
                else None
            ),
            "total_seconds": time.perf_counter() - t0,
            "driver_peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
