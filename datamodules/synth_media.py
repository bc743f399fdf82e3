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
process's memory state (see :func:`write_video` for what that takes).

Example:
    >>> import numpy as np
    >>> from mmrec.datamodules.synth_media import render_image
    >>> img = render_image("shirt", "red", "stripes", np.random.default_rng(0))
    >>> img.size, img.mode
    ((48, 48), 'RGB')
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

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
#: Colours drawn with a darker accent (light colours); the others get a lighter accent.
_DARK_ACCENT = frozenset({"orange", "yellow", "pink"})

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

_SUPERSAMPLE = 4
#: Video codec and fixed quantiser (2 = best .. 31; 3 looks like the source: about 44 dB PSNR).
VIDEO_CODEC = "mpeg4"
VIDEO_QSCALE = 3
# Why MPEG-4 Part 2 (FFmpeg's own encoder) and not H.264 (libx264): libx264 gave different bytes for the
# same frames even single-threaded. Its macroblock-tree rate control reads uninitialised memory on these
# tiny frames (valgrind), so two encodes in one process differed; without mbtree the bytes still depend on
# the CPU (x264's SSSE3+ kernels and its C / SSE2 ones choose differently, 116 of 240 clips differ).
# FFmpeg's encoder with these options gives the same bytes with every SIMD level and with none:
# `bitexact` picks only bit-exact DSP functions and writes no version strings, `dct=int` / `idct=simple`
# fix the transforms (the default DCT is a CPU-selected SIMD routine), and a constant quantiser
# (qmin = qmax) leaves no float rate-control decision.
_ENCODER_OPTIONS = {"flags": "+bitexact", "dct": "int", "idct": "simple"}
_MUXER_OPTIONS = {"fflags": "+bitexact"}
# FFmpeg's AVColorRange / AVColorSpace values for what rgb_to_yuv420p produces (BT.601, limited range).
_AVCOL_RANGE_MPEG = 1
_AVCOL_SPC_SMPTE170M = 6


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


def write_image(path: str | os.PathLike[str], image: Image.Image) -> None:
    """Save ``image`` as PNG (no metadata chunks, so the bytes depend only on the pixels)."""
    image.save(path, format="PNG", optimize=False, compress_level=9)


def write_audio(path: str | os.PathLike[str], samples: np.ndarray) -> None:
    """Save int16 ``samples`` as a mono 16-bit PCM WAV at :data:`SAMPLE_RATE`."""
    sf.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def rgb_to_yuv420p(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range ("TV") conversion of an RGB frame to 4:2:0 planes, in integer arithmetic.

    Done here rather than by FFmpeg's swscale because swscale's result depends on the CPU (its x86 SIMD
    and C paths round differently), while integer numpy gives the same planes everywhere. Chroma is
    computed per pixel and averaged over each 2x2 block (rounded half up).

    Args:
        frame: ``(H, W, 3)`` uint8 RGB with even ``H`` and ``W``.

    Returns:
        ``(y, u, v)`` uint8 planes of shapes ``(H, W)``, ``(H/2, W/2)`` and ``(H/2, W/2)``.

    Example:
        >>> y, u, v = rgb_to_yuv420p(np.full((2, 2, 3), 255, dtype=np.uint8))
        >>> int(y[0, 0]), int(u[0, 0]), int(v[0, 0])
        (235, 128, 128)
    """
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = (-38 * r - 74 * g + 112 * b) * 4  # x4: the 2x2 average below divides by 4 * 256 at once
    v = (112 * r - 94 * g - 18 * b) * 4
    h, w = y.shape

    def pool(c: np.ndarray) -> np.ndarray:
        s = c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
        return ((s + 2048) >> 12) + 128

    return y.astype(np.uint8), pool(u).astype(np.uint8), pool(v).astype(np.uint8)


def _yuv_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame with every byte set (planes from :func:`rgb_to_yuv420p`, row padding zeroed)."""
    h, w = rgb.shape[:2]
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, rgb_to_yuv420p(rgb)):
        buf = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
        buf[:, : plane.width] = data
        plane.update(buf.tobytes())
    return frame


def write_video(path: str | os.PathLike[str], frames: list[np.ndarray], fps: int = VIDEO_FPS) -> None:
    """Encode RGB ``frames`` as MPEG-4 Part 2 video (yuv420p) in an MP4, byte-reproducibly.

    The same frames give the same bytes with the same PyAV build on any CPU and thread count: the
    colour conversion is :func:`rgb_to_yuv420p` (integer numpy, not CPU-dependent swscale code), the
    encoder runs single-threaded with bit-exact DSP functions, fixed transforms and a constant quantiser
    (:data:`VIDEO_QSCALE`), and the muxer writes no version strings or creation times.

    Args:
        path: destination ``.mp4`` file.
        frames: uint8 arrays ``(H, W, 3)`` with even ``H`` and ``W`` (yuv420p needs even sizes).
        fps: frame rate.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "clip.mp4"
        >>> write_video(p, video_frames("skirt", "pink", "dots", "pulsing"))
        >>> p.stat().st_size > 0
        True
    """
    if not frames:
        raise ValueError("write_video needs at least one frame.")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p video needs even frame sizes; got {w}x{h}. Pad or resize the frames.")
    with av.open(str(Path(path)), mode="w", format="mp4", options=_MUXER_OPTIONS) as container:
        stream = container.add_stream(VIDEO_CODEC, rate=fps, options=_ENCODER_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.qmin = ctx.qmax = VIDEO_QSCALE
        # Say which conversion was used (BT.601, limited range) so decoders convert back with the same.
        ctx.color_range = _AVCOL_RANGE_MPEG
        ctx.colorspace = _AVCOL_SPC_SMPTE170M
        for k, arr in enumerate(frames):
            frame = _yuv_frame(np.ascontiguousarray(arr))
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
