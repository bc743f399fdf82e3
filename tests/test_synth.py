"""Tests for the synthetic demo catalogue (``mmrec.datamodules.synth``) and the shipped ``assets/demo``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image, features

from mmrec.data.canonical import CanonicalDataset, DatasetError
from mmrec.datamodules import synth, synth_media
from mmrec.datamodules.synth import generate_demo_catalogue
from mmrec.datamodules.synth_media import BACKGROUND, PALETTE, SOUNDS

SMALL = {"num_items": 24, "num_users": 40}
MEDIUM = {"num_items": 240, "num_users": 300}  # the default catalogue, fewer users


def _generate(path: Path, **kwargs) -> CanonicalDataset:
    return generate_demo_catalogue(path, show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> CanonicalDataset:
    return _generate(tmp_path_factory.mktemp("small") / "demo", **SMALL)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> CanonicalDataset:
    return _generate(tmp_path_factory.mktemp("medium") / "demo", **MEDIUM)


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _video(path: str) -> tuple[list[np.ndarray], str, str]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # tiny clips: threads cost more than they save
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt


def _garment_pixels(path: str) -> np.ndarray:
    """RGB values of the clearly-garment pixels (far from the background, so no anti-aliased edges)."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    mask = np.abs(img - np.array(BACKGROUND)).sum(-1) > 120
    return img[mask]


# --- format, counts, media decode -------------------------------------------------------------------


def test_canonical_files_and_counts(small: CanonicalDataset) -> None:
    for name in ("items.parquet", "interactions.parquet", "dataset.json"):
        assert (small.path / name).is_file()
    ds = CanonicalDataset.load(small.path)
    assert ds.meta["source_format"] == "synth"
    assert ds.counts["items"] == len(ds.items) == SMALL["num_items"]
    assert ds.counts["users"] == ds.interactions["user_id"].nunique() == SMALL["num_users"]
    assert ds.counts["interactions"] == len(ds.interactions)
    per_user = ds.interactions.groupby("user_id").size()
    assert per_user.min() >= 6 and per_user.max() <= 20
    assert not ds.interactions.duplicated(["user_id", "item_id"]).any(), "a user bought the same item twice"
    assert ds.interactions["rating"].between(1, 5).all()
    assert ds.interactions["timestamp"].dtype == np.int64
    for col in ("attr_colour", "attr_pattern", "attr_sound", "attr_motion", "attr_category"):
        assert col in ds.items.columns
    assert ds.meta["synth"]["seed"] == 0
    # Only the dataset folder is left behind: no staging or temporary siblings.
    assert sorted(p.name for p in small.path.parent.iterdir()) == ["demo"]


def test_no_nulls_or_empty_strings(small: CanonicalDataset) -> None:
    items, inter = small.items, small.interactions
    for col in ("item_id", "title", "description", "brand", "image", "audio", "video"):
        assert items[col].notna().all(), col
        assert (items[col].str.strip().str.len() > 0).all(), col
    assert items["categories"].map(lambda c: len(c) >= 2 and all(s.strip() for s in c)).all()
    assert (items["price"] > 0).all()
    assert inter["review"].notna().all()
    assert (inter["review"].str.strip().str.len() > 0).all()


def test_timestamps_strictly_increase_per_user(small: CanonicalDataset) -> None:
    diffs = small.interactions.groupby("user_id")["timestamp"].diff().dropna()
    assert (diffs > 0).all()


def test_media_paths_and_decoding(small: CanonicalDataset) -> None:
    for row in small.items.itertuples():
        assert row.image == f"media/images/{row.item_id}.png"
        assert row.audio == f"media/audio/{row.item_id}.wav"
        assert row.video == f"media/video/{row.item_id}.mp4"
        with Image.open(small.resolve_media(row.image)) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == (synth_media.IMAGE_SIZE, synth_media.IMAGE_SIZE)
        info = sf.info(small.resolve_media(row.audio))
        assert (info.samplerate, info.channels, info.subtype) == (synth_media.SAMPLE_RATE, 1, "PCM_16")
        assert info.frames == round(synth_media.SAMPLE_RATE * synth_media.AUDIO_SECONDS)
        frames, codec, pix_fmt = _video(small.resolve_media(row.video))
        assert (codec, pix_fmt) == (synth_media.VIDEO_CODEC, "yuv420p")
        assert len(frames) == synth_media.VIDEO_FRAMES
        assert frames[0].shape == (synth_media.VIDEO_SIZE, synth_media.VIDEO_SIZE, 3)
    # Nothing else in the media folder.
    media = sorted(str(p.relative_to(small.path)) for p in (small.path / "media").rglob("*") if p.is_file())
    expected = sorted(small.items[["image", "audio", "video"]].to_numpy().ravel().tolist())
    assert media == expected


# --- determinism and overwrite ------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_other_seed_differs(small: CanonicalDataset, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", **SMALL)
    assert _file_hashes(again.path) == _file_hashes(small.path)
    other = _generate(tmp_path / "other", seed=1, **SMALL)
    assert other.fingerprint != small.fingerprint
    a, b = _file_hashes(small.path), _file_hashes(other.path)
    media_diff = [k for k in a if k.startswith("media/") and a[k] != b.get(k)]
    assert len(media_diff) > len(a) // 2


def _run_python(code: str, threads: int, env: dict[str, str] | None = None, timeout: float = 120) -> None:
    """Run ``code`` in a fresh interpreter with ``threads`` BLAS / OpenMP / torch threads."""
    full_env = {**os.environ, **(env or {})}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        full_env[var] = str(threads)
    prelude = f"import torch\ntorch.set_num_threads({threads})\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


#: Environment that sends NumPy and glibc's libm down their baseline (pre-AVX) code paths, as on an older
#: CPU: NumPy's SIMD exp / power and libm's FMA variants round differently in the last bits.
BASELINE_CPU_ENV = {
    "NPY_DISABLE_CPU_FEATURES": " ".join(np._core._multiarray_umath.__cpu_dispatch__),
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-AVX512F,-AVX512DQ,-AVX512BW,-AVX512VL",
}


@pytest.mark.slow
def test_separate_processes_thread_counts_and_cpu_paths_write_identical_bytes(tmp_path: Path) -> None:
    """Two processes with different thread counts, heap states and SIMD paths: every file byte-identical.

    The full 240-item catalogue with few users: the size that showed the bug (before, 122 of 240 MP4s
    differed between two such processes, and 11 of 20 at the minimum catalogue size; items.parquet
    differed wherever NumPy used AVX-512).
    """
    args = dict(num_items=240, num_users=30, show_progress=False)
    _run_python(
        f"""
        from mmrec.datamodules.synth import generate_demo_catalogue
        generate_demo_catalogue({str(tmp_path / "a")!r}, **{args!r})
        """,
        threads=1,
    )
    # The second process first writes another catalogue, so its allocator hands out reused memory.
    _run_python(
        f"""
        from mmrec.datamodules.synth import generate_demo_catalogue
        generate_demo_catalogue({str(tmp_path / "warm-up")!r}, seed=1, num_items=20, num_users=3,
                                show_progress=False)
        generate_demo_catalogue({str(tmp_path / "b")!r}, **{args!r})
        """,
        threads=2,
        env=BASELINE_CPU_ENV,
    )
    a, b = _file_hashes(tmp_path / "a"), _file_hashes(tmp_path / "b")
    assert len(a) == 3 + 3 * 240
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_video_bytes_do_not_depend_on_ffmpeg_simd(tmp_path: Path) -> None:
    """Same clips encoded with all of FFmpeg's SIMD code switched off: same bytes (any CPU, any arch).

    FFmpeg's own default DCT and libx264 both fail this (their SIMD and C code round differently).
    """
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    avutil = sorted(libs.glob("libavutil-*.so*"))
    if not avutil:
        pytest.skip(f"no bundled libavutil under {libs} (a non-manylinux PyAV build)")
    clips = [
        ("dress", "blue", "dots", "rotating"),
        ("shirt", "red", "stripes", "sliding"),
        ("bag", "yellow", "checks", "bouncing"),
        ("hat", "black", "diagonal", "pulsing"),
    ]
    _run_python(
        f"""
        import ctypes
        from mmrec.datamodules.synth_media import video_frames, write_video
        avutil = ctypes.CDLL({str(avutil[0])!r})
        for flags, tag in ((None, "simd"), (0, "c")):
            if flags is not None:
                avutil.av_force_cpu_flags(flags)
            for k, clip in enumerate({clips!r}):
                write_video(f"{tmp_path}/{{tag}}-{{k}}.mp4", video_frames(*clip))
        assert avutil.av_get_cpu_flags() == 0
        """,
        threads=1,
    )
    for k in range(len(clips)):
        simd, plain = (tmp_path / f"simd-{k}.mp4").read_bytes(), (tmp_path / f"c-{k}.mp4").read_bytes()
        assert simd == plain, clips[k]


def test_rgb_to_yuv420p_is_bt601_limited_range() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2, :2] = (255, 255, 255)
    rgb[:2, 2:] = (255, 0, 0)
    rgb[2:, :2] = (0, 0, 0)
    rgb[2:, 2:] = (0, 0, 255)
    y, u, v = synth_media.rgb_to_yuv420p(rgb)
    assert y.shape == (4, 4) and u.shape == v.shape == (2, 2)
    # Integer BT.601: white (235, 128, 128), red (82, 90, 240), black (16, 128, 128), blue (41, 240, 110).
    assert y[::2, ::2].tolist() == [[235, 82], [16, 41]]
    assert u.tolist() == [[128, 90], [128, 240]]
    assert v.tolist() == [[128, 240], [128, 110]]
    # Chroma of a mixed 2x2 block is the rounded mean of its pixels' chroma.
    mixed = np.array([[[255, 0, 0], [0, 0, 255]], [[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    assert synth_media.rgb_to_yuv420p(mixed)[1].tolist() == [[165]]  # (90 + 240) / 2


def test_video_decodes_close_to_its_frames_through_the_encoders_loader(small: CanonicalDataset) -> None:
    from mmrec.encoders.media import load_video

    row = small.items.iloc[0]
    jitter = synth_media.Jitter.draw(np.random.default_rng([0, synth.MEDIA_STREAM, 0]))
    source = np.stack(
        synth_media.video_frames(
            row.attr_category, row.attr_colour, row.attr_pattern, row.attr_motion, jitter
        )
    )
    clip = load_video(small.resolve_media(row.video), num_frames=synth_media.VIDEO_FRAMES)
    assert clip.frames.shape == source.shape
    assert clip.fps == synth_media.VIDEO_FPS
    err = np.abs(clip.frames.astype(np.int64) - source)
    assert err.mean() < 3.0 and np.percentile(err, 99) < 40, (err.mean(), np.percentile(err, 99))


def test_more_users_keep_the_items(small: CanonicalDataset, tmp_path: Path) -> None:
    bigger = _generate(tmp_path / "bigger", num_items=SMALL["num_items"], num_users=SMALL["num_users"] + 5)
    pd.testing.assert_frame_equal(bigger.items, small.items)
    first = small.interactions
    assert (
        bigger.interactions[bigger.interactions["user_id"].isin(set(first["user_id"]))]
        .reset_index(drop=True)
        .equals(first)
    )


def test_overwrite_false_refuses_existing_folder(small: CanonicalDataset, tmp_path: Path) -> None:
    before = _file_hashes(small.path)
    with pytest.raises(DatasetError, match="overwrite"):
        _generate(small.path, **SMALL)
    assert _file_hashes(small.path) == before
    (tmp_path / "occupied").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        _generate(tmp_path / "occupied", **SMALL)
    from mmrec.cli import main

    args = ["data", "synth", "--out", str(tmp_path / "occupied"), "--num_items", "20", "--num_users", "2"]
    assert main(["--no_progress", *args]) == 1


def test_overwrite_true_replaces(tmp_path: Path) -> None:
    out = tmp_path / "d"
    _generate(out, num_items=20, num_users=3, seed=3)
    (out / "stray.txt").write_text("left over")
    ds = _generate(out, num_items=20, num_users=3, seed=4, overwrite=True)
    assert ds.meta["synth"]["seed"] == 4
    assert not (out / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(synth, "write_video", broken)
    with pytest.raises(RuntimeError, match="encoder exploded"):
        _generate(tmp_path / "d", num_items=20, num_users=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_items": 5}, "num_items"), ({"num_users": 0}, "num_users"), ({"seed": -1}, "seed")],
)
def test_bad_arguments_are_explained(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _generate(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def test_cli_main(tmp_path: Path) -> None:
    from mmrec.cli import main

    out = tmp_path / "cli"
    args = ["data", "synth", "--out", str(out), "--num_items", "20", "--num_users", "4", "--seed", "2"]
    assert main(["--no_progress", *args]) == 0
    ds = CanonicalDataset.load(out)
    assert ds.counts["items"] == 20 and ds.meta["synth"]["seed"] == 2


# --- the media and the sequences really carry the latent attributes ------------------------------------


def test_image_colour_clusters_by_attr_colour(medium: CanonicalDataset) -> None:
    means = np.stack([_garment_pixels(medium.resolve_media(p)).mean(0) for p in medium.items["image"]])
    labels = medium.items["attr_colour"].to_numpy()
    names = sorted(set(labels))
    centroids = np.stack([means[labels == c].mean(0) for c in names])
    nearest = np.array(names)[np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    assert (nearest == labels).mean() == 1.0
    palette_names = list(PALETTE)
    palette = np.array([PALETTE[c] for c in palette_names], dtype=np.float64)
    named = np.array(palette_names)[np.argmin(((means[:, None] - palette[None]) ** 2).sum(-1), axis=1)]
    assert (named == labels).mean() >= 0.95


def _second_colour_share(path: str) -> float:
    """Share of the garment's interior pixels taken by its second most common exact colour."""
    img = np.asarray(Image.open(path).convert("RGB"))
    m = np.abs(img.astype(np.int64) - np.array(BACKGROUND)).sum(-1) > 120
    m &= np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)  # drop the edges
    counts = np.sort(np.unique(img[m], axis=0, return_counts=True)[1])[::-1]
    return float(counts[1] / counts.sum()) if len(counts) > 1 else 0.0


def test_image_pattern_is_visible(medium: CanonicalDataset) -> None:
    share = np.array([_second_colour_share(medium.resolve_media(p)) for p in medium.items["image"]])
    pattern = medium.items["attr_pattern"].to_numpy()
    assert set(pattern) == set(synth_media.PATTERNS)
    assert share[pattern == "solid"].max() < 0.04, "solid garments should be one colour"
    assert share[pattern != "solid"].min() > 0.06, "patterned garments should show a second colour"
    # Stripes / diagonals / checks cover more of the garment than dots.
    for name in ("stripes", "diagonal", "checks"):
        assert share[pattern == name].min() > share[pattern == "dots"].max(), name


def test_audio_dominant_frequency_encodes_attr_sound(medium: CanonicalDataset) -> None:
    families = list(SOUNDS)
    freqs = np.array([SOUNDS[f].freq for f in families])
    for row in medium.items.itertuples():
        x, sr = sf.read(medium.resolve_media(row.audio), dtype="float64")
        peak = np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(np.abs(np.fft.rfft(x)))]
        assert families[int(np.argmin(np.abs(np.log(freqs / peak))))] == row.attr_sound, row.item_id


def _motion_of(frames: list[np.ndarray]) -> str:
    """Classify a clip's motion from the garment mask's centroid and area over time."""
    masks = [np.abs(f.astype(np.int64) - np.array(BACKGROUND)).sum(-1) > 40 for f in frames]
    yy, xx = np.mgrid[0 : masks[0].shape[0], 0 : masks[0].shape[1]]
    area = np.array([m.sum() for m in masks], dtype=np.float64)
    cx = np.array([(xx * m).sum() for m in masks]) / area
    cy = np.array([(yy * m).sum() for m in masks]) / area
    if cx.std() > 3:
        return "sliding"
    if cy.std() > 3:
        return "bouncing"
    if area.std() / area.mean() > 0.15:
        return "pulsing"
    changed = np.mean([(masks[0] ^ m).sum() / (masks[0] | m).sum() for m in masks])
    return "rotating" if changed > 0.1 else "static"


def test_video_motion_encodes_attr_motion(medium: CanonicalDataset) -> None:
    subset = medium.items.head(80)  # decoding is the slow part; 80 items cover every motion
    assert set(subset["attr_motion"]) == set(synth_media.MOTIONS)
    for row in subset.itertuples():
        frames, _, _ = _video(medium.resolve_media(row.video))
        assert _motion_of(frames) == row.attr_motion, row.item_id
        first = np.abs(frames[0].astype(np.int64) - np.array(BACKGROUND)).sum(-1) > 120
        assert first.sum() > 50, "the garment is visible in the first frame"


def test_text_hides_pattern_sound_motion_and_most_colours(medium: CanonicalDataset) -> None:
    items = medium.items
    text = (items["title"] + " " + items["description"]).str.lower()
    hidden = [*synth_media.PATTERNS[1:], *SOUNDS, *synth_media.MOTIONS]
    for word in hidden:
        assert not text.str.contains(rf"\b{word}\b").any(), word
    colour_in_title = [c in t.lower().split() for c, t in zip(items["attr_colour"], items["title"])]
    assert 0.2 <= np.mean(colour_in_title) <= 0.6
    for c in PALETTE:
        assert not items["description"].str.lower().str.contains(rf"\b{c}\b").any()
    # ...while material, fit and occasion are only in the text.
    assert all(m in d.lower() for m, d in zip(items["attr_material"], items["description"]))


def _majority_share(df: pd.DataFrame, column: str) -> float:
    return float(df.groupby("user_id")[column].agg(lambda s: s.value_counts().iloc[0] / len(s)).mean())


@pytest.mark.parametrize("attr", ["attr_colour", "attr_pattern", "attr_sound"])
def test_user_sequences_follow_media_tastes(medium: CanonicalDataset, attr: str) -> None:
    joined = medium.interactions.join(medium.items.set_index("item_id")[[attr]], on="item_id")
    share = _majority_share(joined, attr)
    # Chance level with the same item popularity: give every interaction a random other interaction's item.
    shuffled = joined.assign(**{attr: np.random.default_rng(0).permutation(joined[attr].to_numpy())})
    chance = _majority_share(shuffled, attr)
    assert share > chance + 0.1, (share, chance)


def test_next_item_depends_on_previous_item(medium: CanonicalDataset) -> None:
    joined = medium.interactions.join(medium.items.set_index("item_id")[["attr_category"]], on="item_id")
    joined["prev"] = joined.groupby("user_id")["attr_category"].shift()
    pairs = joined.dropna(subset=["prev"])
    marginal = pairs["attr_category"].value_counts(normalize=True)
    lifts = []
    for prev, nxt in synth.NEXT_CATEGORY.items():
        rows = pairs[pairs["prev"] == prev]
        if len(rows) >= 20:
            lifts.append((rows["attr_category"] == nxt[0]).mean() / marginal[nxt[0]])
    assert len(lifts) >= 4 and np.mean(lifts) > 2.0, lifts


def test_popularity_has_a_long_tail(medium: CanonicalDataset) -> None:
    counts = medium.interactions["item_id"].value_counts().reindex(medium.items["item_id"], fill_value=0)
    assert counts.max() > 10 * max(counts.median(), 1) / 2
    assert (counts <= counts.mean() / 4).mean() >= 0.15, "expected a tail of rarely seen items"


# --- the shipped copy ---------------------------------------------------------------------------------


#: The zlib that compressed the shipped PNGs (Pillow uses the system's libz). PNG bytes are a function of
#: the pixels and the deflate implementation; every other file's bytes depend only on pinned wheels.
SHIPPED_PNG_ZLIB = "1.2.13"


def _assert_same_file(shipped: Path, fresh: Path, rel: str) -> None:
    a, b = shipped / rel, fresh / rel
    assert a.is_file(), f"{a} is missing from the shipped demo"
    if rel.endswith(".png") and features.version("zlib") != SHIPPED_PNG_ZLIB:
        # Another deflate implementation (zlib-ng, a patched zlib) compresses the same pixels differently.
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), rel
        return
    assert a.read_bytes() == b.read_bytes(), (
        f"{rel} differs from a fresh generation; regenerate assets/demo with "
        "`mmrec data synth --out assets/demo --overwrite` (see assets/README.md)."
    )


@pytest.mark.slow
def test_shipped_demo_matches_a_fresh_generation(repo_root: Path, tmp_path: Path) -> None:
    shipped = repo_root / "assets" / "demo"
    regenerate = "mmrec data synth --out assets/demo --overwrite"
    assert (shipped / "dataset.json").is_file(), f"assets/demo is missing; regenerate it with `{regenerate}`."
    fresh = _generate(tmp_path / "demo")
    meta = json.loads((shipped / "dataset.json").read_text(encoding="utf-8"))
    hint = f"assets/demo drifted from the generator; regenerate it with `{regenerate}`."
    assert meta["fingerprint"] == fresh.fingerprint, hint
    assert meta["synth"] == fresh.meta["synth"], hint
    assert (
        meta["counts"]
        == fresh.counts
        == {"users": 1200, "items": 240, "interactions": meta["counts"]["interactions"]}
    )
    shipped_files = {str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()}
    fresh_files = {str(p.relative_to(fresh.path)) for p in fresh.path.rglob("*") if p.is_file()}
    assert shipped_files == fresh_files, hint
    assert len(fresh_files) == 3 + 3 * 240
    for rel in sorted(fresh_files):  # every file, tables and JSON included
        _assert_same_file(shipped, fresh.path, rel)
    size = sum((shipped / f).stat().st_size for f in shipped_files)
    assert size < 5 * 1024 * 1024, f"assets/demo is {size / 1e6:.1f} MB; keep it under 5 MB"
