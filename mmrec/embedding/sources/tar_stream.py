"""Reading a webdataset tar shard as a stream of samples, refusing anything unsafe.

A shard is read front to back once (it may come from a pipe or an HTTP response, so nothing seeks). Members
are grouped into samples as webdataset does: the key is the member name up to the first dot of its base name
(``dir/00000042-a.json`` and ``dir/00000042-a.png`` -> key ``dir/00000042-a``, extensions ``json`` and
``png``), and the members of one sample are adjacent. Member names are checked before anything is read:
absolute names, ``..`` components, backslashes, drive letters and NUL bytes are refused, and so are links,
devices and other non-regular members (folders are skipped). :class:`HashingReader` counts and hashes the
bytes as they pass, so the sha256 of a streamed shard is known once it has been read.

Example:
    >>> import io, tarfile
    >>> buf = io.BytesIO()
    >>> with tarfile.open(fileobj=buf, mode="w") as tar:
    ...     for name, data in [("k1.json", b"{}"), ("k1.txt", b"hi"), ("k2.json", b"{}")]:
    ...         info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    >>> _ = buf.seek(0)
    >>> [(key, sorted(m)) for key, m in iter_tar_samples(buf, "s.tar")]
    [('k1', ['json', 'txt']), ('k2', ['json'])]
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from mmrec.embedding.sources.base import ShardError


def check_member_name(name: str, shard: str) -> None:
    """Refuse tar member names that could escape a folder or are not plain relative names.

    Raises:
        ShardError: absolute names, ``..`` components, backslashes, NUL bytes or empty names.

    Example:
        >>> check_member_name("00000001-a.json", "s.tar")
        >>> check_member_name("../etc/passwd", "s.tar")
        Traceback (most recent call last):
        ...
        mmrec.embedding.sources.base.ShardError: s.tar: unsafe member name '../etc/passwd' (absolute paths and '..' are refused); rebuild the shard with `mmrec shard`.
    """
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(p == ".." for p in parts)
    ):
        raise ShardError(
            f"{shard}: unsafe member name {name!r} (absolute paths and '..' are refused); rebuild the shard with "
            "`mmrec shard`."
        )


def split_member_name(name: str, shard: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name, webdataset's way (the extension starts at the first dot).

    Example:
        >>> split_member_name("a/00000007-x.video.mp4", "s.tar")
        ('a/00000007-x', 'video.mp4')
    """
    base = PurePosixPath(name)
    stem, dot, ext = base.name.partition(".")
    if not dot or not stem or not ext:
        raise ShardError(f"{shard}: member {name!r} is not named <key>.<ext>.")
    return (str(base.parent / stem) if str(base.parent) != "." else stem), ext


class HashingReader:
    """A read-only stream wrapper that sha256-hashes and counts what passes through it.

    Args:
        raw: any object with ``read(n)``.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._h = hashlib.sha256()
        self.nbytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self._h.update(data)
        self.nbytes += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever is left, e.g. the zero blocks after a tar's end marker."""
        while self.read(1 << 20):
            pass

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


def iter_tar_samples(stream: BinaryIO | HashingReader, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a tar stream, in order: ``(key, {extension: bytes})``.

    Args:
        stream: the shard's bytes (read sequentially, never seeked).
        shard: its name, for messages.

    Raises:
        ShardError: an unsafe or malformed member name, a link or special file, a sample whose members are
            not adjacent or that has two members with the same extension, or bytes that are not a tar
            archive (a truncated shard fails here too).
    """
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
    except tarfile.ReadError as e:
        raise ShardError(f"{shard} is not a readable (uncompressed) tar stream ({e}).") from e
    key: str | None = None
    members: dict[str, bytes] = {}
    seen: set[str] = set()
    try:
        for member in tar:
            check_member_name(member.name, shard)
            if member.isdir():
                continue
            if not member.isfile():
                raise ShardError(
                    f"{shard}: member {member.name!r} is a link or special file; only regular files are allowed."
                )
            k, ext = split_member_name(member.name, shard)
            fh = tar.extractfile(member)
            data = fh.read() if fh is not None else b""
            if len(data) != member.size:
                raise ShardError(f"{shard} ends inside member {member.name!r} (truncated shard).")
            if k != key:
                if key is not None:
                    yield key, members
                if k in seen:
                    raise ShardError(
                        f"{shard}: the members of sample {k!r} are not adjacent; write each sample's files "
                        "one after the other (as `mmrec shard` and webdataset's writers do)."
                    )
                seen.add(k)
                key, members = k, {}
            if ext in members:
                raise ShardError(f"{shard}: sample {k!r} has two {ext!r} members.")
            members[ext] = data
    except tarfile.TarError as e:
        raise ShardError(f"{shard} is damaged or truncated ({type(e).__name__}: {e}).") from e
    if key is not None:
        yield key, members
