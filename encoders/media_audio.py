"""Audio loading: soundfile first, PyAV for the rest; resampling; truncation checks (see :mod:`mmrec.encoders.media`)."""

from __future__ import annotations

import io
import math
import struct
from fractions import Fraction
from typing import BinaryIO

import numpy as np

from mmrec.encoders.base import AudioClip
from mmrec.encoders.media_sources import (
    MediaError,
    Source,
    av_errors,
    describe_source,
    open_binary,
    read_source,
)


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
    data, path = read_source(source)
    what = describe_source(path if path is not None else data)
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

    with open_binary(data, path) as fh:
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
    except av_errors() as e:
        raise MediaError(
            "undecodable audio", f"{what} is neither a format libsndfile reads nor one FFmpeg decodes ({e})"
        ) from e
    if not chunks or sr <= 0:
        raise MediaError("empty audio", f"{what} decoded to no audio samples")
    wav = np.concatenate([c.reshape(c.shape[0], -1) for c in chunks], axis=-1).astype(np.float32)
    if max_seconds is not None:
        wav = wav[:, : math.ceil(max_seconds * sr)]
    return wav, sr
