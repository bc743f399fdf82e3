"""The latent world of the synthetic demo shop: attributes, phrases, taste strengths, random streams.

Pure data read by :mod:`mmrec.datamodules.synth_items` (what items look like),
:mod:`mmrec.datamodules.synth_users` (how users choose and review them) and :mod:`mmrec.datamodules.synth`
(the media). Changing a value changes the generated catalogue: bump ``GENERATOR_VERSION`` in
:mod:`mmrec.datamodules.synth` with it.
"""

from __future__ import annotations

from mmrec.datamodules.synth_looks import PALETTE, SOUNDS

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
ITEM_STREAM, POPULARITY_STREAM, USER_STREAM, MEDIA_STREAM = 1, 2, 3, 4
