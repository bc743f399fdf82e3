"""Video loading: frame sampling (uniform / dense), PyAV decoding, RGB frames resized on the short side (see :mod:`mmrec.encoders.media`)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from PIL import Image

from mmrec.encoders.base import VideoClip
from mmrec.encoders.media_sources import MediaError, Source, av_errors, describe_source, read_source
from mmrec.encoders.yuv import frame_to_rgb


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

    data, path = read_source(source)
    what = describe_source(path if path is not None else data)

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
    except av_errors() as e:
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


Sampling = Literal["uniform", "dense"]
