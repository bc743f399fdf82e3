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

Regenerate the shipped copy with ``mmrec data synth --out assets/demo --overwrite``.
"""

from __future__ import annotations

import shutil
import uuid
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmrec.data.canonical import CanonicalDataset, DatasetError, write_dataset
from mmrec.datamodules.synth_media import (
    AUDIO_SECONDS,
    CATEGORIES,
    IMAGE_SIZE,
    MOTIONS,
    PALETTE,
    PATTERNS,
    SAMPLE_RATE,
    SOUNDS,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_SIZE,
    Jitter,
    render_audio,
    render_image,
    video_frames,
    write_audio,
    write_image,
    write_video,
)

__all__ = ["DATASET_NAME", "GENERATOR_VERSION", "generate_demo_catalogue"]

#: Bumped whenever the generated content changes for a given seed.
GENERATOR_VERSION = 2  # 2: MPEG-4 Part 2 video, CPU-independent popularity (same seed, other bytes)
DATASET_NAME = "demo-clothing"
MIN_ITEMS = 20  # the longest user sequence has 20 distinct items

COLOURS: tuple[str, ...] = tuple(PALETTE)
SOUND_FAMILIES: tuple[str, ...] = tuple(SOUNDS)
OCCASIONS: dict[str, str] = {
    "office": "the office",
    "weekend": "relaxed weekends",
    "evening": "evenings out",
    "travel": "travel days",
    "outdoor": "outdoor walks",
}
# category -> (plural for the categories list, group, base price, materials)
CATEGORY_INFO: dict[str, tuple[str, str, float, tuple[str, ...]]] = {
    "shirt": ("Shirts", "Tops", 24.0, ("cotton", "linen", "silk", "polyester")),
    "dress": ("Dresses", "Dresses", 49.0, ("cotton", "silk", "linen", "polyester")),
    "trousers": ("Trousers", "Bottoms", 39.0, ("cotton", "denim", "wool", "linen")),
    "jacket": ("Jackets", "Outerwear", 79.0, ("denim", "wool", "leather", "polyester")),
    "skirt": ("Skirts", "Bottoms", 34.0, ("cotton", "denim", "wool", "silk")),
    "shoes": ("Shoes", "Footwear", 59.0, ("leather", "canvas", "suede")),
    "hat": ("Hats", "Accessories", 19.0, ("wool", "straw", "cotton")),
    "bag": ("Bags", "Accessories", 44.0, ("leather", "canvas", "suede")),
}
MATERIAL_PRICE: dict[str, float] = {
    "cotton": 1.0, "linen": 1.15, "silk": 1.6, "polyester": 0.8, "denim": 1.1,
    "wool": 1.3, "leather": 1.8, "canvas": 0.9, "suede": 1.5, "straw": 0.85,
}  # fmt: skip
MATERIAL_CARE: dict[str, str] = {
    "cotton": "Machine washable.", "linen": "Machine washable; softens with every wash.",
    "silk": "Dry clean only.", "polyester": "Machine washable and quick to dry.",
    "denim": "Wash inside out.", "wool": "Hand wash cold.", "leather": "Wipe clean with a damp cloth.",
    "canvas": "Spot clean.", "suede": "Brush to clean.", "straw": "Keep dry.",
}  # fmt: skip
FITS: dict[str, tuple[str, ...]] = {
    "Footwear": ("narrow", "regular", "wide"),
    "Accessories": ("compact", "classic", "roomy"),
}
CLOTHING_FITS: tuple[str, ...] = ("slim", "regular", "relaxed", "oversized", "tailored")
STYLES: tuple[str, ...] = (
    "Classic",
    "Everyday",
    "Relaxed",
    "Modern",
    "Vintage",
    "Essential",
    "Signature",
    "Lightweight",
)
BRANDS: tuple[str, ...] = (
    "Ardent Loom", "Brisk & Bramble", "Calder Row", "Dunmore", "Elmsworth",
    "Fernvale", "Glenhollow", "Halden", "Ivory Wren", "Juniper Mill",
)  # fmt: skip
#: Outfit completion: the two categories most often bought after each category.
NEXT_CATEGORY: dict[str, tuple[str, str]] = {
    "shirt": ("trousers", "jacket"),
    "dress": ("shoes", "bag"),
    "trousers": ("shirt", "shoes"),
    "jacket": ("trousers", "hat"),
    "skirt": ("shirt", "bag"),
    "shoes": ("bag", "dress"),
    "hat": ("jacket", "skirt"),
    "bag": ("hat", "dress"),
}
COLOUR_IN_TITLE_RATE = 0.4
PATTERN_WEIGHTS = (0.3, 0.2, 0.17, 0.17, 0.16)
COLOUR_TASTE_WEIGHTS = (0.16, 0.1, 0.1, 0.13, 0.15, 0.1, 0.11, 0.15)
POPULARITY_EXPONENT = 0.7
POPULARITY_TAIL = 5.0
#: Range of each user's taste strength (log-odds bonus for an item matching the favourite value).
TASTE_STRENGTH: dict[str, tuple[float, float]] = {
    "colour": (3.0, 5.0),
    "pattern": (2.0, 4.5),
    "sound": (2.0, 4.5),
    "motion": (1.0, 3.0),
    "occasion": (1.0, 3.0),
}
#: Range of each user's popularity bias (multiplies the item's log popularity).
POPULARITY_BIAS = (0.8, 1.3)
T0 = 1_672_531_200  # 2023-01-01T00:00:00Z

PATTERN_PHRASE: dict[str, str] = {
    "solid": "clean solid look",
    "stripes": "stripes",
    "dots": "polka dots",
    "checks": "checked pattern",
    "diagonal": "diagonal stripes",
}
SOUND_PHRASE: dict[str, str] = {
    "deep": "deep, soft rustle",
    "warm": "warm, humming rustle",
    "mellow": "mellow swish",
    "bright": "bright swish",
    "crisp": "crisp rustle",
    "shrill": "sharp, chiming rustle",
}
MOTION_PHRASE: dict[str, str] = {
    "rotating": "spinning around",
    "sliding": "gliding across",
    "bouncing": "bouncing along",
    "pulsing": "pulsing in and out",
}
#: How to say "this <item>" for categories whose noun is plural.
NOUN_PHRASE: dict[str, str] = {"shoes": "pair of shoes", "trousers": "pair of trousers"}
DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{Noun} in {material} with a {fit}, ideal for {occasion}.",
    "Made from {material} with a {fit}, this {noun_phrase} is a dependable pick for {occasion}.",
    "{Material} {noun} with a {fit}; made for {occasion}.",
)
OPENERS: dict[str, tuple[str, ...]] = {
    "high": (
        "Really happy with this {noun_phrase}.",
        "Great {noun}, exactly as hoped.",
        "Lovely {noun}.",
        "A keeper.",
    ),
    "mid": ("It's an okay {noun_phrase}.", "Decent {noun}.", "Fine for the price."),
    "low": ("Not for me.", "Disappointed with this {noun_phrase}.", "Sending this {noun_phrase} back."),
}

# Random-stream tags: each part of the generator draws from its own stream, so e.g. adding users
# never changes the items and the first users stay the same when more are added.
_ITEM_STREAM, _POPULARITY_STREAM, _USER_STREAM, _MEDIA_STREAM = 1, 2, 3, 4


def _check_args(seed: int, num_items: int, num_users: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    if num_items < MIN_ITEMS:
        raise ValueError(
            f"num_items must be at least {MIN_ITEMS} (users have up to 20 distinct items); got {num_items}."
        )
    if num_users < 1:
        raise ValueError(f"num_users must be at least 1; got {num_users}.")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# Stored floats that need exp / log are computed with `decimal`, whose exp and ln are correctly rounded in
# software: NumPy's SIMD exp / power (and libm's CPU-dispatched variants) differ in the last bits between
# CPUs, which changed attr_popularity, items.parquet and the dataset fingerprint from machine to machine.
_DECIMAL = Context(prec=40)


def _exp(x: float | Decimal) -> float:
    """``e**x`` with the same bits on every CPU, OS and libm (see ``_DECIMAL``)."""
    return float(Decimal(x).exp(_DECIMAL))


def _popularity(ranks: np.ndarray) -> np.ndarray:
    """Item popularity from popularity ranks: Zipf head times an exponential tail, summing to 1.

    The last items are ~e^-POPULARITY_TAIL rarer than Zipf alone. Computed in ``decimal`` (every operation
    in ``_DECIMAL``, not the thread's context), so the result is bit-identical on every machine.
    """
    n = len(ranks)
    with localcontext(_DECIMAL):
        a, tail = Decimal(POPULARITY_EXPONENT), Decimal(POPULARITY_TAIL)
        weights = [(-a * Decimal(int(r) + 1).ln() - tail * int(r) / n).exp() for r in ranks]
        total = sum(weights, Decimal(0))
        return np.array([float(w / total) for w in weights], dtype=np.float64)


def _make_items(seed: int, num_items: int) -> pd.DataFrame:
    """The item table: canonical columns, latent ``attr_*`` columns and media paths."""
    width = max(4, len(str(num_items - 1)))
    ranks = np.random.default_rng([seed, _POPULARITY_STREAM]).permutation(num_items)
    popularity = _popularity(ranks)
    rows: list[dict[str, Any]] = []
    for idx in range(num_items):
        rng = np.random.default_rng([seed, _ITEM_STREAM, idx])
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
        plural, group, base_price, materials = CATEGORY_INFO[category]
        colour = COLOURS[rng.integers(len(COLOURS))]
        pattern = PATTERNS[rng.choice(len(PATTERNS), p=PATTERN_WEIGHTS)]
        sound = SOUND_FAMILIES[rng.integers(len(SOUND_FAMILIES))]
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        material = materials[rng.integers(len(materials))]
        fits = FITS.get(group, CLOTHING_FITS)
        fit = fits[rng.integers(len(fits))]
        occasion = list(OCCASIONS)[rng.integers(len(OCCASIONS))]
        style = STYLES[rng.integers(len(STYLES))]
        brand = BRANDS[rng.integers(len(BRANDS))]
        colour_in_title = bool(rng.random() < COLOUR_IN_TITLE_RATE)
        template = DESCRIPTION_TEMPLATES[rng.integers(len(DESCRIPTION_TEMPLATES))]
        price = base_price * MATERIAL_PRICE[material] * _exp(0.15 * rng.standard_normal())
        quality = round(float(0.4 * rng.standard_normal()), 4)

        title = " ".join([style, *([colour] if colour_in_title else []), material, category])
        occasion_phrase = OCCASIONS[occasion]
        description = template.format(
            noun=category,
            Noun=_capitalise(category),
            noun_phrase=NOUN_PHRASE.get(category, category),
            fit=f"{fit} {'shape' if group == 'Accessories' else 'fit'}",
            material=material,
            Material=_capitalise(material),
            occasion=occasion_phrase,
        )
        item_id = f"i{idx:0{width}d}"
        rows.append(
            {
                "item_id": item_id,
                "title": title,
                "description": f"{description} {MATERIAL_CARE[material]}",
                "categories": list(dict.fromkeys(["Clothing", group, plural])),
                "brand": brand,
                "price": max(4.99, round(price) - 0.01),
                "image": f"media/images/{item_id}.png",
                "audio": f"media/audio/{item_id}.wav",
                "video": f"media/video/{item_id}.mp4",
                "attr_category": category,
                "attr_colour": colour,
                "attr_pattern": pattern,
                "attr_sound": sound,
                "attr_motion": motion,
                "attr_material": material,
                "attr_fit": fit,
                "attr_occasion": occasion,
                "attr_popularity": float(popularity[idx]),
                "attr_quality": quality,
            }
        )
    return pd.DataFrame(rows)


def _review(
    rng: np.random.Generator, rating: int, item: dict[str, Any], user: dict[str, Any], liked: list[str]
) -> str:
    """A review sentence naming the attributes the user liked (or, for low ratings, missed)."""
    noun = item["attr_category"]
    tier = "high" if rating >= 4 else ("mid" if rating == 3 else "low")
    opener = OPENERS[tier][rng.integers(len(OPENERS[tier]))].format(
        noun=noun, noun_phrase=NOUN_PHRASE.get(noun, noun)
    )
    praise = {
        "colour": f"The {item['attr_colour']} colour is just what I wanted.",
        "pattern": f"I love the {PATTERN_PHRASE[item['attr_pattern']]}.",
        "sound": f"The fabric makes a {SOUND_PHRASE[item['attr_sound']]} when it moves.",
        "motion": f"The video of it {MOTION_PHRASE[item['attr_motion']]} sold it to me.",
        "occasion": f"Perfect for {OCCASIONS[item['attr_occasion']]}.",
    }
    complaint = {
        "colour": f"I usually go for {user['colour']}, and the {item['attr_colour']} did not win me over.",
        "pattern": f"I am not a fan of the {PATTERN_PHRASE[item['attr_pattern']]}.",
        "sound": f"The {SOUND_PHRASE[item['attr_sound']]} of the fabric put me off.",
    }
    missed = [k for k in complaint if k not in liked]
    rng.shuffle(liked)
    rng.shuffle(missed)
    if tier == "high":
        reasons = [praise[k] for k in liked[:2]] or [f"The {item['attr_material']} feels nice for the price."]
    elif tier == "mid":
        reasons = [praise[k] for k in liked[:1]] + [complaint[k] for k in missed[:1]]
        reasons = reasons or [f"The {item['attr_material']} is fine, nothing special."]
    else:
        reasons = [complaint[k] for k in missed[:2]] or ["It did not work for me."]
    return " ".join([opener, *reasons])


def _make_interactions(items: pd.DataFrame, seed: int, num_users: int, show_progress: bool) -> pd.DataFrame:
    """Sample every user's sequence from their tastes, popularity and the previous item."""
    n = len(items)
    cat = items["attr_category"].map(CATEGORIES.index).to_numpy()
    colour = items["attr_colour"].map(COLOURS.index).to_numpy()
    pattern = items["attr_pattern"].map(PATTERNS.index).to_numpy()
    sound = items["attr_sound"].map(SOUND_FAMILIES.index).to_numpy()
    motion = items["attr_motion"].map(MOTIONS.index).to_numpy()
    occasion = items["attr_occasion"].map(list(OCCASIONS).index).to_numpy()
    log_pop = np.log(items["attr_popularity"].to_numpy())
    quality = items["attr_quality"].to_numpy()
    # log P(next category | previous category): 0.4 and 0.25 for the two outfit partners, rest shared.
    n_cat = len(CATEGORIES)
    trans = np.full((n_cat, n_cat), 0.35 / (n_cat - 2))
    for c, (first, second) in NEXT_CATEGORY.items():
        trans[CATEGORIES.index(c), CATEGORIES.index(first)] = 0.4
        trans[CATEGORIES.index(c), CATEGORIES.index(second)] = 0.25
    log_trans = np.log(trans)
    item_records = items.to_dict("records")
    width = max(5, len(str(num_users - 1)))

    users, item_ids, stamps, ratings, reviews = [], [], [], [], []
    for u in tqdm(range(num_users), desc="synth users", unit="user", disable=not show_progress):
        rng = np.random.default_rng([seed, _USER_STREAM, u])
        fav = {
            "colour": int(rng.choice(len(COLOURS), p=COLOUR_TASTE_WEIGHTS)),
            "pattern": int(rng.integers(len(PATTERNS))),
            "sound": int(rng.integers(len(SOUND_FAMILIES))),
            "motion": int(rng.integers(len(MOTIONS))),
            "occasion": int(rng.integers(len(OCCASIONS))),
        }
        weight = {k: rng.uniform(lo, hi) for k, (lo, hi) in TASTE_STRENGTH.items()}
        pop_bias = rng.uniform(*POPULARITY_BIAS)
        length = min(int(rng.integers(6, 21)), n)
        t = T0 + int(rng.integers(0, 300 * 86_400))
        match = {
            "colour": colour == fav["colour"],
            "pattern": pattern == fav["pattern"],
            "sound": sound == fav["sound"],
            "motion": motion == fav["motion"],
            "occasion": occasion == fav["occasion"],
        }
        base = pop_bias * log_pop + sum(weight[k] * match[k] for k in match)
        user_view = {"colour": COLOURS[fav["colour"]]}
        seen = np.zeros(n, dtype=bool)
        prev: int | None = None
        uid = f"u{u:0{width}d}"
        for _ in range(length):
            score = base.copy()
            if prev is not None:
                score += log_trans[cat[prev], cat] + 0.5 * (colour == colour[prev])
            score[seen] = -np.inf
            i = int(np.argmax(score + rng.gumbel(size=n)))
            seen[i] = True
            prev = i
            liked = [k for k in ("colour", "pattern", "sound", "motion", "occasion") if match[k][i]]
            affinity = 0.8 * match["colour"][i] + 0.6 * match["pattern"][i] + 0.6 * match["sound"][i]
            affinity += 0.3 * match["occasion"][i]
            rating = int(np.clip(round(2.4 + affinity + quality[i] + 0.5 * rng.standard_normal()), 1, 5))
            users.append(uid)
            item_ids.append(item_records[i]["item_id"])
            stamps.append(t)
            ratings.append(rating)
            reviews.append(_review(rng, rating, item_records[i], user_view, liked))
            t += 3_600 + int(rng.exponential(3 * 86_400))
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": item_ids,
            "timestamp": np.asarray(stamps, dtype=np.int64),
            "rating": np.asarray(ratings, dtype=np.float32),
            "review": reviews,
        }
    )


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
        rng = np.random.default_rng([seed, _MEDIA_STREAM, idx])
        jitter = Jitter.draw(rng)
        audio_rng = np.random.default_rng([seed, _MEDIA_STREAM, idx, 1])
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
    items = _make_items(seed, num_items)
    interactions = _make_interactions(items, seed, num_users, show_progress)

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
