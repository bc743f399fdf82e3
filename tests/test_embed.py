"""``mmrec embed``: recipes, content addressing, cache hits, bad input, strict mode, resume and DDP.

The toy encoders below (registered as ``test/toy-<modality>``) are cheap and elementwise (no matrix
product), so a row's value never depends on the other rows of its batch and stores can be compared
bitwise. ``MMREC_TEST_ENCODE_SLEEP`` (seconds per batch) makes them slow for the kill/resume test, and
``MMREC_TEST_ENCODE_HANG_AFTER`` (batches) makes them hang, holding the store's lock, until killed.
Subprocesses find them with ``PYTHONPATH=tests`` and the recipe key ``imports: [test_embed]``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mmrec.encoders import ENCODERS
from mmrec.encoders.base import AudioClip, FrozenEncoder, VideoClip
from mmrec.encoders.weights import parse_weights

TESTS_DIR = Path(__file__).resolve().parent
MMREC = Path(sys.executable).with_name("mmrec")
TOY_DIM = 8
TOY_MODALITIES = ("image", "audio", "video", "text")


# ============================================================================ toy encoders
def _flat(raw: Any) -> np.ndarray:
    if isinstance(raw, str):
        return np.frombuffer(raw.encode("utf-8"), dtype=np.uint8).astype(np.float64)
    if isinstance(raw, AudioClip):
        return np.abs(raw.waveform).astype(np.float64).ravel() * 255.0
    if isinstance(raw, VideoClip):
        return raw.frames.astype(np.float64).ravel()
    return np.asarray(raw, dtype=np.float64).ravel()  # PIL image


class ToyEncoder(FrozenEncoder):
    """Chunk means of the raw item's values, then ``tanh(x * w / 100)`` elementwise.

    Args:
        modality: input modality.
        dim: output size.
        scale: multiplies the weights (a preprocessing-free kwarg that changes the output).
        weights: ``None``/``random`` (a fixed ramp) or a ``.npy`` file of ``dim`` weights.
        seed: recorded in the random-init identity.
    """

    def __init__(
        self, modality: str, dim: int = TOY_DIM, scale: float = 1.0, weights: str | None = None, seed: int = 0
    ) -> None:
        spec = parse_weights(weights)
        super().__init__(f"test/toy-{modality}", spec.identity(seed))
        self.modality = modality  # type: ignore[misc]
        self.output_dim = dim
        w = np.load(spec.value) if spec.kind == "file" else np.linspace(0.5, 1.5, dim)
        self.register_buffer("w", torch.tensor(np.asarray(w, dtype=np.float64) * scale, dtype=torch.float32))
        self.freeze()

    def preprocess(self, raw: Any) -> torch.Tensor:
        parts = np.array_split(_flat(raw), self.output_dim)
        return torch.tensor([p.mean() if p.size else 0.0 for p in parts], dtype=torch.float32)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        delay = float(os.environ.get("MMREC_TEST_ENCODE_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)
        hang_after = os.environ.get("MMREC_TEST_ENCODE_HANG_AFTER")  # batches, then hang until killed
        self.calls = getattr(self, "calls", 0) + 1
        while hang_after is not None and self.calls > int(hang_after):
            time.sleep(1)
        return torch.tanh(batch * self.w / 100.0)


def _builder(modality: str) -> Any:
    def build(**kwargs: Any) -> ToyEncoder:
        return ToyEncoder(modality, **kwargs)

    return build


for _m in TOY_MODALITIES:
    if f"test/toy-{_m}" not in ENCODERS:
        ENCODERS.register(f"test/toy-{_m}", modality=_m, dim=TOY_DIM)(_builder(_m))


# ============================================================================ fixtures / helpers
def make_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-item demo catalogue (image PNG, audio WAV, video MP4, title/description)."""
    from mmrec.datamodules.synth import generate_demo_catalogue

    out = tmp_path_factory.mktemp("embed-demo") / "demo"
    generate_demo_catalogue(out, num_items=20, num_users=8, show_progress=False)
    return out


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory)


BAD = {  # item index -> (store, expected reason)
    1: ("image", "missing file"),
    2: ("image", "corrupt image"),
    3: ("audio", "truncated audio"),
    4: ("video", "undecodable video"),
    5: ("text", "empty text"),
}
MISSING_IMAGE = 6  # null image cell -> "missing value", not a failure


def make_bad_demo(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalogue with one bad input of each kind (see :data:`BAD`) and one null image."""
    from PIL import Image

    from mmrec.data.canonical import CanonicalDataset, write_dataset

    ds = CanonicalDataset.load(demo)
    root = tmp_path_factory.mktemp("embed-bad")
    staging = root / "staging"
    shutil.copytree(demo / "media", staging / "media")
    items = ds.items.copy()
    items.loc[1, "image"] = "media/images/does-not-exist.png"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="JPEG")
    (staging / "media/images/corrupt.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    items.loc[2, "image"] = "media/images/corrupt.jpg"
    wav = (demo / items.loc[3, "audio"]).read_bytes()
    (staging / "media/audio/truncated.wav").write_bytes(wav[: len(wav) // 2])
    items.loc[3, "audio"] = "media/audio/truncated.wav"
    (staging / "media/video/garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    items.loc[4, "video"] = "media/video/garbage.mp4"
    items.loc[5, ["title", "description"]] = None
    items.loc[MISSING_IMAGE, "image"] = None
    write_dataset(
        root / "bad",
        items,
        ds.interactions,
        name="bad-demo",
        source_format="test",
        media_dirs=[str(staging / "media")],
    )
    return root / "bad"


@pytest.fixture(scope="session")
def bad_demo(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bad_demo(demo, tmp_path_factory)


def toy_config(
    dataset: Path | None, cache: Path, modalities: tuple[str, ...] = TOY_MODALITIES, **over: Any
) -> Any:
    from mmrec.embedding import EmbedConfig

    cols = {"image": "image", "audio": "audio", "video": "video", "text": ["title", "description"]}
    entries = [
        {
            "name": m,
            "encoder": f"test/toy-{m}",
            "column": cols[m],
            "batch_size": 4,
            "init_args": over.pop(f"{m}_args", {}),
        }
        for m in modalities
    ]
    values: dict[str, Any] = {
        "dataset": str(dataset) if dataset is not None else None,
        "cache": str(cache),
        "shard_size": 6,
        "num_workers": 0,
        "encoders": entries,
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    values.update(over)
    return EmbedConfig.from_dict(values)


def write_recipe(path: Path, cfg: Any) -> Path:
    d = cfg.to_dict()
    d["imports"] = ["test_embed"]
    d = {k: v for k, v in d.items() if v is not None}
    path.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
    return path


def store_bytes(store: Path) -> tuple[bytes, bytes, list[str]]:
    """What must be bitwise identical between two builds: matrix, mask, keys."""
    import pyarrow.parquet as pq

    from mmrec.store import resolve_store_path

    root = resolve_store_path(store)
    keys = pq.read_table(root / "keys.parquet").column("item_id").to_pylist()
    return (root / "embeddings.npy").read_bytes(), (root / "mask.npy").read_bytes(), keys


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


# ============================================================================ recipe
def test_recipe_validation_names_the_fix(tmp_path: Path) -> None:
    from mmrec.embedding import ConfigError, EmbedConfig

    base = {
        "dataset": "d",
        "cache": "c",
        "encoders": [{"name": "image", "encoder": "test/toy-image", "column": "image"}],
    }
    cases = [
        ({**base, "shards": "s.tar"}, "exactly one input"),
        ({**base, "encoders": []}, "at least one"),
        ({**base, "encoders": base["encoders"] * 2}, "unique"),
        ({**base, "encoders": [{"name": "x", "encoder": "test/toy-image", "batch_size": 0}]}, "batch_size"),
        (
            {**base, "encoders": [{"name": "x", "encoder": "test/toy-image", "column": ["image", "title"]}]},
            "alone",
        ),
        ({**base, "encoders": [{"name": "x y", "encoder": "test/toy-image"}]}, "folder name"),
        ({**base, "encoders": [{"name": "x", "encoder": "nofamily"}]}, "family/name"),
        ({**base, "encoders": [{"name": "x", "encoder": "a/b", "colum": "image"}]}, "unknown key"),
        ({**base, "trainer": {"use_distributed_sampler": True}}, "set by `mmrec embed`"),
        ({**base, "store_dtype": "int8"}, "float16 or float32"),
        ({**base, "shard_size": 0}, "shard_size"),
        ({**base, "bogus": 1}, "unknown recipe key"),
    ]
    for values, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            EmbedConfig.from_dict(values)
    cfg = EmbedConfig.from_dict({**base, "trainer": {"accelerator": "cpu"}})
    assert cfg.trainer == {"accelerator": "cpu", "devices": 1}
    with pytest.raises(ConfigError, match="unknown store"):
        cfg.select("nope")
    assert [e.name for e in cfg.select("image")] == ["image"]


def test_demo_recipes_parse(repo_root: Path) -> None:
    """Every shipped recipe parses into a valid config (the CLI parser, then the dataclasses)."""
    from mmrec.cli.dialect import parse
    from mmrec.cli.embed import RUN_OPTIONS, build_embed_parser
    from mmrec.embedding import EmbedConfig

    recipes = sorted((repo_root / "configs" / "embed").glob("*.yaml"))
    assert {p.name for p in recipes} >= {"demo.yaml", "demo_foundation.yaml", "hm_sample.yaml"}
    for recipe in recipes:
        values = parse(build_embed_parser(), ["--config", str(recipe)]).as_dict()
        for k in ("config", *RUN_OPTIONS):
            values.pop(k, None)
        cfg = EmbedConfig.from_dict(values)
        assert cfg.encoders, recipe
    demo = EmbedConfig.from_dict(
        {k: v for k, v in yaml.safe_load((repo_root / "configs/embed/demo.yaml").read_text()).items()}
    )
    assert [e.name for e in demo.encoders] == ["text", "image", "audio", "video"]
    assert demo.cache == "cache/demo"


# ============================================================================ layout, cache hit, fingerprints
def test_store_layout_values_and_cache_hit(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrec.data.canonical import CanonicalDataset
    from mmrec.embedding import pipeline as pipeline_mod
    from mmrec.embedding import run_embed
    from mmrec.encoders.media import decode
    from mmrec.store import EmbeddingStore

    cfg = toy_config(demo, tmp_path / "cache", ("image", "text"))
    first = run_embed(cfg, progress=False)
    assert [r.cache_hit for r in first] == [False, False]
    ds = CanonicalDataset.load(demo)
    for r in first:
        assert r.path.parent == tmp_path / "cache" / r.name and r.path.name == r.fingerprint
        assert sorted(p.name for p in r.path.iterdir()) == [
            "embeddings.npy",
            "keys.parquet",
            "manifest.json",
            "mask.npy",
        ]
        assert (r.path.parent / "CURRENT").read_text().strip() == r.fingerprint
        assert not (r.path.parent / f"{r.fingerprint}.partial").exists()
        store = EmbeddingStore.open(r.path.parent)  # follows CURRENT
        assert store.item_ids == ds.item_ids and store.vectors.dtype == np.float16
        assert store.vectors.shape == (20, TOY_DIM) and store.mask.all()
        m = store.manifest
        assert m["format"] == "mmrec-embedding-store" and m["fingerprint"] == r.fingerprint
        assert m["random_init"] is True and m["weights"] == "random-init:0" and "RANDOM-INIT" in m["warning"]
        assert m["encoder_info"]["name"] == f"test/toy-{r.name}" and m["count"] == 20 and m["valid"] == 20
        assert m["num_parts"] == 4 and set(m["timings"]["parts"]) == {f"part-{k:05d}" for k in range(4)}
        assert m["world_size"] == 1 and m["dataset"]["fingerprint"] == ds.fingerprint
        assert m["versions"]["torch"] == torch.__version__ and m["throughput_items_per_s"] > 0
    # values: exactly what the encoder gives for each item, in the dataset's order
    image = EmbeddingStore.open(first[0].path)
    enc = ToyEncoder("image")
    expected = (
        enc.encode_raw([decode("image", str(demo / p)) for p in ds.items["image"]]).numpy().astype(np.float16)
    )
    np.testing.assert_array_equal(np.asarray(image.vectors), expected)
    text = EmbeddingStore.open(first[1].path)
    joined = [f"{t}. {d}" for t, d in zip(ds.items["title"], ds.items["description"])]
    np.testing.assert_array_equal(
        np.asarray(text.vectors), ToyEncoder("text").encode_raw(joined).numpy().astype(np.float16)
    )

    # second identical run: a cache hit that builds nothing and says so
    capsys.readouterr()

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cache hit must not build anything")

    monkeypatch.setattr(pipeline_mod, "build_entry", no_build)
    second = run_embed(cfg, progress=False)
    out = capsys.readouterr().out
    assert [r.cache_hit for r in second] == [True, True]
    assert [r.path for r in second] == [r.path for r in first]
    for r in first:
        assert f"cache hit: {r.path} (nothing to compute)" in out
    assert "20 items, 20 valid" in out


def test_fingerprint_changes_with_every_input(
    demo: Path, bad_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrec.embedding import plan_entry, run_embed
    from mmrec.embedding.fingerprint import FileHashCache
    from mmrec.embedding.sources import DatasetSource

    w1, w2 = tmp_path / "w1.npy", tmp_path / "w2.npy"
    np.save(w1, np.ones(TOY_DIM))
    np.save(w2, np.full(TOY_DIM, 2.0))
    cache = tmp_path / "cache"

    def fp(
        dataset: Path = demo,
        dtype: str = "float16",
        encoder: str = "test/toy-image",
        column: str = "image",
        **args: Any,
    ) -> str:
        cfg = toy_config(dataset, cache, ("image",), store_dtype=dtype, image_args=args)
        cfg.encoders[0].encoder, cfg.encoders[0].column = encoder, column
        return plan_entry(cfg, cfg.encoders[0], DatasetSource(dataset), FileHashCache(cache)).fingerprint

    base = fp()
    variants = {
        "kwarg": fp(scale=2.0),
        "weights file": fp(weights=str(w1)),
        "other weights file": fp(weights=str(w2)),
        "random seed": fp(weights="random", seed=3),
        "dtype": fp(dtype="float32"),
        "input": fp(dataset=bad_demo),
        "encoder": fp(encoder="test/other-image"),
        "column": fp(column="thumbnail"),
    }
    assert base == fp(), "the fingerprint must be deterministic"
    assert len({base, *variants.values()}) == len(variants) + 1, variants
    # moving the weights file to another path with the same bytes keeps the store
    w1_copy = tmp_path / "elsewhere.npy"
    shutil.copy(w1, w1_copy)
    assert fp(weights=str(w1_copy)) == variants["weights file"]

    # big files are hashed once: a later plan re-uses the recorded sha256 while the file is unchanged
    from mmrec.embedding import fingerprint as fingerprint_mod

    monkeypatch.setattr(fingerprint_mod, "RACY_NS", 0)  # w1 was written just now: no racy window here
    calls: list[Path] = []
    real = fingerprint_mod.file_sha256
    monkeypatch.setattr(fingerprint_mod, "file_sha256", lambda p: calls.append(Path(p)) or real(p))
    fp(weights=str(w1))
    assert calls == []
    os.utime(w1, ns=(1, 1))  # touched: hashed again
    fp(weights=str(w1))
    assert calls == [w1.resolve()]
    monkeypatch.undo()

    # a real rebuild with a changed kwarg lands in a new folder; CURRENT follows the latest build
    old = run_embed(toy_config(demo, cache, ("image",)), progress=False)[0]
    new = run_embed(toy_config(demo, cache, ("image",), image_args={"scale": 2.0}), progress=False)[0]
    assert new.path != old.path and old.path.is_dir() and new.path.is_dir()
    assert (cache / "image" / "CURRENT").read_text().strip() == new.fingerprint
    assert not np.array_equal(np.load(old.path / "embeddings.npy"), np.load(new.path / "embeddings.npy"))
    back = run_embed(toy_config(demo, cache, ("image",)), progress=False)[
        0
    ]  # a hit on the old one re-points CURRENT
    assert back.cache_hit and (cache / "image" / "CURRENT").read_text().strip() == old.fingerprint


def test_media_fingerprints_come_from_file_contents(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh copy of the same files is a cache hit; a file replaced with the same size and mtime is not."""
    from mmrec.embedding import fingerprint as fingerprint_mod
    from mmrec.embedding import plan_entry
    from mmrec.embedding.fingerprint import FileHashCache
    from mmrec.embedding.sources import DatasetSource

    cache = tmp_path / "cache"

    def fp(dataset: Path, store: str = "image") -> str:
        cfg = toy_config(dataset, cache, (store,))
        return plan_entry(cfg, cfg.encoders[0], DatasetSource(dataset), FileHashCache(cache)).fingerprint

    image, text = fp(demo), fp(demo, "text")
    # a fresh clone: new paths, new inodes and times, same bytes -> same stores
    clone = tmp_path / "clone"
    shutil.copytree(demo, clone, copy_function=shutil.copyfile)
    assert fp(clone) == image and fp(clone, "text") == text

    # from here on, remembered hashes of these (just written) files are trusted: only the stat rule decides
    monkeypatch.setattr(fingerprint_mod, "RACY_NS", 0)
    read: list[str] = []
    real = fingerprint_mod.file_sha256
    monkeypatch.setattr(fingerprint_mod, "file_sha256", lambda p: read.append(str(p)) or real(p))
    assert fp(clone) == image and read == [], "unchanged files are not read again"

    photos = sorted((clone / "media").rglob("*.png"))
    victim, donor = photos[0], next(p for p in photos[1:] if p.stat().st_size != photos[0].stat().st_size)
    st = victim.stat()
    # 1. rewritten in place with other bytes of the same size, mtime put back (same inode)
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    changed = fp(clone)
    assert changed != image and read == [str(victim.resolve())]
    # 2. replaced by another file (rename over it) of the same size with the old mtime (a new inode)
    read.clear()
    victim.write_bytes(demo.joinpath(victim.relative_to(clone)).read_bytes())  # the original bytes back
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fp(clone) == image and read == [str(victim.resolve())]
    other = victim.with_name("replacement.png")
    other.write_bytes(bytes(data))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, victim)
    read.clear()
    assert fp(clone) == changed and read == [str(victim.resolve())]
    # 3. a different file of another size under the same path
    victim.write_bytes(donor.read_bytes())
    assert fp(clone) not in (image, changed)
    assert fp(clone, "text") == text  # text inputs did not change

    # racy: a file hashed within 2 s of its last change is read again next time (default window)
    monkeypatch.setattr(fingerprint_mod, "RACY_NS", 2_000_000_000)
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x" * 100)
    hashes = FileHashCache(cache)
    read.clear()
    hashes.sha256(fresh)
    FileHashCache(cache).sha256(fresh)
    assert read == [str(fresh.resolve())] * 2
    monkeypatch.setattr(fingerprint_mod, "RACY_NS", 0)
    FileHashCache(cache).sha256(fresh)
    assert len(read) == 2, "outside the racy window the remembered hash is used"


# ============================================================================ bad input
def test_bad_inputs_are_recorded_masked_and_counted(
    bad_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmrec.data.canonical import CanonicalDataset
    from mmrec.embedding import run_embed
    from mmrec.embedding.sources import DatasetSource, MissingValue
    from mmrec.encoders.media import MediaError
    from mmrec.store import EmbeddingStore

    cfg = toy_config(bad_demo, tmp_path / "cache", num_workers=2)  # decoding in worker processes
    results = {r.name: r for r in run_embed(cfg, progress=False)}
    out = capsys.readouterr().out
    ds = CanonicalDataset.load(bad_demo)
    ids = ds.item_ids
    src = DatasetSource(bad_demo)
    cols = {"image": ["image"], "audio": ["audio"], "video": ["video"], "text": ["title", "description"]}
    for name, r in results.items():
        store = EmbeddingStore.open(r.path)
        m = store.manifest
        expected = {ids[i]: reason for i, (n, reason) in BAD.items() if n == name}
        assert m["failures"] == expected, name
        counts = dict(sorted(Counter(expected.values()).items()))
        assert m["failure_counts"] == counts
        assert set(m["failure_details"]) == set(expected)
        for key in expected:
            assert m["failure_details"][key]["source"]  # names the file (or the text cells)
        missing = [ids[MISSING_IMAGE]] if name == "image" else []
        assert m["missing_values"] == missing and m["missing_count"] == len(missing)
        bad_rows = [ids.index(k) for k in [*expected, *missing]]
        assert m["valid"] == 20 - len(bad_rows) and int(store.mask.sum()) == m["valid"]
        assert not store.mask[bad_rows].any() and not np.asarray(store.vectors[bad_rows]).any()
        # valid rows equal encoding those items alone
        enc = ToyEncoder(name)
        for i in np.nonzero(store.mask)[0]:
            raw, _ = src.load(int(i), cols[name], name)
            alone = enc.encode_raw([raw]).numpy().astype(np.float16)[0]
            np.testing.assert_array_equal(np.asarray(store.vectors[i]), alone)
        if expected:
            listed = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
            assert (
                f"[{name}] 20 items, {m['valid']} valid" in out
                and f"{len(expected)} failed ({listed})" in out
            )
    assert "1 missing value" in out
    # the reasons really are the decoder's
    for i, (name, reason) in BAD.items():
        with pytest.raises(MediaError) as err:
            src.load(i, cols[name], name)
        assert err.value.reason == reason
    with pytest.raises(MissingValue):
        src.load(MISSING_IMAGE, ["image"], "image")


def test_strict_fails_with_item_file_and_reason(
    bad_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmrec.cli import main

    cache = tmp_path / "cache"
    recipe = write_recipe(tmp_path / "r.yaml", toy_config(bad_demo, cache, ("image",)))
    sys.path.insert(0, str(TESTS_DIR))
    try:
        code = main(["embed", "--config", str(recipe), "--strict", "--no_progress"])
    finally:
        sys.path.remove(str(TESTS_DIR))
    err = capsys.readouterr().err
    assert code == 1
    ids = pd.read_parquet(bad_demo / "items.parquet")["item_id"].tolist()
    assert "--strict" in err and repr(ids[1]) in err and "missing file" in err and "does-not-exist.png" in err
    assert "without --strict" in err
    assert not list(cache.rglob("manifest.json")), "strict failure must leave no complete store"
    # a null image is a missing value, not a failure: strict accepts it
    from mmrec.embedding import run_embed

    ok = toy_config(bad_demo, tmp_path / "c2", ("audio",), strict=True)
    with pytest.raises(Exception, match="truncated audio"):
        run_embed(ok, progress=False)


def test_deferred_device_copies_and_background_writes_give_the_same_bytes(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU path (vectors read one batch late, after a copy event) and the background part writer keep
    every row where it belongs: same store as reading each batch at once."""
    import lightning.pytorch  # noqa: F401  (the writer module needs it)

    from mmrec.embedding import run_embed
    from mmrec.embedding import writer as writer_mod

    plain = {
        r.name: r for r in run_embed(toy_config(demo, tmp_path / "plain", ("image", "text")), progress=False)
    }
    synced: list[int] = []

    class Ready:  # stands in for a CUDA event: the writer must wait on it before reading the vectors
        def synchronize(self) -> None:
            synced.append(1)

    real = writer_mod.EmbedModule.predict_step

    def deferred(self: Any, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        out = real(self, batch, batch_idx, dataloader_idx)
        return {**out, "ready": Ready()}

    monkeypatch.setattr(writer_mod.EmbedModule, "predict_step", deferred)
    late = run_embed(toy_config(demo, tmp_path / "late", ("image", "text"), shard_size=7), progress=False)
    assert len(synced) == 2 * 6  # every batch (20 items in chunks of 7 -> batches 4+3, 4+3, 4+2) waited once
    for r in late:
        assert store_bytes(r.path) == store_bytes(plain[r.name].path), r.name


# ============================================================================ resume
def test_partial_parts_without_done_are_never_used(demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import plan_entry, run_embed
    from mmrec.embedding.fingerprint import FileHashCache
    from mmrec.embedding.parts import PartPlan, part_name, write_part
    from mmrec.embedding.pipeline import _keys_digest
    from mmrec.embedding.sources import DatasetSource

    clean = run_embed(toy_config(demo, tmp_path / "clean", ("image",)), progress=False)[0]
    cache = tmp_path / "cache"
    cfg = toy_config(demo, cache, ("image",))
    src = DatasetSource(demo)
    plan = plan_entry(cfg, cfg.encoders[0], src, FileHashCache(cache))
    parts = PartPlan(plan.partial_dir, 20, cfg.shard_size, _keys_digest(src.item_ids))
    assert parts.prepare() == [0, 1, 2, 3]
    keys = src.item_ids
    # chunk 0: rows + json written but no .done marker (killed before the marker) -> must be redone
    write_part(
        parts.partial_dir, 0, np.full((6, TOY_DIM), 7, np.float16), {"keys": keys[:6], "status": ["ok"] * 6}
    )
    (parts.partial_dir / f"{part_name(0)}.done").unlink()
    # chunk 1: a .done marker whose checksum does not match the rows -> must be redone
    write_part(
        parts.partial_dir, 1, np.full((6, TOY_DIM), 7, np.float16), {"keys": keys[6:12], "status": ["ok"] * 6}
    )
    (parts.partial_dir / f"{part_name(1)}.npy").write_bytes(b"garbage")
    # chunk 2: a stray temporary of a killed writer
    (parts.partial_dir / f".{part_name(2)}.npy.tmp-deadbeef").write_bytes(b"half")
    assert parts.prepare() == [0, 1, 2, 3]
    result = run_embed(cfg, progress=False)[0]
    assert result.manifest["resumed_parts"] == 0
    assert store_bytes(result.path) == store_bytes(clean.path)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import run_embed

    clean = run_embed(toy_config(demo, tmp_path / "clean", ("image",)), progress=False)[0]
    cache = tmp_path / "cache"
    cfg = toy_config(demo, cache, ("image",), shard_size=4)
    recipe = write_recipe(tmp_path / "r.yaml", cfg)
    log = open(tmp_path / "embed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(MMREC), "embed", "--config", str(recipe), "--no_progress"],
        env=subprocess_env(MMREC_TEST_ENCODE_SLEEP="1.0"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 400
        done: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(cache.rglob("part-*.done"))
            if done:
                break
            time.sleep(0.2)
        assert done, (
            f"no part was finished before the deadline: {(tmp_path / 'embed.log').read_text()[-2000:]}"
        )
        assert proc.poll() is None, "the run finished before it could be killed; make the encoder slower"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        log.close()
    assert not list(cache.rglob("manifest.json")), "a killed run must leave no complete store"
    partial = next(cache.glob("image/*.partial"))
    n_done = len(list(partial.glob("part-*.done")))
    assert 1 <= n_done < 5
    resumed = run_embed(cfg, progress=False)[0]
    assert resumed.manifest["resumed_parts"] == n_done and resumed.manifest["items_computed"] < 20
    assert store_bytes(resumed.path) == store_bytes(clean.path)
    assert not partial.exists()


# ============================================================================ one writer per store
def test_a_complete_store_removes_what_a_losing_run_left(demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import run_embed
    from mmrec.embedding.parts import write_part
    from mmrec.store.lock import StoreLock

    cfg = toy_config(demo, tmp_path / "cache", ("image",))
    first = run_embed(cfg, progress=False)[0]
    name_dir = first.path.parent
    loser = name_dir / f"{first.fingerprint}.partial"  # a second run recreated it after the winner merged
    write_part(loser, 3, np.zeros((2, TOY_DIM), np.float16), {"keys": ["x", "y"]})
    (name_dir / f".{first.fingerprint}.tmp-deadbeef").mkdir()  # a merge killed half-way
    other = name_dir / "0123456789abcdef.partial"  # another input's unfinished build: kept
    other.mkdir()
    with StoreLock(name_dir / f"{first.fingerprint}.lock"):  # someone is writing: nothing is touched
        assert run_embed(cfg, progress=False)[0].cache_hit
        assert loser.exists()
    again = run_embed(cfg, progress=False)[0]
    assert again.cache_hit and not loser.exists() and other.exists()
    assert not list(name_dir.glob(".*.tmp-*"))
    assert store_bytes(again.path) == store_bytes(first.path)


@pytest.mark.slow
def test_a_second_run_waits_for_the_lock_or_says_who_holds_it(demo: Path, tmp_path: Path) -> None:
    """Run A writes two parts and hangs; B (lock_timeout 0) fails naming A; C waits; A is SIGKILLed (its
    lock goes with it); C takes over, resumes A's parts and finishes a store identical to a clean build."""
    from mmrec.embedding import run_embed

    clean = run_embed(toy_config(demo, tmp_path / "clean", ("image",)), progress=False)[0]
    cache = tmp_path / "cache"
    recipe = write_recipe(tmp_path / "r.yaml", toy_config(demo, cache, ("image",), shard_size=2))
    lock = cache / "image" / f"{clean.fingerprint}.lock"
    cmd = [str(MMREC), "embed", "--config", str(recipe), "--no_progress"]
    logs = {n: open(tmp_path / f"{n}.log", "w+b") for n in "AC"}  # noqa: SIM115
    a = subprocess.Popen(
        cmd, env=subprocess_env(MMREC_TEST_ENCODE_HANG_AFTER="2"), stdout=logs["A"], stderr=subprocess.STDOUT
    )
    c = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and f'"pid": {a.pid}' not in (
            lock.read_text() if lock.exists() else ""
        ):
            assert a.poll() is None, (tmp_path / "A.log").read_text()[-2000:]
            time.sleep(0.2)
        b = subprocess.run(
            [*cmd, "--lock_timeout", "0"], env=subprocess_env(), capture_output=True, text=True, timeout=300
        )
        assert (
            b.returncode == 1
            and f"pid {a.pid} on host" in b.stderr
            and "is being written by another run" in b.stderr
        )
        c = subprocess.Popen(cmd, env=subprocess_env(), stdout=logs["C"], stderr=subprocess.STDOUT)
        while time.monotonic() < deadline and (
            "waiting for" not in (tmp_path / "C.log").read_text() or not list(cache.rglob("part-*.done"))
        ):
            time.sleep(0.2)
        assert a.poll() is None, (tmp_path / "A.log").read_text()[-2000:]
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=60)
        assert c.wait(timeout=400) == 0, (tmp_path / "C.log").read_text()[-3000:]
    finally:
        for proc in (a, c):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        for f in logs.values():
            f.close()
    out = (tmp_path / "C.log").read_text()
    assert f"pid {a.pid} on host" in out and "waiting for store 'image'" in out
    manifest = json.loads((cache / "image" / clean.fingerprint / "manifest.json").read_text())
    assert manifest["resumed_parts"] == 2 and manifest["items_computed"] == 16
    assert store_bytes(cache / "image") == store_bytes(clean.path)
    assert not lock.exists() and not list((cache / "image").glob("*.partial"))


# ============================================================================ distributed
def _ddp(recipe: Path, *extra: str, devices: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = [str(MMREC), "embed", "--config", str(recipe), "--no_progress", *extra]
    if devices > 1:
        cmd += [
            "--trainer.devices",
            str(devices),
            "--trainer.strategy",
            "ddp",
            "--trainer.accelerator",
            "cpu",
        ]
    return subprocess.run(
        cmd, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=580
    )


@pytest.mark.slow
def test_two_processes_with_fewer_chunks_than_processes(demo: Path, tmp_path: Path) -> None:
    """Rank 1 gets no chunk (one chunk per store): it runs an empty loop, joins the barriers, and the stores
    are the bytes of one process; a second run is all cache hits."""
    from mmrec.embedding import run_embed

    single = {
        r.name: r
        for r in run_embed(
            toy_config(demo, tmp_path / "single", ("image", "text"), shard_size=20), progress=False
        )
    }
    recipe = write_recipe(
        tmp_path / "r.yaml", toy_config(demo, tmp_path / "ddp", ("image", "text"), shard_size=20)
    )
    run = _ddp(recipe)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and run.stdout.count("building") == 2
    for name, r in single.items():
        ddp_store = tmp_path / "ddp" / name
        assert (ddp_store / "CURRENT").read_text().strip() == r.fingerprint
        assert store_bytes(ddp_store) == store_bytes(r.path)
        manifest = json.loads((ddp_store / r.fingerprint / "manifest.json").read_text())
        assert manifest["world_size"] == 2 and manifest["num_parts"] == 1
        assert {p["rank"] for p in manifest["timings"]["parts"].values()} == {0}
    again = _ddp(recipe)
    assert again.returncode == 0 and again.stdout.count("cache hit") == 2, again.stderr[-2000:]


@pytest.mark.slow
def test_ranks_without_a_shared_filesystem_then_a_merge_step(demo: Path, tmp_path: Path) -> None:
    """Each rank writes its parts to its own folder (`parts_dir: .../parts-{rank}`, as on two machines);
    `merge: false` leaves them there; `--merge_from` assembles the store and checks every item is there once."""
    from mmrec.embedding import run_embed

    single = run_embed(toy_config(demo, tmp_path / "single", ("image",)), progress=False)[0]
    cache = tmp_path / "cache"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        toy_config(demo, cache, ("image",), parts_dir=str(tmp_path / "parts-{rank}"), merge=False),
    )
    run = _ddp(recipe)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--merge_from" in run.stdout and not (cache / "image" / single.fingerprint).exists()
    held = {r: sorted(p.name for p in (tmp_path / f"parts-{r}").rglob("part-*.done")) for r in (0, 1)}
    assert held == {0: ["part-00000.done", "part-00002.done"], 1: ["part-00001.done", "part-00003.done"]}

    # one folder is not enough: the merge names what is missing, and builds nothing
    partial = _ddp(recipe, "--merge_from", f"[{tmp_path / 'parts-0'}]", devices=1)
    assert partial.returncode == 1 and "2 of 4 part(s) are missing" in partial.stderr, partial.stderr[-2000:]
    assert "items 6..11" in partial.stderr and not (cache / "image" / single.fingerprint).exists()
    merged = _ddp(recipe, "--merge_from", f"[{tmp_path / 'parts-0'}, {tmp_path / 'parts-1'}]", devices=1)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert store_bytes(cache / "image") == store_bytes(single.path)
    manifest = json.loads((cache / "image" / single.fingerprint / "manifest.json").read_text())
    assert {p["rank"] for p in manifest["timings"]["parts"].values()} == {0, 1}
    assert manifest["encoder_info"]["name"] == "test/toy-image"  # recorded by the ranks, not re-built
