"""The item table of the synthetic demo shop: latent attributes, title, description, price, popularity.

:func:`make_items` draws every item from its own random stream (``[seed, ITEM_STREAM, index]``), so the
first items stay the same when more are asked for; popularity is Zipf-like with an exponential tail,
computed in ``decimal`` so that the stored floats are bit-identical on every CPU.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext
from typing import Any

import numpy as np
import pandas as pd

from mmrec.datamodules.synth_looks import CATEGORIES, MOTIONS, PATTERNS
from mmrec.datamodules.synth_world import (
    BRANDS,
    CATEGORY_INFO,
    CLOTHING_FITS,
    COLOUR_IN_TITLE_RATE,
    COLOURS,
    DESCRIPTION_TEMPLATES,
    FITS,
    ITEM_STREAM,
    MATERIAL_CARE,
    MATERIAL_PRICE,
    NOUN_PHRASE,
    OCCASIONS,
    PATTERN_WEIGHTS,
    POPULARITY_EXPONENT,
    POPULARITY_STREAM,
    POPULARITY_TAIL,
    SOUND_FAMILIES,
    STYLES,
)


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


def make_items(seed: int, num_items: int) -> pd.DataFrame:
    """The item table: canonical columns, latent ``attr_*`` columns and media paths."""
    width = max(4, len(str(num_items - 1)))
    ranks = np.random.default_rng([seed, POPULARITY_STREAM]).permutation(num_items)
    popularity = _popularity(ranks)
    rows: list[dict[str, Any]] = []
    for idx in range(num_items):
        rng = np.random.default_rng([seed, ITEM_STREAM, idx])
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
