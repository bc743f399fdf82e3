"""The interactions of the synthetic demo shop: users with latent tastes choose, rate and review items.

:func:`make_interactions` samples each user's sequence from their own random stream
(``[seed, USER_STREAM, user]``): taste match + popularity + an outfit-completion term on the previous item's
category, a rating from how well the item matches, and a review naming what the user liked or missed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmrec.datamodules.synth_looks import CATEGORIES, MOTIONS, PATTERNS
from mmrec.datamodules.synth_world import (
    COLOUR_TASTE_WEIGHTS,
    COLOURS,
    MOTION_PHRASE,
    NEXT_CATEGORY,
    NOUN_PHRASE,
    OCCASIONS,
    OPENERS,
    PATTERN_PHRASE,
    POPULARITY_BIAS,
    SOUND_FAMILIES,
    SOUND_PHRASE,
    T0,
    TASTE_STRENGTH,
    USER_STREAM,
)


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


def make_interactions(items: pd.DataFrame, seed: int, num_users: int, show_progress: bool) -> pd.DataFrame:
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
        rng = np.random.default_rng([seed, USER_STREAM, u])
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
