"""Index settings files (mmrec.retrieval.config) and `mmrec index --config`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrec.retrieval.config import IndexConfig, load_index_config
from mmrec.retrieval.index import ItemIndex, ItemIndexError, build_index
from mmrec.retrieval.synthetic import clustered_vectors

REPO = Path(__file__).resolve().parents[1]


def test_shipped_index_configs_load() -> None:
    fast = load_index_config(REPO / "configs/index/fast.yaml")
    assert (fast.kind, fast.metric, fast.params) == ("auto", "ip", {"target_recall": 0.95})
    high = load_index_config(REPO / "configs/index/high_recall.yaml")
    assert high.params == {"target_recall": 0.99, "rerank_factor": 16}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"knd": "ivf"}, r"unknown key\(s\) \['knd'\]; valid keys: kind, metric, threads, params"),
        ({"kind": "annoy"}, "kind must be one of auto, flat, hnsw, ivf; got 'annoy'"),
        ({"metric": "l2"}, "metric must be one of ip, cosine"),
        ({"threads": 0}, "threads must be a positive integer"),
        ({"params": [1, 2]}, "params must be a mapping"),
        (
            {"kind": "hnsw", "params": {"nprobe": 4}},
            r"cfg.yaml: unknown parameter\(s\) \['nprobe'\].*ef_search",
        ),
        ({"params": {"target_recall": 2}}, "target_recall must be in"),
        ([1, 2], "must hold a mapping"),
    ],
)
def test_bad_configs_name_the_file_and_the_fix(data: object, message: str) -> None:
    with pytest.raises(ItemIndexError, match=message):
        IndexConfig.from_mapping(data, source="cfg.yaml")  # type: ignore[arg-type]


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ItemIndexError, match="does not exist; see configs/index/"):
        load_index_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [ivf\n")
    with pytest.raises(ItemIndexError, match="is not valid YAML"):
        load_index_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_index_config(empty) == IndexConfig()


def test_auto_on_a_small_catalogue_ignores_approximate_params() -> None:
    vecs = clustered_vectors(300, 8, clusters=5, seed=0)
    idx = build_index(vecs, [str(i) for i in range(300)], kind="auto", params={"target_recall": 0.95})
    assert idx.kind == "flat" and idx.params == {}
    with pytest.raises(ItemIndexError, match="unknown parameter"):  # an explicit kind still checks them
        build_index(vecs, [str(i) for i in range(300)], kind="flat", params={"target_recall": 0.95})


def test_index_cli_reads_the_config_and_flags_override_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmrec.cli import main
    from mmrec.store import write_store

    vecs = clustered_vectors(2000, 8, clusters=10, seed=1)
    store = write_store(tmp_path / "store", [f"s{j}" for j in range(2000)], vecs, encoder="test/x")
    cfg = tmp_path / "index.yaml"
    cfg.write_text("kind: ivf\nmetric: cosine\nthreads: 1\nparams:\n  nlist: 8\n  target_recall: 0.9\n")
    out = tmp_path / "idx"
    base = ["index", "--store", str(store.path), "--out", str(out), "--overwrite", "--config", str(cfg)]
    assert main(base) == 0
    assert "built IVF8,PQ8x4fs (ivf)" in capsys.readouterr().out
    m = ItemIndex.read_manifest(out)
    assert m["metric"] == "cosine" and m["params"]["target_recall"] == 0.9 and m["params"]["nlist"] == 8
    # dotted overrides merge over the file's params; --metric overrides its metric
    assert main([*base, "--params.nlist=4", "--metric", "ip"]) == 0
    m = ItemIndex.read_manifest(out)
    assert m["metric"] == "ip" and m["params"]["nlist"] == 4 and m["params"]["target_recall"] == 0.9
    # another kind takes its own params: a whole new mapping replaces the file's ivf params
    assert main([*base, "--kind", "hnsw", "--params", "{M: 8}"]) == 0
    m = ItemIndex.read_manifest(out)
    assert m["kind"] == "hnsw" and m["params"]["target_recall"] == 0.97
    # ivf params kept with --kind hnsw: a usage error naming the valid ones
    assert main([*base, "--kind", "hnsw"]) == 2
    assert "unknown parameter(s) ['nlist'] for kind 'hnsw'; valid parameters: M," in capsys.readouterr().err
    # a bad file: usage error naming the parameter, and the existing index is left as it was
    cfg.write_text("kind: ivf\nparams:\n  nprob: 3\n")
    assert main(base) == 2
    assert "unknown parameter(s) ['nprob']" in capsys.readouterr().err
    assert ItemIndex.read_manifest(out)["kind"] == "hnsw"
    assert np.isfinite(ItemIndex.load(out).search(vecs[:2], 3)[0]).all()
