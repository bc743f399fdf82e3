"""Where media come from (a path or a file's bytes) and what goes wrong reading them (:class:`MediaError`): shared by the loaders of :mod:`mmrec.encoders.media`."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Union

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


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
def describe_source(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


def read_source(source: Source | BinaryIO) -> tuple[bytes | None, str | None]:
    """``(data, path)``: exactly one is set. Checks that a path exists and is non-empty."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError("empty file", "got 0 bytes")
        return data, None
    if hasattr(source, "read"):
        data = source.read()
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


def open_binary(data: bytes | None, path: str | None) -> BinaryIO:
    if data is not None:
        return io.BytesIO(data)
    assert path is not None, "read_source sets exactly one of data and path"
    return open(path, "rb")


def av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration, RuntimeError)
