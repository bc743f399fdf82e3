"""What the synthetic demo's attributes look and sound like: media sizes, garment colours, patterns,
motions, sound families (pitch and timbre) and category silhouettes. Pure data, read by the renderer
(:mod:`mmrec.datamodules.synth_media`) and the world (:mod:`mmrec.datamodules.synth_world`). Changing a
value changes the generated catalogue: bump ``GENERATOR_VERSION`` in :mod:`mmrec.datamodules.synth` with it.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 48
VIDEO_SIZE = 48
SPRITE_SIZE = 32
VIDEO_FRAMES = 16
VIDEO_FPS = 8
SAMPLE_RATE = 16_000
AUDIO_SECONDS = 0.25
BACKGROUND: tuple[int, int, int] = (236, 236, 232)

#: Garment colours (name -> RGB). The image's garment pixels average close to these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (230, 200, 40),
    "green": (50, 150, 60),
    "blue": (40, 80, 200),
    "purple": (130, 60, 170),
    "pink": (235, 120, 170),
    "black": (35, 35, 35),
}
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks", "diagonal")
MOTIONS: tuple[str, ...] = ("rotating", "sliding", "bouncing", "pulsing")


@dataclass(frozen=True)
class SoundSpec:
    """A sound family: fundamental frequency and timbre.

    Attributes:
        freq: fundamental frequency in Hz (the spectrum's strongest peak).
        harmonics: amplitudes of partials ``k * freq`` for k = 1, 2, ...
        inharmonic: extra ``(ratio, amplitude)`` partials (bell-like timbre).
        tremolo_hz: amplitude-modulation rate (0 for none).
        decay_s: exponential decay time constant (0 for a sustained tone).
    """

    freq: float
    harmonics: tuple[float, ...]
    inharmonic: tuple[tuple[float, float], ...] = ()
    tremolo_hz: float = 0.0
    decay_s: float = 0.0


#: Sound families, ordered by pitch; neighbouring fundamentals are a fourth (x1.33) apart.
SOUNDS: dict[str, SoundSpec] = {
    "deep": SoundSpec(220.0, (1.0, 0.5, 0.25)),
    "warm": SoundSpec(294.0, (1.0, 0.3), tremolo_hz=6.0),
    "mellow": SoundSpec(392.0, (1.0, 0.0, 0.11, 0.0, 0.04)),
    "bright": SoundSpec(523.0, (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14)),
    "crisp": SoundSpec(698.0, (1.0, 0.5, 0.33, 0.25), decay_s=0.08),
    "shrill": SoundSpec(932.0, (1.0, 0.2), inharmonic=((2.76, 0.4),), decay_s=0.12),
}

# Silhouettes in unit coordinates (x right, y down, inside [0, 1]^2). Primitives:
# ("poly", points), ("ellipse", box), ("arc", box, start, end, width), ("cut", points, width) where a cut
# is a line drawn in background (a jacket's opening).
_Shape = tuple
SILHOUETTES: dict[str, tuple[_Shape, ...]] = {
    "shirt": (
        (
            "poly",
            [
                (0.36, 0.14),
                (0.44, 0.19),
                (0.56, 0.19),
                (0.64, 0.14),
                (0.92, 0.34),
                (0.82, 0.46),
                (0.71, 0.38),
                (0.71, 0.9),
                (0.29, 0.9),
                (0.29, 0.38),
                (0.18, 0.46),
                (0.08, 0.34),
            ],
        ),
    ),
    "dress": (
        (
            "poly",
            [
                (0.37, 0.06),
                (0.42, 0.06),
                (0.44, 0.2),
                (0.56, 0.2),
                (0.58, 0.06),
                (0.63, 0.06),
                (0.65, 0.4),
                (0.88, 0.93),
                (0.12, 0.93),
                (0.35, 0.4),
            ],
        ),
    ),
    "trousers": (
        (
            "poly",
            [(0.29, 0.06), (0.71, 0.06), (0.77, 0.94), (0.56, 0.94), (0.5, 0.36), (0.44, 0.94), (0.23, 0.94)],
        ),
    ),
    "jacket": (
        (
            "poly",
            [
                (0.35, 0.08),
                (0.65, 0.08),
                (0.88, 0.28),
                (0.96, 0.86),
                (0.82, 0.88),
                (0.76, 0.46),
                (0.76, 0.93),
                (0.24, 0.93),
                (0.24, 0.46),
                (0.18, 0.88),
                (0.04, 0.86),
                (0.12, 0.28),
            ],
        ),
        ("cut", [(0.4, 0.08), (0.5, 0.3), (0.6, 0.08)], 2),
        ("cut", [(0.5, 0.3), (0.5, 0.93)], 2),
    ),
    "skirt": (("poly", [(0.32, 0.25), (0.68, 0.25), (0.9, 0.82), (0.1, 0.82)]),),
    "shoes": (
        (
            "poly",
            [
                (0.06, 0.52),
                (0.3, 0.48),
                (0.44, 0.3),
                (0.62, 0.3),
                (0.64, 0.52),
                (0.9, 0.6),
                (0.94, 0.76),
                (0.06, 0.76),
            ],
        ),
    ),
    "hat": (
        ("poly", [(0.28, 0.62), (0.34, 0.26), (0.66, 0.26), (0.72, 0.62)]),
        ("ellipse", (0.04, 0.54, 0.96, 0.74)),
    ),
    "bag": (
        ("arc", (0.3, 0.12, 0.7, 0.62), 180, 360, 4),
        ("poly", [(0.18, 0.38), (0.82, 0.38), (0.86, 0.9), (0.14, 0.9)]),
    ),
}
CATEGORIES: tuple[str, ...] = tuple(SILHOUETTES)
