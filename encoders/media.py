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

import io
import math
import os
import re
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Literal, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

from mmrec.encoders.base import AudioClip, VideoClip

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
Sampling = Literal["uniform", "dense"]

__all__ = [
    "DECODER_VERSIONS",
    "MediaError",
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


class MediaError(ValueError):
    """One item's media could not be decoded.

    Args:
        reason: short machine-friendly category, e.g. ``"missing file"``, ``"empty file"``,
            ``"corrupt image"``, ``"image too large"``, ``"truncated audio"``, ``"undecodable audio"``,
            ``"empty audio"``, ``"undecodable video"``, ``"no video stream"``, ``"empty text"``,
            ``"undecodable text"``, ``"bad source"``.
        message: what happened and, where possible, how to fix it.

    Example:
        >>> e = MediaError("missing file", "no such file: a.jpg")
        >>> e.reason, str(e)
        ('missing file', 'missing file: no such file: a.jpg')
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader worker processes
        return (type(self), (self.reason, self.message))


# ---------------------------------------------------------------------------------------------- sources
def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


def _read_source(source: Source | BinaryIO) -> tuple[bytes | None, str | None]:
    """``(data, path)``: exactly one is set. Checks that a path exists and is non-empty."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError("empty file", "got 0 bytes")
        return data, None
    if hasattr(source, "read"):
        data = source.read()  # type: ignore[union-attr]
        if not data:
            raise MediaError("empty file", "the file object returned 0 bytes")
        return bytes(data), None
    if not isinstance(source, (str, os.PathLike)):
        raise MediaError(
            "bad source",
            f"expected a path or bytes, got {type(source).__name__}; pass a file path or its bytes",
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise MediaError(
            "missing file",
            f"no such file: {path} (media paths in items.parquet are relative to the dataset folder)",
        )
    if path.stat().st_size == 0:
        raise MediaError("empty file", f"{path} has 0 bytes")
    return None, str(path)


def _open_binary(data: bytes | None, path: str | None) -> BinaryIO:
    return io.BytesIO(data) if data is not None else open(path, "rb")  # type: ignore[arg-type]


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
    data, path = _read_source(source)
    what = _describe(path if path is not None else data)
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global PIL switch someone else may have flipped
        raise MediaError(
            "bad source",
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would decode silently; "
            "set it back to False before decoding item media",
        )
    try:
        with _open_binary(data, path) as fh, Image.open(fh) as probe:
            probe.verify()
        with _open_binary(data, path) as fh, Image.open(fh) as img:
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


# ------------------------------------------------------------------------------------------------ audio
def resample_audio(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with a polyphase filter (``scipy.signal.resample_poly``).

    Args:
        waveform: ``(samples,)`` or ``(channels, samples)`` float array.
        orig_sr: its sample rate.
        target_sr: wanted sample rate.

    Returns:
        float32 array with ``ceil(samples * target_sr / orig_sr)`` samples on the last axis.

    Example:
        >>> resample_audio(np.zeros(44100, np.float32), 44100, 16000).shape
        (16000,)
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return np.asarray(waveform, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_sr), int(orig_sr))
    out = resample_poly(np.asarray(waveform, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32)


def load_audio(
    source: Source,
    *,
    target_sr: int | None = None,
    mono: bool = True,
    max_seconds: float | None = None,
) -> AudioClip:
    """Decode an audio file (path or bytes) into an :class:`AudioClip`.

    soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis/Opus and MP3; anything else (M4A/AAC, the audio track
    of an MP4/WebM...) goes through PyAV. A WAV whose header promises more samples than the file holds is
    reported as truncated (libsndfile would silently return the part that is there).

    Args:
        source: path or the file's bytes.
        target_sr: resample to this rate (``scipy.signal.resample_poly``); ``None`` keeps the file's rate.
        mono: average the channels into ``(samples,)``; ``False`` returns ``(channels, samples)``.
        max_seconds: keep only the first ``max_seconds`` seconds (decoding stops early).

    Returns:
        :class:`AudioClip` with float32 ``waveform`` in [-1, 1].

    Raises:
        MediaError: ``missing file``, ``empty file``, ``truncated audio``, ``undecodable audio``,
            ``empty audio``.

    Example:
        >>> import io, soundfile as sf
        >>> buf = io.BytesIO(); sf.write(buf, np.zeros((4410, 2), np.float32), 44100, format="WAV")
        >>> clip = load_audio(buf.getvalue(), target_sr=16000)
        >>> clip.waveform.shape, clip.sample_rate
        ((1600,), 16000)
    """
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    if target_sr is not None and target_sr <= 0:
        raise ValueError(f"target_sr must be a positive sample rate or None, got {target_sr}")
    data, path = _read_source(source)
    what = _describe(path if path is not None else data)
    decoded = _read_soundfile(data, path, max_seconds, what)
    if decoded is None:
        decoded = _read_pyav_audio(data, path, max_seconds, what)
    wav, sr = decoded  # (channels, samples)
    if wav.shape[-1] == 0:
        raise MediaError("empty audio", f"{what} contains no audio samples")
    if not np.all(np.isfinite(wav)):
        raise MediaError("undecodable audio", f"{what} decoded to non-finite samples")
    if mono:
        wav = wav.mean(axis=0)
    if target_sr is not None and target_sr != sr:
        wav = resample_audio(wav, sr, target_sr)
        sr = int(target_sr)
    return AudioClip(waveform=np.ascontiguousarray(wav, dtype=np.float32), sample_rate=int(sr))


def _wav_truncation(fh: BinaryIO) -> str | None:
    """If ``fh`` is a RIFF/WAVE file whose chunks promise more bytes than it holds, say so."""
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
        if chunk_id == b"data":
            if chunk_size in (0, 0xFFFFFFFF):  # streamed WAV: length unknown, not an error
                return None
            have = size - (pos + 8)
            if have < chunk_size:
                return f"its data chunk declares {chunk_size} bytes but only {have} are present"
            return None
        pos += 8 + chunk_size + (chunk_size & 1)
    return "it has no complete 'data' chunk"


def _read_soundfile(
    data: bytes | None, path: str | None, max_seconds: float | None, what: str
) -> tuple[np.ndarray, int] | None:
    """``(waveform (C, S), sr)`` or ``None`` when libsndfile does not know the format."""
    import soundfile as sf

    with _open_binary(data, path) as fh:
        problem = _wav_truncation(fh)
        if problem is not None:
            raise MediaError("truncated audio", f"{what}: {problem}; re-export or re-download the file")
        fh.seek(0)
        try:
            snd = sf.SoundFile(fh)
        except sf.LibsndfileError:
            return None  # not a format libsndfile knows (M4A, MP4, WebM...): PyAV's turn
        with snd:
            sr = int(snd.samplerate)
            declared = int(snd.frames)
            want = declared if max_seconds is None else min(declared, math.ceil(max_seconds * sr))
            try:
                arr = snd.read(frames=want, dtype="float32", always_2d=True)
            except RuntimeError as e:  # decode error mid-stream, e.g. a cut FLAC frame
                raise MediaError("truncated audio", f"{what}: {e}") from e
            exact_length = snd.format in _EXACT_LENGTH_FORMATS
    if exact_length and arr.shape[0] < want:
        raise MediaError(
            "truncated audio", f"{what}: header declares {want} frames but only {arr.shape[0]} could be read"
        )
    return np.ascontiguousarray(arr.T), sr


# formats whose header frame count is exact (MP3/OGG lengths are estimates, so a shortfall means nothing)
_EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF", "AU"})


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration, RuntimeError)


def _read_pyav_audio(
    data: bytes | None, path: str | None, max_seconds: float | None, what: str
) -> tuple[np.ndarray, int]:
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data) if data is not None else path, mode="r") as container:
            if not container.streams.audio:
                raise MediaError("undecodable audio", f"{what} has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float32, file's layout and rate
            sr = int(stream.rate or stream.codec_context.sample_rate or 0)
            limit = None if max_seconds is None or sr <= 0 else math.ceil(max_seconds * sr)
            have = 0
            for frame in container.decode(stream):
                sr = sr or int(frame.sample_rate)
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()
                    chunks.append(arr)
                    have += arr.shape[-1]
                if limit is not None and have >= limit:
                    break
            else:
                chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except MediaError:
        raise
    except _av_errors() as e:
        raise MediaError(
            "undecodable audio", f"{what} is neither a format libsndfile reads nor one FFmpeg decodes ({e})"
        ) from e
    if not chunks or sr <= 0:
        raise MediaError("empty audio", f"{what} decoded to no audio samples")
    wav = np.concatenate([c.reshape(c.shape[0], -1) for c in chunks], axis=-1).astype(np.float32)
    if max_seconds is not None:
        wav = wav[:, : math.ceil(max_seconds * sr)]
    return wav, sr


# ------------------------------------------------------------------------------------------------ video
def sample_frame_indices(
    total: int,
    num_frames: int,
    sampling: Sampling = "uniform",
    *,
    src_fps: float | None = None,
    fps: float | None = None,
    anchor: Literal["start", "center"] = "center",
) -> np.ndarray:
    """Deterministic frame indices into a clip of ``total`` decoded frames.

    - ``uniform``: ``num_frames`` indices evenly spread over the clip, the centre of each of ``num_frames``
      equal segments (``floor((k + 0.5) * total / num_frames)``);
    - ``dense``: consecutive frames at ``fps`` (every ``src_fps / fps`` source frames; every frame when
      ``fps`` is ``None``), a window starting at the first frame (``anchor="start"``) or centred in the
      clip (``anchor="center"``).

    Indices past the end repeat the last frame, so a clip shorter than ``num_frames`` repeats its last frame.

    Args:
        total: number of decoded frames (>= 1).
        num_frames: how many indices to return.
        sampling: ``"uniform"`` or ``"dense"``.
        src_fps: the clip's frame rate (needed by ``dense`` when ``fps`` is given).
        fps: target rate of ``dense`` sampling.
        anchor: where the ``dense`` window sits.

    Returns:
        ``(num_frames,)`` int64 array, non-decreasing, in ``[0, total)``.

    Example:
        >>> sample_frame_indices(10, 5).tolist()
        [1, 3, 5, 7, 9]
        >>> sample_frame_indices(3, 5).tolist()
        [0, 1, 2, 2, 2]
        >>> sample_frame_indices(100, 4, "dense", src_fps=30, fps=15, anchor="start").tolist()
        [0, 2, 4, 6]
    """
    if total < 1:
        raise ValueError(f"a clip needs at least one frame, got total={total}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if sampling == "uniform":
        if total <= num_frames:
            idx = np.arange(num_frames)
        else:
            idx = np.floor((np.arange(num_frames) + 0.5) * total / num_frames)
    elif sampling == "dense":
        step = 1.0
        if fps is not None:
            if fps <= 0:
                raise ValueError(f"fps must be positive, got {fps}")
            if not src_fps or src_fps <= 0:
                raise ValueError("dense sampling at a target fps needs the clip's frame rate (src_fps)")
            step = src_fps / fps
        span = num_frames * step
        if anchor == "start" or span >= total:
            start = 0.0
        elif anchor == "center":
            start = math.floor((total - span) / 2)
        else:
            raise ValueError(f"anchor must be 'start' or 'center', got {anchor!r}")
        idx = np.floor(start + np.arange(num_frames) * step + 1e-9)
    else:
        raise ValueError(f"sampling must be 'uniform' or 'dense', got {sampling!r}")
    return np.minimum(idx.astype(np.int64), total - 1)


def load_video(
    source: Source,
    *,
    num_frames: int = 16,
    sampling: Sampling = "uniform",
    fps: float | None = None,
    anchor: Literal["start", "center"] = "center",
    short_side: int | None = None,
) -> VideoClip:
    """Decode ``num_frames`` frames of a video file (path or bytes) with PyAV.

    Sampling is deterministic and by decoded frame index (see :func:`sample_frame_indices`): ``uniform``
    spreads the frames over the whole clip; ``dense`` takes consecutive frames at ``fps`` from the start or
    the centre. Clips with fewer frames than needed repeat their last frame. Only the selected frames are
    converted to RGB and kept.

    Args:
        source: path or the file's bytes.
        num_frames: number of frames ``T`` to return.
        sampling: ``"uniform"`` or ``"dense"``.
        fps: target frame rate of ``dense`` sampling (``None``: the file's rate).
        anchor: ``"start"`` or ``"center"``: where the ``dense`` window sits.
        short_side: resize frames so that their shorter side has this many pixels (saves memory on large
            videos); ``None`` keeps the decoded size.

    Returns:
        :class:`VideoClip` with ``frames`` ``(T, H, W, 3)`` uint8 and ``fps`` the rate of the sampled frames.

    Raises:
        MediaError: ``missing file``, ``empty file``, ``no video stream``, ``undecodable video``.

    Example:
        >>> clip = load_video("clip.mp4", num_frames=8)  # doctest: +SKIP
        >>> clip.frames.shape  # doctest: +SKIP
        (8, 240, 320, 3)
    """
    import av

    data, path = _read_source(source)
    what = _describe(path if path is not None else data)

    def open_container() -> Any:
        return av.open(io.BytesIO(data) if data is not None else path, mode="r")

    try:
        with open_container() as container:
            if not container.streams.video:
                raise MediaError("no video stream", f"{what} has no video stream")
            stream = container.streams.video[0]
            src_fps = _stream_fps(stream, container)
            total = int(stream.frames or 0)
            if total <= 0:  # container without a frame count (WebM, some AVI): count packets, no decoding
                total = sum(1 for pkt in container.demux(stream) if pkt.size)
        if total <= 0:
            raise MediaError("undecodable video", f"{what} contains no video frames")
        indices = sample_frame_indices(total, num_frames, sampling, src_fps=src_fps, fps=fps, anchor=anchor)
        frames = _decode_frames(open_container, sorted(set(indices.tolist())), short_side)
    except MediaError:
        raise
    except _av_errors() as e:
        raise MediaError("undecodable video", f"{what} could not be decoded by FFmpeg ({e})") from e
    if not frames:
        raise MediaError("undecodable video", f"{what}: no frame could be decoded")
    # a frame count from metadata can overstate what decodes (damaged tail): use the last good frame before
    out = np.stack([frames[i] if i in frames else _nearest(frames, i) for i in indices.tolist()])
    if sampling == "dense":
        out_fps = float(fps) if fps is not None else src_fps
    else:
        out_fps = src_fps * num_frames / total if total > num_frames else src_fps
    return VideoClip(frames=out, fps=float(out_fps))


def _nearest(frames: dict[int, np.ndarray], i: int) -> np.ndarray:
    below = [k for k in frames if k <= i]
    return frames[max(below) if below else min(frames)]


def _stream_fps(stream: Any, container: Any) -> float:
    for rate in (stream.average_rate, stream.base_rate, getattr(stream, "guessed_rate", None)):
        if rate:
            return float(rate)
    if stream.frames and container.duration:
        return float(stream.frames) / (container.duration / 1_000_000)
    return 25.0  # FFmpeg's own default when a stream declares nothing


def _decode_frames(
    open_container: Callable[[], Any], wanted: list[int], short_side: int | None
) -> dict[int, np.ndarray]:
    wanted_set, last = set(wanted), max(wanted)
    frames: dict[int, np.ndarray] = {}
    with open_container() as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: the decoded planes are bit-exact whatever the count
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted_set:
                rgb = frame_to_rgb(frame)
                if short_side is not None:
                    rgb = _resize_short_side(rgb, short_side)
                frames[i] = rgb
            if i >= last:
                break
    return frames


def _resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """Bilinear resize (PIL's fixed-point resampler: the same bytes on any CPU) to a given shorter side."""
    height, width = rgb.shape[:2]
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


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


def _plane(frame: Any, index: int, dtype: type = np.uint8, channels: int = 1) -> np.ndarray:
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
        g, b, r = (_plane(frame, i) for i in range(3))
        return np.stack([r, g, b], axis=-1)
    return frame.reformat(format="rgb24").to_ndarray()


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
