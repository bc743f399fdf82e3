"""The item index (mmrec.retrieval.index): exactness, recall of approximate kinds, exclusions, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmrec.retrieval.index import (
    AUTO_FLAT_MAX_ITEMS,
    ItemIndex,
    ItemIndexError,
    build_index,
    choose_kind,
    default_nlist,
    default_pq_m,
    resolve_params,
)
from mmrec.retrieval.synthetic import clustered_vectors

# A clustered 20k catalogue (200 overlapping Gaussians in 32-d) and queries from the same mixture.
N, D, Q = 20_000, 32, 300


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray, list[str]]:
    items = clustered_vectors(N, D, clusters=200, spread=1.0, seed=0)
    queries = clustered_vectors(Q, D, clusters=200, spread=1.0, seed=0, stream=1)
    return items, queries, [f"i{j:05d}" for j in range(N)]


def exact_topk(
    items: np.ndarray, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None
) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    for b, ex in enumerate(exclude or []):
        scores[b, list(ex)] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def assert_scores_exact(
    idx: ItemIndex, items: np.ndarray, queries: np.ndarray, scores: np.ndarray, rows: np.ndarray
) -> None:
    ok = rows >= 0
    ref = np.einsum("bkd,bd->bk", items[np.where(ok, rows, 0)].astype(np.float64), queries.astype(np.float64))
    np.testing.assert_allclose(scores[ok], ref[ok], rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------- kinds & params
def test_auto_kind_follows_catalogue_size() -> None:
    assert choose_kind(10) == "flat" and choose_kind(AUTO_FLAT_MAX_ITEMS) == "flat"
    assert choose_kind(AUTO_FLAT_MAX_ITEMS + 1) == "ivf"
    assert choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ItemIndexError, match="kind must be one of"):
        choose_kind(10, "annoy")
    assert default_nlist(1_000_000) == 2048 and default_nlist(100_000) == 512
    assert default_nlist(50) == 1  # never fewer than 39 training points per cell


def test_params_are_checked_with_actionable_errors() -> None:
    with pytest.raises(
        ItemIndexError, match=r"unknown parameter\(s\) \['nprob'\].*valid parameters: .*nprobe"
    ):
        resolve_params("ivf", 1000, {"nprob": 3})
    with pytest.raises(ItemIndexError, match="rerank_factor must be >= 1"):
        resolve_params("hnsw", 1000, {"rerank_factor": 0.5})
    with pytest.raises(ItemIndexError, match="encoding must be one of"):
        resolve_params("ivf", 1000, {"encoding": "pq"})
    assert resolve_params("ivf", 1000, {"nlist": 8, "nprobe": 99})["nprobe"] == 8  # capped at nlist
    assert resolve_params("ivf", 1000)["nprobe"] is None and resolve_params("hnsw", 1000)["ef_search"] is None
    with pytest.raises(ItemIndexError, match="target_recall must be in"):
        resolve_params("ivf", 1000, {"target_recall": 1.5})


def test_ivf_default_codes_are_4bit_fast_scan_pq(
    catalogue: tuple[np.ndarray, np.ndarray, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    items, _, ids = catalogue
    # defaults: pq4fs codes with one sub-quantiser per dimension (up to 128) and a larger re-ranking pool
    assert resolve_params("ivf", 1000)["encoding"] == "pq4fs"
    assert resolve_params("ivf", 1000)["rerank_factor"] == 8.0
    assert resolve_params("ivf", 1000, {"encoding": "sq8"})["rerank_factor"] == 2.0
    assert resolve_params("ivf", 1000, {"rerank_factor": 3})["rerank_factor"] == 3.0
    assert (default_pq_m(32), default_pq_m(384), default_pq_m(768), default_pq_m(257)) == (32, 128, 128, 1)
    pq_params = {"nlist": 16, "nprobe": 4, "encoding": "pq4fs"}  # explicit: on a GPU the default is sq8
    idx = build_index(items[:5000], ids[:5000], kind="ivf", params=pq_params, gpu=True)
    assert idx.manifest["faiss_index"] == "IVF16,PQ32x4fs" and idx.params["pq_m"] == 32
    # faiss-gpu has no fast-scan kernel: asked for a GPU, the index stays on CPU and says why
    assert not idx.on_gpu and "no GPU kernel for 4-bit fast-scan PQ" in caplog.text
    assert (
        build_index(
            items[:5000], ids[:5000], kind="ivf", params={"nlist": 16, "nprobe": 4, "pq_m": 8}
        ).manifest["faiss_index"]
        == "IVF16,PQ8x4fs"
    )
    with pytest.raises(ItemIndexError, match=r"pq_m=5 does not divide the dimension 32.*encoding=sq8"):
        build_index(items[:5000], ids[:5000], kind="ivf", params={"nlist": 16, "pq_m": 5})
    with pytest.raises(ItemIndexError, match="pq_m must be >= 1"):
        resolve_params("ivf", 1000, {"pq_m": 0})
    # a dimension without a divisor near 128 falls back to sq8 codes (pq4fs would get 1 sub-quantiser here)
    odd = np.random.default_rng(0).standard_normal((2000, 131)).astype(np.float32)  # 131: prime
    odd_idx = build_index(odd, [str(i) for i in range(2000)], kind="ivf", params={"nlist": 8, "nprobe": 2})
    assert odd_idx.manifest["faiss_index"] == "IVF8,SQ8" and odd_idx.params["rerank_factor"] == 2.0


def test_ivf_default_encoding_follows_the_gpu(
    catalogue: tuple[np.ndarray, np.ndarray, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With faiss-gpu seeing a GPU, the default codes are sq8 (GPU kernels exist); pq4fs otherwise."""
    import mmrec.retrieval.index_build as index_module

    items, _, ids = catalogue
    moved: list[str] = []

    def fake_to_gpu(index: object, kind: str, gpu: bool | None, params: dict | None = None) -> tuple:
        moved.append(params["encoding"] if params else "")
        return index, False

    monkeypatch.setattr(index_module, "gpu_available", lambda: True)
    monkeypatch.setattr(index_module, "to_gpu", fake_to_gpu)
    small = {"nlist": 16, "nprobe": 4}
    assert (
        build_index(items[:3000], ids[:3000], kind="ivf", params=small).manifest["faiss_index"] == "IVF16,SQ8"
    )
    assert moved == ["sq8"]
    cpu = build_index(items[:3000], ids[:3000], kind="ivf", params=small, gpu=False)
    assert cpu.manifest["faiss_index"] == "IVF16,PQ32x4fs"
    explicit = build_index(items[:3000], ids[:3000], kind="ivf", params={**small, "encoding": "flat"})
    assert explicit.manifest["faiss_index"] == "IVF16,Flat"


# --------------------------------------------------------------------------------------------- correctness
def test_flat_is_exact(catalogue: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    items, queries, ids = catalogue
    idx = build_index(items, ids, kind="auto")
    assert idx.kind == "flat"
    scores, rows = idx.search(queries, 10)
    truth = exact_topk(items, queries, 10)
    assert recall(rows, truth) == 1.0
    assert (rows == truth).mean() > 0.999  # same order (ties aside)
    assert_scores_exact(idx, items, queries, scores, rows)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize(
    ("kind", "params"),
    [("ivf", None), ("ivf", {"encoding": "sq8"}), ("hnsw", {"M": 16, "ef_construction": 40})],
)
def test_approximate_kinds_recall_and_exact_scores(
    catalogue: tuple[np.ndarray, np.ndarray, list[str]], kind: str, params: dict | None
) -> None:
    items, queries, ids = catalogue
    idx = build_index(items, ids, kind=kind, params=params)
    scores, rows = idx.search(queries, 10)
    truth = exact_topk(items, queries, 10)
    assert recall(rows, truth) >= 0.95, f"{kind} recall@10 {recall(rows, truth):.3f}"
    assert_scores_exact(idx, items, queries, scores, rows)  # re-ranked: exact scores, not approximations
    # the search parameter was calibrated on the data (not a fixed rule of thumb) and recorded
    cal = idx.manifest["calibration"]
    assert (
        cal["param"] == ("nprobe" if kind == "ivf" else "ef_search")
        and cal["recall@10"] >= cal["target_recall"] == 0.97
    )
    assert idx.params[cal["param"]] == cal["value"]
    # explicit values are kept as given
    assert (
        build_index(
            items[:3000], ids[:3000], kind=kind, params={**(params or {}), cal["param"]: 16}
        ).manifest["calibration"]
        is None
    )
    assert (np.diff(scores, axis=1) <= 0).all()
    # a bigger re-ranking pool never hurts
    idx.set_search_params(rerank_factor=8)
    _, rows8 = idx.search(queries, 10)
    assert recall(rows8, truth) >= recall(rows, truth) - 0.01


def test_topk_ties_resolve_to_the_lower_row_whatever_the_candidate_order() -> None:
    from mmrec.retrieval.topk import topk_rows

    rng = np.random.default_rng(0)
    scores = np.array([[5.0, 3.0, 3.0, 3.0, 1.0, -np.inf], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    rows = np.array([[10, 40, 20, 30, 50, -1], [6, 5, 4, 3, 2, 1]])
    for _ in range(5):  # any column order gives the same answer
        perm = rng.permutation(scores.shape[1])
        s, r = topk_rows(scores[:, perm], rows[:, perm], 3)
        assert r.tolist() == [[10, 20, 30], [1, 2, 3]]
        assert s.tolist() == [[5.0, 3.0, 3.0], [2.0, 2.0, 2.0]]
    # fewer valid candidates than k: the -inf tail sorts last
    s, r = topk_rows(np.array([[1.0, -np.inf, 2.0]], np.float32), np.array([[7, -1, 9]]), 3)
    assert r.tolist() == [[9, 7, -1]] and s[0, 2] == -np.inf


def test_rescoring_reads_memory_maps_and_other_dtypes_alike(tmp_path: Path) -> None:
    """Exact re-scoring gives the same scores from a float32 memory map (faiss kernel) and a float16 copy."""
    items = clustered_vectors(3000, 16, clusters=20, seed=1)
    queries = clustered_vectors(7, 16, clusters=20, seed=1, stream=1)
    idx = build_index(
        items, [str(j) for j in range(3000)], kind="ivf", params={"nlist": 8, "nprobe": 2}, out=tmp_path / "i"
    )
    assert isinstance(idx.vectors, np.memmap)
    rows = np.random.default_rng(0).integers(0, 3000, (7, 12))
    invalid = np.zeros(rows.shape, dtype=bool)
    invalid[0, :3] = True
    fast = idx._rescore(queries, rows, invalid)
    idx.vectors = items.astype(np.float16)  # not float32: the numpy path
    slow = idx._rescore(queries, rows, invalid)
    ref = np.einsum("bcd,bd->bc", items[rows].astype(np.float64), queries.astype(np.float64))
    np.testing.assert_allclose(fast[~invalid], ref[~invalid], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(slow[~invalid], ref[~invalid], rtol=1e-2, atol=5e-2)


@pytest.mark.parametrize(
    ("kind", "params", "min_recall"),
    [
        ("flat", None, 1.0),
        ("ivf", {"nlist": 64}, 0.9),
        ("ivf", {"nlist": 64, "nprobe": 1}, 0.0),
        ("hnsw", {"M": 8}, 0.9),
    ],
)
def test_exclusions_are_never_returned_and_k_is_kept(
    catalogue: tuple[np.ndarray, np.ndarray, list[str]], kind: str, params: dict | None, min_recall: float
) -> None:
    items, queries, ids = catalogue
    sub, q = items[:3000], queries[:40]
    idx = build_index(sub, ids[:3000], kind=kind, params=params)
    rng = np.random.default_rng(0)
    truth = exact_topk(sub, q, 10)
    # every query loses its true top-5 plus random items; one query loses almost the whole catalogue
    exclude = [
        set(truth[b, :5].tolist()) | set(rng.choice(3000, 200, replace=False).tolist()) for b in range(len(q))
    ]
    exclude[0] = set(range(2990))
    scores, rows = idx.search(q, 10, exclude=exclude)
    assert (rows >= 0).all(), "fewer than k results although the catalogue has more items"
    for b in range(len(q)):
        assert not set(rows[b].tolist()) & exclude[b]
        assert len(set(rows[b].tolist())) == 10
    assert sorted(rows[0].tolist()) == list(range(2990, 3000))
    assert_scores_exact(idx, sub, q, scores, rows)
    exact_ex = exact_topk(sub, q, 10, exclude)
    assert recall(rows, exact_ex) >= min_recall  # nprobe=1 probes 1 of 64 cells: low recall, but k results


def test_fewer_items_than_k_pads_the_tail() -> None:
    idx = build_index(np.eye(3, 4, dtype=np.float32), ["a", "b", "c"])
    scores, rows = idx.search(np.ones((1, 4), np.float32), 5, exclude=[{1}])
    assert rows.tolist() == [[0, 2, -1, -1, -1]]
    assert np.isneginf(scores[0, 2:]).all()


def test_cosine_metric_normalises_items_and_queries() -> None:
    vecs = np.array([[10.0, 0.0], [0.6, 0.8], [0.0, 0.1]], np.float32)
    idx = build_index(vecs, ["big", "mid", "small"], metric="cosine")
    scores, rows = idx.search(np.array([[0.0, 5.0]], np.float32), 3)
    assert [idx.item_ids[r] for r in rows[0]] == ["small", "mid", "big"]
    np.testing.assert_allclose(scores[0], [1.0, 0.8, 0.0], atol=1e-6)


def test_bad_inputs_have_actionable_errors(catalogue: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    items, _, ids = catalogue
    with pytest.raises(ItemIndexError, match="one id per row"):
        build_index(items[:10], ids[:9])
    with pytest.raises(ItemIndexError, match="unique"):
        build_index(items[:2], ["a", "a"])
    bad = items[:10].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ItemIndexError, match=r"item 'i00003' \(row 3\) is not finite"):
        build_index(bad, ids[:10])
    idx = build_index(items[:10], ids[:10])
    with pytest.raises(ItemIndexError, match=r"queries must be \(B, 32\)"):
        idx.search(np.ones((2, 5), np.float32), 3)
    with pytest.raises(ItemIndexError, match="cannot be changed on a built 'flat' index"):
        idx.set_search_params(nprobe=3)


# --------------------------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(("kind", "params"), [("flat", None), ("ivf", {"nlist": 32}), ("hnsw", {"M": 8})])
def test_save_load_round_trip(
    tmp_path: Path, catalogue: tuple[np.ndarray, np.ndarray, list[str]], kind: str, params: dict | None
) -> None:
    items, queries, ids = catalogue
    source = {"type": "store", "path": "/somewhere", "fingerprint": "abc"}
    idx = build_index(items[:4000], ids[:4000], kind=kind, params=params, source=source)
    before = idx.search(queries[:50], 10)
    folder = idx.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == [
        "index.faiss",
        "keys.parquet",
        "manifest.json",
        "vectors.npy",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"kind", "params", "metric", "dim", "count", "build_seconds", "faiss_version", "source"} <= set(
        manifest
    )
    assert (
        manifest["kind"] == kind
        and manifest["count"] == 4000
        and manifest["dim"] == D
        and manifest["source"] == source
    )
    loaded = ItemIndex.load(folder)
    assert isinstance(loaded.vectors, np.memmap) and loaded.item_ids == ids[:4000]
    after = loaded.search(queries[:50], 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    with pytest.raises(ItemIndexError, match="already exists; pass overwrite=True"):
        idx.save(tmp_path / "idx2") and build_index(items[:10], ids[:10]).save(folder)


def test_build_from_memmap_into_folder(
    tmp_path: Path, catalogue: tuple[np.ndarray, np.ndarray, list[str]]
) -> None:
    items, queries, ids = catalogue
    np.save(tmp_path / "in.npy", items.astype(np.float16))
    mm = np.load(tmp_path / "in.npy", mmap_mode="r")
    idx = build_index(mm, ids, kind="ivf", out=tmp_path / "out", batch_rows=3000, params={"nlist": 64})
    assert idx.path == (tmp_path / "out").resolve() and isinstance(idx.vectors, np.memmap)
    assert idx.vectors.dtype == np.float32
    np.testing.assert_array_equal(idx.vectors[123], items[123].astype(np.float16).astype(np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    scores, rows = idx.search(queries[:20], 10)
    assert_scores_exact(idx, items.astype(np.float16).astype(np.float32), queries[:20], scores, rows)


def test_load_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ItemIndexError, match="does not exist; build it with `mmrec index"):
        ItemIndex.load(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(ItemIndexError, match="not a complete mmrec index"):
        ItemIndex.load(tmp_path / "half")


def test_index_cli_from_store_skips_invalid_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmrec.cli import main
    from mmrec.store import write_store

    vecs = clustered_vectors(500, 8, clusters=10, seed=1)
    mask = np.ones(500, bool)
    mask[[3, 77]] = False
    store = write_store(
        tmp_path / "store", [f"s{j}" for j in range(500)], vecs, mask, encoder="test/x", fingerprint="fp123"
    )
    out = tmp_path / "idx"
    assert (
        main(
            [
                "index",
                "--store",
                str(store.path),
                "--out",
                str(out),
                "--kind",
                "hnsw",
                "--params.M=8",
                "--metric",
                "cosine",
            ]
        )
        == 0
    )
    assert "built HNSW8,Flat" in capsys.readouterr().out
    idx = ItemIndex.load(out)
    assert idx.count == 498 and "s3" not in idx.item_ids and idx.metric == "cosine"
    assert idx.source == {
        "type": "store",
        "path": str(store.path),
        "fingerprint": "fp123",
        "encoder": "test/x",
        "dim": 8,
        "rows": 498,
    }
    # exists -> usage error; bad params -> usage error naming the valid ones
    assert main(["index", "--store", str(store.path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    rebuild_ivf = ["index", "--store", str(store.path), "--out", str(out), "--overwrite", "--kind", "ivf"]
    assert main([*rebuild_ivf, "--params.M=8"]) == 2
    assert "valid parameters" in capsys.readouterr().err
    assert main(["index", "--out", str(out)]) == 2  # neither --ckpt nor --store
    # the ivf default (4-bit fast-scan PQ) with a calibration target given on the command line
    assert main([*rebuild_ivf, "--params.nlist=8", "--params.target_recall=0.95"]) == 0
    assert "built IVF8,PQ8x4fs" in capsys.readouterr().out
    manifest = ItemIndex.read_manifest(out)
    assert manifest["params"]["target_recall"] == 0.95 and manifest["calibration"]["recall@10"] >= 0.95
