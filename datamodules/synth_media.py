"""Media rendering for the synthetic demo catalogue (:mod:`mmrec.datamodules.synth`).

Each item's latent attributes are made visible (or audible) in its media, so that encoders have real
signal to find:

- image (PNG, ``IMAGE_SIZE`` square, RGB): the garment silhouette of the item's *category*, filled with
  its *colour* and drawn with its *pattern* (solid, stripes, dots, checks, diagonal);
- audio (WAV, mono 16-bit PCM, ``SAMPLE_RATE`` Hz, ``AUDIO_SECONDS`` s): a short tone whose pitch and
  timbre encode the *sound* family (the fundamental frequency is the family's, within ±2 %);
- video (MP4, MPEG-4 Part 2 / yuv420p, ``VIDEO_FRAMES`` frames of ``VIDEO_SIZE`` square at ``VIDEO_FPS``
  fps): the garment moving in its *motion* style (rotating, sliding, bouncing, pulsing).

Everything is a pure function of its arguments (a ``numpy.random.Generator`` supplies per-item jitter),
and the files are byte-reproducible with the same PyAV build whatever the CPU, the thread count or the
process's memory state (see :func:`~mmrec.datamodules.synth_files.write_video` for what that takes).

What each attribute looks and sounds like (sizes, palette, silhouettes, sound families) lives in
:mod:`mmrec.datamodules.synth_looks`, the file writers in :mod:`mmrec.datamodules.synth_files`; their
public names are re-exported here.

Example:
    >>> import numpy as np
    >>> from mmrec.datamodules.synth_media import render_image
    >>> img = render_image("shirt", "red", "stripes", np.random.default_rng(0))
    >>> img.size, img.mode
    ((48, 48), 'RGB')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mmrec.datamodules.synth_files import (
    VIDEO_CODEC,
    VIDEO_QSCALE,
    rgb_to_yuv420p,
    write_audio,
    write_image,
    write_video,
)
from mmrec.datamodules.synth_looks import (
    AUDIO_SECONDS,
    BACKGROUND,
    CATEGORIES,
    IMAGE_SIZE,
    MOTIONS,
    PALETTE,
    PATTERNS,
    SAMPLE_RATE,
    SILHOUETTES,
    SOUNDS,
    SPRITE_SIZE,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_SIZE,
    SoundSpec,
)

# the attribute looks and the file writers live in modules of their own; their names stay importable here
__all__ = [
    "AUDIO_SECONDS",
    "BACKGROUND",
    "CATEGORIES",
    "IMAGE_SIZE",
    "MOTIONS",
    "PALETTE",
    "PATTERNS",
    "SAMPLE_RATE",
    "SILHOUETTES",
    "SOUNDS",
    "SPRITE_SIZE",
    "VIDEO_CODEC",
    "VIDEO_FPS",
    "VIDEO_FRAMES",
    "VIDEO_QSCALE",
    "VIDEO_SIZE",
    "Jitter",
    "SoundSpec",
    "render_audio",
    "render_image",
    "render_sprite",
    "rgb_to_yuv420p",
    "video_frames",
    "write_audio",
    "write_image",
    "write_video",
]

#: Colours drawn with a darker accent (light colours); the others get a lighter accent.
_DARK_ACCENT = frozenset({"orange", "yellow", "pink"})
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Jitter:
    """Small per-item variations so items sharing attributes still have distinct media.

    Attributes:
        dx: horizontal offset in pixels (image only).
        dy: vertical offset in pixels (image only).
        scale: silhouette scale around the centre.
        phase: pattern phase offset in pixels.
        shade: brightness offset added to the colour.
    """

    dx: int = 0
    dy: int = 0
    scale: float = 1.0
    phase: int = 0
    shade: int = 0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Jitter:
        """Sample a jitter from ``rng`` (always the same number of draws)."""
        dx, dy, phase, shade = (int(v) for v in rng.integers([-2, -2, 0, -10], [3, 3, 6, 11]))
        scale = round(float(rng.uniform(0.88, 1.0)), 3)
        return cls(dx=dx, dy=dy, scale=scale, phase=phase, shade=shade)


def _check(kind: str, value: str, allowed: tuple[str, ...] | dict) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {sorted(allowed)}.")


def _colours(colour: str, shade: int) -> tuple[np.ndarray, np.ndarray]:
    base = np.clip(np.array(PALETTE[colour], dtype=np.float64) + shade, 0, 255)
    target = 0.0 if colour in _DARK_ACCENT else 255.0
    accent = base + 0.3 * (target - base)
    return base.round().astype(np.uint8), accent.round().astype(np.uint8)


def _texture(pattern: str, size: int, base: np.ndarray, accent: np.ndarray, phase: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 fabric texture: ``base`` colour with the pattern in ``accent``."""
    yy, xx = np.mgrid[0:size, 0:size]
    yy = yy + phase
    xx = xx + phase
    period = 6
    if pattern == "solid":
        on = np.zeros((size, size), dtype=bool)
    elif pattern == "stripes":
        on = (yy % period) < 2
    elif pattern == "dots":
        on = ((yy % period) - 2.5) ** 2 + ((xx % period) - 2.5) ** 2 <= 2.3
    elif pattern == "checks":
        on = ((yy // 4) + (xx // 4)) % 2 == 0
    elif pattern == "diagonal":
        on = ((xx + yy) % period) < 2
    else:  # pragma: no cover - guarded by _check
        raise ValueError(pattern)
    tex = np.empty((size, size, 3), dtype=np.uint8)
    tex[:] = base
    tex[on] = accent
    return tex


def _mask(category: str, size: int, scale: float = 1.0, dx: int = 0, dy: int = 0) -> Image.Image:
    """Anti-aliased silhouette mask (mode ``L``) of ``category`` on a ``size`` square canvas."""
    ss = size * _SUPERSAMPLE
    big = Image.new("L", (ss, ss), 0)
    draw = ImageDraw.Draw(big)

    def pt(x: float, y: float) -> tuple[float, float]:
        return (
            (0.5 + (x - 0.5) * scale) * ss + dx * _SUPERSAMPLE,
            (0.5 + (y - 0.5) * scale) * ss + dy * _SUPERSAMPLE,
        )

    for prim in SILHOUETTES[category]:
        kind = prim[0]
        if kind == "poly":
            draw.polygon([pt(x, y) for x, y in prim[1]], fill=255)
        elif kind == "ellipse":
            x0, y0, x1, y1 = prim[1]
            draw.ellipse([pt(x0, y0), pt(x1, y1)], fill=255)
        elif kind == "arc":
            (x0, y0, x1, y1), start, end, width = prim[1], prim[2], prim[3], prim[4]
            draw.arc(
                [pt(x0, y0), pt(x1, y1)], start, end, fill=255, width=round(width * _SUPERSAMPLE * scale)
            )
        elif kind == "cut":
            draw.line([pt(x, y) for x, y in prim[1]], fill=0, width=round(prim[2] * _SUPERSAMPLE * scale))
    return big.resize((size, size), Image.Resampling.BOX)


def render_sprite(
    category: str, colour: str, pattern: str, size: int, jitter: Jitter | None = None
) -> Image.Image:
    """The garment alone as an RGBA image (transparent background), used for images and videos.

    Args:
        category: one of :data:`CATEGORIES` (the silhouette).
        colour: one of :data:`PALETTE`.
        pattern: one of :data:`PATTERNS`.
        size: side of the square sprite in pixels.
        jitter: per-item variation (position, scale, pattern phase, shade); none by default.

    Returns:
        A ``size`` x ``size`` RGBA image.

    Example:
        >>> render_sprite("dress", "blue", "dots", 32).mode
        'RGBA'
    """
    _check("category", category, SILHOUETTES)
    _check("colour", colour, PALETTE)
    _check("pattern", pattern, PATTERNS)
    j = jitter or Jitter()
    base, accent = _colours(colour, j.shade)
    tex = Image.fromarray(_texture(pattern, size, base, accent, j.phase))
    sprite = tex.convert("RGBA")
    sprite.putalpha(_mask(category, size, j.scale, j.dx, j.dy))
    return sprite


def render_image(
    category: str, colour: str, pattern: str, rng: np.random.Generator | Jitter | None = None
) -> Image.Image:
    """The item's product image: its silhouette, colour and pattern on a light background.

    Args:
        category: one of :data:`CATEGORIES`.
        colour: one of :data:`PALETTE`.
        pattern: one of :data:`PATTERNS`.
        rng: a generator to draw a :class:`Jitter` from, a ready jitter, or ``None`` for none.

    Returns:
        An ``IMAGE_SIZE`` x ``IMAGE_SIZE`` RGB image.

    Example:
        >>> render_image("shoes", "black", "checks").getpixel((0, 0)) == BACKGROUND
        True
    """
    jitter = Jitter.draw(rng) if isinstance(rng, np.random.Generator) else rng
    sprite = render_sprite(category, colour, pattern, IMAGE_SIZE, jitter)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    canvas.paste(sprite, (0, 0), sprite)
    return canvas


def render_audio(sound: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The item's sound: a short tone with the family's pitch and timbre plus a soft fabric rustle.

    Args:
        sound: one of :data:`SOUNDS`.
        rng: per-item randomness (pitch within ±2 %, partial phases, rustle noise); ``None`` for a
            fixed rendering.

    Returns:
        ``(SAMPLE_RATE * AUDIO_SECONDS,)`` int16 samples, mono.

    Example:
        >>> render_audio("bright").shape
        (4000,)
    """
    _check("sound", sound, SOUNDS)
    spec = SOUNDS[sound]
    rng = rng if rng is not None else np.random.default_rng(0)
    n = round(SAMPLE_RATE * AUDIO_SECONDS)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    f0 = spec.freq * (1.0 + rng.uniform(-0.02, 0.02))
    partials = [(k + 1.0, a) for k, a in enumerate(spec.harmonics) if a > 0] + list(spec.inharmonic)
    phases = rng.uniform(0.0, 2 * math.pi, size=len(partials))
    x = np.zeros(n)
    for (ratio, amp), phi in zip(partials, phases):
        x += amp * np.sin(2 * math.pi * ratio * f0 * t + phi)
    if spec.tremolo_hz:
        x *= 1.0 + 0.3 * np.sin(2 * math.pi * spec.tremolo_hz * t)
    env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (t[-1] - t) / 0.03 + 1e-3)
    if spec.decay_s:
        env *= np.exp(-t / spec.decay_s)
    x *= env
    peak = np.max(np.abs(x))
    x = x / peak if peak > 0 else x
    # Fabric rustle: low-passed noise, quiet enough that the tone's fundamental stays the strongest peak.
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    x = x + 0.06 * noise / (np.std(noise) + 1e-12) * np.minimum(1.0, t / 0.01)
    x = 0.7 * x / np.max(np.abs(x))
    return np.round(x * 32767).astype(np.int16)


def video_frames(
    category: str, colour: str, pattern: str, motion: str, jitter: Jitter | None = None
) -> list[np.ndarray]:
    """The frames of the item's clip: its sprite moving in ``motion`` style over a light background.

    Args:
        category: one of :data:`CATEGORIES`.
        colour: one of :data:`PALETTE`.
        pattern: one of :data:`PATTERNS`.
        motion: one of :data:`MOTIONS` (``rotating`` spins a full turn, ``sliding`` moves left-right,
            ``bouncing`` hops twice, ``pulsing`` shrinks and grows).
        jitter: pattern phase and shade variation (position and scale are animated instead).

    Returns:
        ``VIDEO_FRAMES`` arrays of shape ``(VIDEO_SIZE, VIDEO_SIZE, 3)``, uint8 RGB.

    Example:
        >>> len(video_frames("hat", "green", "solid", "sliding"))
        16
    """
    _check("motion", motion, MOTIONS)
    j = jitter or Jitter()
    sprite = render_sprite(category, colour, pattern, SPRITE_SIZE, Jitter(phase=j.phase, shade=j.shade))
    margin = (VIDEO_SIZE - SPRITE_SIZE) // 2
    frames = []
    for k in range(VIDEO_FRAMES):
        phase = k / VIDEO_FRAMES
        canvas = Image.new("RGB", (VIDEO_SIZE, VIDEO_SIZE), BACKGROUND)
        spr, x, y = sprite, margin, margin
        if motion == "rotating":
            # expand=True keeps the corners; the rotated sprite (at most ~46 px) is centred on the canvas.
            spr = sprite.rotate(360.0 * phase, resample=Image.Resampling.BILINEAR, expand=True)
            x, y = (VIDEO_SIZE - spr.width) // 2, (VIDEO_SIZE - spr.height) // 2
        elif motion == "sliding":
            x = margin + round(margin * math.sin(2 * math.pi * phase))
        elif motion == "bouncing":
            y = 2 * margin - round(2 * margin * abs(math.sin(2 * math.pi * phase)))
        elif motion == "pulsing":
            side = round(SPRITE_SIZE * (0.8 + 0.2 * math.cos(2 * math.pi * phase)))
            side -= side % 2
            spr = sprite.resize((side, side), Image.Resampling.BILINEAR)
            x = y = (VIDEO_SIZE - side) // 2
        canvas.paste(spr, (x, y), spr)
        frames.append(np.asarray(canvas, dtype=np.uint8))
    return frames
