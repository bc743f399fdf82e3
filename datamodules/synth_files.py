"""Byte-reproducible media files of the synthetic demo: PNG images, 16-bit PCM WAV audio and MPEG-4 Part 2
video whose bytes depend only on the content (same PyAV build, any CPU or thread count; see
:func:`write_video` for what that takes)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

from mmrec.datamodules.synth_looks import SAMPLE_RATE, VIDEO_FPS

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
        >>> from mmrec.datamodules.synth_media import video_frames
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
