"""Decoded video frames to RGB in numpy: fixed-point Y'CbCr -> R'G'B' (BT.601 / BT.709, limited or full range) and packed RGB layouts."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

# ------------------------------------------------------------------------------------ YUV -> RGB
# Y'CbCr -> R'G'B' matrices as fixed-point integers (value * 2**14): (luma gain, Cr->R, Cb->G, Cr->G, Cb->B).
_FRAC_BITS = 14


_MATRICES: dict[tuple[str, bool], tuple[int, int, int, int, int]] = {
    # BT.601 limited ("TV") range: R = 1.164 (Y-16) + 1.596 Cr ...  (the inverse of the demo writer's)
    ("bt601", False): (19071, 26149, 6423, 13320, 33050),
    ("bt601", True): (16384, 22970, 5638, 11700, 29032),
    ("bt709", False): (19071, 29374, 3494, 8731, 34603),
    ("bt709", True): (16384, 25802, 3069, 7669, 30402),
}


# planar Y'CbCr layouts FFmpeg decoders hand out (the chroma subsampling is read off the plane sizes)
_PLANAR_YUV = frozenset({"420p", "422p", "444p", "440p", "411p", "410p"})


_YUV_NAME = re.compile(r"^yuvj?(?P<layout>\d{3}p)(?P<depth>\d+)?(?P<endian>le|be)?$")


_AVCOL_SPC_BT709 = 1  # AVColorSpace: 1 = BT.709; 5/6 (BT.470BG, SMPTE 170M) and unspecified -> BT.601


_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG = 1, 2  # AVColorRange: limited ("MPEG") and full ("JPEG") range


_PACKED_RGB: dict[str, tuple[int, int, int, int]] = {  # name -> (bytes per pixel, index of R, G, B)
    "rgb24": (3, 0, 1, 2),
    "bgr24": (3, 2, 1, 0),
    "rgba": (4, 0, 1, 2),
    "bgra": (4, 2, 1, 0),
    "argb": (4, 1, 2, 3),
    "abgr": (4, 3, 2, 1),
    "rgb0": (4, 0, 1, 2),
    "bgr0": (4, 2, 1, 0),
    "0rgb": (4, 1, 2, 3),
    "0bgr": (4, 3, 2, 1),
}


def _plane(frame: Any, index: int, dtype: npt.DTypeLike = np.uint8, channels: int = 1) -> np.ndarray:
    """Plane ``index`` of a decoded frame as ``(height, width * channels)`` without the row padding."""
    plane = frame.planes[index]
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype=dtype, count=plane.height * plane.line_size // itemsize)
    return rows.reshape(plane.height, plane.line_size // itemsize)[:, : plane.width * channels]


def yuv_to_rgb(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    *,
    matrix: Literal["bt601", "bt709"] = "bt601",
    full_range: bool = False,
) -> np.ndarray:
    """Y'CbCr planes -> ``(H, W, 3)`` uint8 RGB in integer arithmetic (the same bytes on every CPU).

    Chroma planes smaller than the luma plane (4:2:0, 4:2:2...) are upsampled by repeating each sample
    (nearest neighbour), the exact counterpart of the 2x2 averaging of
    :func:`mmrec.datamodules.synth_media.rgb_to_yuv420p`.

    Args:
        y: ``(H, W)`` uint8 luma.
        u: ``(H / sy, W / sx)`` uint8 Cb (sizes rounded up).
        v: Cr, same shape as ``u``.
        matrix: ``"bt601"`` (SD video, and FFmpeg's default when a file does not say) or ``"bt709"`` (HD).
        full_range: ``True`` for full-range ("JPEG", 0-255) input, ``False`` for limited range (16-235).

    Returns:
        ``(H, W, 3)`` uint8.

    Example:
        >>> white = yuv_to_rgb(np.full((2, 2), 235, np.uint8), np.full((1, 1), 128, np.uint8),
        ...                    np.full((1, 1), 128, np.uint8))
        >>> white[0, 0].tolist()
        [255, 255, 255]
    """
    height, width = y.shape
    sy, sx = -(-height // u.shape[0]), -(-width // u.shape[1])
    if sy > 1 or sx > 1:
        u = np.repeat(np.repeat(u, sy, axis=0), sx, axis=1)[:height, :width]
        v = np.repeat(np.repeat(v, sy, axis=0), sx, axis=1)[:height, :width]
    gain, rv, gu, gv, bu = _MATRICES[(matrix, full_range)]
    luma = (y.astype(np.int32) - (0 if full_range else 16)) * gain + (1 << (_FRAC_BITS - 1))
    cb = u.astype(np.int32) - 128
    cr = v.astype(np.int32) - 128
    out = np.empty((height, width, 3), dtype=np.uint8)
    for channel, value in enumerate((luma + rv * cr, luma - gu * cb - gv * cr, luma + bu * cb)):
        out[..., channel] = np.clip(value >> _FRAC_BITS, 0, 255)
    return out


def frame_to_rgb(frame: Any) -> np.ndarray:
    """A decoded PyAV video frame -> ``(H, W, 3)`` uint8 RGB, the same bytes on any CPU.

    FFmpeg's own converter (swscale, ``frame.reformat(format="rgb24")``) rounds differently in its SIMD and C
    code paths, so the same video decoded to different RGB on different machines (and stores built from it
    differed). The decoded planes themselves are bit-exact, so the colour conversion is done here in integer
    numpy (:func:`yuv_to_rgb`): planar Y'CbCr (8 to 16 bits; 4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, 4:1:0),
    NV12 / NV21, grey (full range unless marked limited) and packed / planar RGB. The matrix is BT.709 when the stream says so and BT.601
    otherwise (FFmpeg's default); the range is full for ``yuvj*`` formats or a stream marked full range,
    limited otherwise. Other pixel formats (palettes, Bayer, XYZ...) fall back to swscale, which is exact for
    palettes and may differ across CPUs for the rest.

    Args:
        frame: an ``av.VideoFrame``.

    Returns:
        ``(frame.height, frame.width, 3)`` uint8.
    """
    name = frame.format.name
    full = name.startswith("yuvj") or getattr(frame, "color_range", 0) == _AVCOL_RANGE_JPEG
    matrix: Literal["bt601", "bt709"] = (
        "bt709" if getattr(frame, "colorspace", 0) == _AVCOL_SPC_BT709 else "bt601"
    )
    layout = _YUV_NAME.match(name)
    if layout is not None and layout["layout"] in _PLANAR_YUV and layout["endian"] != "be":
        depth = int(layout["depth"] or 8)
        dtype = np.uint8 if depth == 8 else np.dtype("<u2")
        planes = [_plane(frame, i, dtype) for i in range(3)]
        if depth != 8:  # 10/12/16-bit: round to 8 bits first
            shift = depth - 8
            planes = [
                ((p.astype(np.int32) + (1 << (shift - 1))) >> shift).clip(0, 255).astype(np.uint8)
                for p in planes
            ]
        return yuv_to_rgb(*planes, matrix=matrix, full_range=full)
    if name in ("nv12", "nv21"):
        y = _plane(frame, 0)
        uv = _plane(frame, 1, channels=2).reshape(frame.planes[1].height, -1, 2)
        u, v = (uv[..., 0], uv[..., 1]) if name == "nv12" else (uv[..., 1], uv[..., 0])
        return yuv_to_rgb(y, u, v, matrix=matrix, full_range=full)
    if name in ("gray", "gray8"):  # full range unless the stream says limited (as swscale reads it)
        y = _plane(frame, 0)
        if getattr(frame, "color_range", 0) == _AVCOL_RANGE_MPEG:
            y = (((y.astype(np.int32) - 16) * 19071 + (1 << 13)) >> 14).clip(0, 255).astype(np.uint8)
        return np.repeat(y[..., None], 3, axis=2)
    if name in _PACKED_RGB:
        size, r, g, b = _PACKED_RGB[name]
        packed = _plane(frame, 0, channels=size).reshape(frame.height, frame.width, size)
        return np.ascontiguousarray(packed[..., [r, g, b]])
    if name == "gbrp":
        g_plane, b_plane, r_plane = (_plane(frame, i) for i in range(3))
        return np.stack([r_plane, g_plane, b_plane], axis=-1)
    return frame.reformat(format="rgb24").to_ndarray()
