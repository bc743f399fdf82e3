"""The shipped demo catalogue: a small, deterministic, clothing-like shop with image, audio and video.

:func:`generate_demo_catalogue` writes a canonical dataset (``items.parquet``, ``interactions.parquet``,
``dataset.json`` through :func:`~mmrec.data.canonical.write_dataset`, ``source_format="synth"``)
with its media inside the dataset folder (``media/images/i0007.png``, ``media/audio/i0007.wav``,
``media/video/i0007.mp4``; the ``image`` / ``audio`` / ``video`` columns hold these relative paths).

How the data is built, so that models have something real to learn:

- **Items** have latent attributes: category (the silhouette), colour, pattern, sound family, motion
  style, material, fit and occasion. They are recorded as ``attr_*`` item columns so tests and
  benchmarks can check what a model picked up. Each modality carries signal the others lack: the
  *pattern* is only in the image (and video), the *sound* only in the audio, the *motion* only in the
  video, *material / fit / occasion* only in the text, and the *colour* is always in the image but in
  the title for only ~40 % of items.
- **Users** have latent tastes (a favourite colour, pattern, sound family, motion and occasion, each
  with its own strength) and a popularity bias. Each user's 6-20 interactions are sampled one after the
  other: the next item's score is taste match + popularity + an outfit-completion term on the previous
  item's category (``shirt -> trousers / jacket``, ``dress -> shoes / bag``...) + a small bonus for
  repeating the previous colour. Popularity is Zipf-like, so a long tail of items is rarely seen and
  those items are best described by their media, not their ids.
- **Interactions** have increasing int64 timestamps (seconds), a 1-5 rating driven by how well the item
  matches the user's taste, and a review sentence naming the attributes the user liked (or missed).

Everything is a function of ``seed`` (per-item and per-user random streams), so the same seed gives
byte-identical files with the same library versions; see ``assets/README.md`` for what is guaranteed
across machines.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "demo"
    >>> ds = generate_demo_catalogue(out, num_items=24, num_users=30, show_progress=False)
    >>> ds.counts["items"], ds.counts["users"]
    (24, 30)
    >>> ds.items.loc[7, "image"]
    'media/images/i0007.png'

The parts: the latent world (attributes, phrases, random streams) is :mod:`mmrec.datamodules.synth_world`,
the item table :mod:`mmrec.datamodules.synth_items`, the users' interactions
:mod:`mmrec.datamodules.synth_users`, the media rendering :mod:`mmrec.datamodules.synth_media` (what the
attributes look and sound like: :mod:`mmrec.datamodules.synth_looks`; the file writers:
:mod:`mmrec.datamodules.synth_files`).

Regenerate the shipped copy with ``mmrec data synth --out assets/demo --overwrite``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmrec.data.canonical import CanonicalDataset, DatasetError, write_dataset
from mmrec.datamodules.synth_files import write_audio, write_image, write_video
from mmrec.datamodules.synth_items import make_items
from mmrec.datamodules.synth_looks import (
    AUDIO_SECONDS,
    CATEGORIES,
    IMAGE_SIZE,
    MOTIONS,
    PATTERNS,
    SAMPLE_RATE,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_SIZE,
)
from mmrec.datamodules.synth_media import Jitter, render_audio, render_image, video_frames
from mmrec.datamodules.synth_users import make_interactions
from mmrec.datamodules.synth_world import COLOURS, MEDIA_STREAM, NEXT_CATEGORY, OCCASIONS, SOUND_FAMILIES

# the world (synth_world), the items (synth_items) and the users (synth_users) live in modules of their own
__all__ = [
    "COLOURS",
    "DATASET_NAME",
    "GENERATOR_VERSION",
    "MEDIA_STREAM",
    "NEXT_CATEGORY",
    "OCCASIONS",
    "SOUND_FAMILIES",
    "generate_demo_catalogue",
    "make_interactions",
    "make_items",
]

#: Bumped whenever the generated content changes for a given seed.
GENERATOR_VERSION = 2  # 2: MPEG-4 Part 2 video, CPU-independent popularity (same seed, other bytes)
DATASET_NAME = "demo-clothing"
MIN_ITEMS = 20  # the longest user sequence has 20 distinct items


def _check_args(seed: int, num_items: int, num_users: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    if num_items < MIN_ITEMS:
        raise ValueError(
            f"num_items must be at least {MIN_ITEMS} (users have up to 20 distinct items); got {num_items}."
        )
    if num_users < 1:
        raise ValueError(f"num_users must be at least 1; got {num_users}.")


def _render_media(items: pd.DataFrame, root: Path, seed: int, show_progress: bool) -> None:
    """Write every item's PNG, WAV and MP4 under ``root`` (the ``media`` staging folder)."""
    for sub in ("images", "audio", "video"):
        (root / sub).mkdir(parents=True)
    rows = items[
        [
            "image",
            "audio",
            "video",
            "attr_category",
            "attr_colour",
            "attr_pattern",
            "attr_sound",
            "attr_motion",
        ]
    ]
    for idx, row in enumerate(
        tqdm(
            rows.itertuples(index=False),
            total=len(rows),
            desc="synth media",
            unit="item",
            disable=not show_progress,
        )
    ):
        rng = np.random.default_rng([seed, MEDIA_STREAM, idx])
        jitter = Jitter.draw(rng)
        audio_rng = np.random.default_rng([seed, MEDIA_STREAM, idx, 1])
        # Paths in the table are relative to the dataset folder and start with "media/".
        write_image(
            root.parent / row.image,
            render_image(row.attr_category, row.attr_colour, row.attr_pattern, jitter),
        )
        write_audio(root.parent / row.audio, render_audio(row.attr_sound, audio_rng))
        frames = video_frames(row.attr_category, row.attr_colour, row.attr_pattern, row.attr_motion, jitter)
        write_video(root.parent / row.video, frames)


def generate_demo_catalogue(
    out: str | Path,
    *,
    seed: int = 0,
    num_items: int = 240,
    num_users: int = 1200,
    overwrite: bool = False,
    show_progress: bool = True,
) -> CanonicalDataset:
    """Generate the synthetic clothing shop as a canonical dataset with its media, atomically.

    Args:
        out: destination dataset folder (created; its parent is created too).
        seed: non-negative random seed; the same seed gives the same files.
        num_items: number of items (at least 20).
        num_users: number of users, each with 6-20 interactions.
        overwrite: replace ``out`` if it exists (otherwise an existing folder is an error).
        show_progress: show tqdm progress bars on stderr.

    Returns:
        The written dataset, loaded (``ds.items`` has the canonical columns plus ``attr_*`` columns).

    Raises:
        DatasetError: ``out`` exists and ``overwrite`` is false (nothing is written).
        ValueError: a count or the seed is out of range.

    Example:
        >>> import tempfile, pathlib
        >>> ds = generate_demo_catalogue(pathlib.Path(tempfile.mkdtemp()) / "demo", num_items=20,
        ...                              num_users=5, show_progress=False)
        >>> ds.meta["source_format"], sorted(p.name for p in (ds.path / "media").iterdir())
        ('synth', ['audio', 'images', 'video'])
    """
    _check_args(seed, num_items, num_users)
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise DatasetError(
            f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it, or choose another "
            "folder (nothing was written)."
        )
    items = make_items(seed, num_items)
    interactions = make_interactions(items, seed, num_users, show_progress)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.synth-{uuid.uuid4().hex[:8]}"
    try:
        _render_media(items, staging / "media", seed, show_progress)
        meta = {
            "synth": {
                "generator_version": GENERATOR_VERSION,
                "seed": int(seed),
                "num_items": int(num_items),
                "num_users": int(num_users),
                "attributes": {
                    "category": list(CATEGORIES),
                    "colour": list(COLOURS),
                    "pattern": list(PATTERNS),
                    "sound": list(SOUND_FAMILIES),
                    "motion": list(MOTIONS),
                    "occasion": list(OCCASIONS),
                },
                "media": {
                    "image": f"PNG, {IMAGE_SIZE}x{IMAGE_SIZE} RGB",
                    "audio": f"WAV, mono 16-bit PCM, {SAMPLE_RATE} Hz, {AUDIO_SECONDS} s",
                    "video": f"MP4, MPEG-4 Part 2 yuv420p, {VIDEO_FRAMES} frames {VIDEO_SIZE}x{VIDEO_SIZE} at {VIDEO_FPS} fps",
                },
                "licence": "Generated by mmrec's own code (Apache-2.0); contains no third-party data.",
            }
        }
        return write_dataset(
            out,
            items,
            interactions,
            name=DATASET_NAME,
            source_format="synth",
            overwrite=overwrite,
            extra_meta=meta,
            media_dirs=[str(staging / "media")],
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
