"""``mmrec embed``: recipes, content addressing, cache hits, bad input, strict mode, resume and DDP.

The toy encoders below (registered as ``test/toy-<modality>``) are cheap and elementwise (no matrix
product), so a row's value never depends on the other rows of its batch and stores can be compared
bitwise. ``MMREC_TEST_ENCODE_SLEEP`` (seconds per batch) makes them slow for the kill/resume test.
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

    # big files are hashed once: a cache hit re-uses the recorded sha256 (keyed by path, size, mtime)
    from mmrec.embedding import fingerprint as fingerprint_mod

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


def test_replacing_a_media_file_changes_the_fingerprint(demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import plan_entry
    from mmrec.embedding.fingerprint import FileHashCache
    from mmrec.embedding.sources import DatasetSource

    copy = tmp_path / "demo"
    shutil.copytree(demo, copy)
    cache = tmp_path / "cache"

    def fp(store: str) -> str:
        cfg = toy_config(copy, cache, (store,))
        return plan_entry(cfg, cfg.encoders[0], DatasetSource(copy), FileHashCache(cache)).fingerprint

    image, text = fp("image"), fp("text")
    assert fp("image") == image
    photos = sorted((copy / "media").rglob("*.png"))
    photos[0].write_bytes(photos[1].read_bytes() + b"\0")  # same path, new content
    assert fp("image") != image  # media changed under the same path: a new store
    assert fp("text") == text  # text inputs did not change


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


# ============================================================================ distributed
@pytest.mark.slow
def test_two_ddp_processes_give_a_bitwise_identical_store(demo: Path, tmp_path: Path) -> None:
    from mmrec.embedding import run_embed

    single = {
        r.name: r for r in run_embed(toy_config(demo, tmp_path / "single", ("image", "text")), progress=False)
    }
    cfg = toy_config(demo, tmp_path / "ddp", ("image", "text"))
    recipe = write_recipe(tmp_path / "r.yaml", cfg)
    cmd = [
        str(MMREC),
        "embed",
        "--config",
        str(recipe),
        "--no_progress",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.accelerator",
        "cpu",
    ]
    run = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, r in single.items():
        ddp_store = tmp_path / "ddp" / name
        assert (ddp_store / "CURRENT").read_text().strip() == r.fingerprint
        assert store_bytes(ddp_store) == store_bytes(r.path)
        manifest = json.loads((ddp_store / r.fingerprint / "manifest.json").read_text())
        assert manifest["world_size"] == 2
        assert {p["rank"] for p in manifest["timings"]["parts"].values()} == {0, 1}
    assert run.stdout.count("building") == 2
