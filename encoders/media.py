"""Decoding raw media (files or bytes) into the raw item types of the encoder contract.

Every loader takes a path (``str`` / ``os.PathLike``) or the raw bytes of a file (webdataset shards hand
out bytes) and returns what the encoders' ``preprocess`` expects:

- :func:`load_image` -> ``PIL.Image.Image`` (RGB, EXIF orientation applied, transparency on white);
- :func:`load_audio` -> :class:`~mmrec.encoders.base.AudioClip` (soundfile for WAV/FLAC/OGG/MP3, PyAV for
  other containers such as M4A/AAC or the audio track of an MP4; resampled with
  ``scipy.signal.resample_poly``; mono mixdown by averaging channels);
- :func:`load_video` -> :class:`~mmrec.encoders.base.VideoClip` (PyAV, deterministic frame sampling);
- :func:`load_text` -> ``str`` (stripped, never empty);
- :func:`decode` dispatches on the modality name.

Whatever goes wrong with one item raises :class:`MediaError`, a ``ValueError`` with a short
machine-friendly :attr:`MediaError.reason` (``"missing file"``, ``"corrupt image"``, ``"truncated audio"``,
``"undecodable video"``, ``"empty text"``...) that embedding jobs count in their failure reports, plus a
human-readable message. A half-decoded item is never returned.

Audio (:mod:`mmrec.encoders.media_audio`), video (:mod:`mmrec.encoders.media_video`, colour conversion in
:mod:`mmrec.encoders.yuv`) and sources / errors (:mod:`mmrec.encoders.media_sources`) live in modules of
their own; their public names are re-exported here.

Example:
    >>> from mmrec.encoders.media import MediaError, load_text
    >>> load_text("  red dress ")
    'red dress'
    >>> try:
    ...     load_text("   ")
    ... except MediaError as e:
    ...     print(e.reason)
    empty text
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from mmrec.encoders.media_audio import load_audio, resample_audio
from mmrec.encoders.media_sources import MediaError, Source, describe_source, open_binary, read_source
from mmrec.encoders.media_video import Sampling, load_video, sample_frame_indices
from mmrec.encoders.yuv import frame_to_rgb, yuv_to_rgb

__all__ = [
    "DECODER_VERSIONS",
    "MediaError",
    "Sampling",
    "Source",
    "decode",
    "frame_to_rgb",
    "load_audio",
    "load_image",
    "load_text",
    "load_video",
    "resample_audio",
    "sample_frame_indices",
    "yuv_to_rgb",
]


#: Bumped whenever a decoder's output for the same file changes; part of every embedding store's fingerprint,
#: so stores decoded the old way are rebuilt rather than reused. video 2: integer YUV -> RGB (was swscale).
DECODER_VERSIONS: dict[str, int] = {"image": 1, "audio": 1, "video": 2, "text": 1}


# ----------------------------------------------------------------------------------------------- images
def load_image(source: Source) -> Image.Image:
    """Decode an image file (path or bytes) into a fully loaded RGB ``PIL.Image``.

    The file is checked with PIL's ``verify`` and then fully decoded with ``load``, so a corrupt or
    truncated file raises instead of yielding a half-grey image. EXIF orientation is applied; images with
    transparency are composited on white (product photos on transparent backgrounds stay white, not black);
    animated formats give their first frame. Large images are returned at full size: downscaling is the
    encoder transform's job (PIL's decompression-bomb guard still applies: reason ``"image too large"``).

    Args:
        source: path or the file's bytes.

    Returns:
        ``PIL.Image.Image`` in mode ``"RGB"``.

    Raises:
        MediaError: ``missing file``, ``empty file``, ``corrupt image`` or ``image too large``.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("L", (4, 3)).save(buf, "PNG")
        >>> load_image(buf.getvalue()).mode, load_image(buf.getvalue()).size
        ('RGB', (4, 3))
    """
    data, path = read_source(source)
    what = describe_source(path if path is not None else data)
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global PIL switch someone else may have flipped
        raise MediaError(
            "bad source",
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would decode silently; "
            "set it back to False before decoding item media",
        )
    try:
        with open_binary(data, path) as fh, Image.open(fh) as probe:
            probe.verify()
        with open_binary(data, path) as fh, Image.open(fh) as img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise MediaError(
            "image too large",
            f"{what}: {e} (raise PIL.Image.MAX_IMAGE_PIXELS if you trust the source)",
        ) from e
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, TypeError) as e:
        raise MediaError("corrupt image", f"{what} could not be decoded completely ({e})") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: rescale to 8 bit
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        arr8 = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8) if hi > 0 else np.zeros(arr.shape, np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------------- text
def load_text(value: Any) -> str:
    """Normalise one text field: decode bytes as UTF-8, strip whitespace, refuse empty values.

    Args:
        value: ``str``, UTF-8 ``bytes``, or ``None`` / NaN (a missing value).

    Returns:
        the stripped text.

    Raises:
        MediaError: ``empty text`` (None, NaN, empty or whitespace only) or ``undecodable text``.

    Example:
        >>> load_text(b" wool scarf\\n")
        'wool scarf'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise MediaError("empty text", "the text is missing (None/NaN)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MediaError("undecodable text", f"the bytes are not valid UTF-8 ({e})") from e
    if not isinstance(value, str):
        raise MediaError("undecodable text", f"expected str or bytes, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise MediaError("empty text", "the text is empty after stripping whitespace")
    return text


# ---------------------------------------------------------------------------------------------- dispatch
_LOADERS: dict[str, Callable[..., Any]] = {
    "image": load_image,
    "audio": load_audio,
    "video": load_video,
    "text": load_text,
}


def decode(modality: str, source: Any, **opts: Any) -> Any:
    """Decode ``source`` with the loader of ``modality`` (``image``, ``audio``, ``video``, ``text``).

    Args:
        modality: one of ``image``, ``audio``, ``video``, ``text``.
        source: a path or bytes (for text: the text itself).
        **opts: passed to the loader (e.g. ``target_sr=16000`` for audio, ``num_frames=8`` for video).

    Returns:
        ``PIL.Image.Image``, :class:`AudioClip`, :class:`VideoClip` or ``str``.

    Example:
        >>> decode("text", "  hello ")
        'hello'
    """
    try:
        loader = _LOADERS[modality]
    except KeyError:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(_LOADERS)}") from None
    return loader(source, **opts)
