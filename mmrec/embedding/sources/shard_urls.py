"""Naming and opening shards: what ``shards:`` accepts is what webdataset accepts.

:func:`expand_shards` turns a spec into an ordered list of shard names. Each entry of the spec (a string
or a list of strings) is brace-expanded (``media-{000000..000099}.tar``, ``{a,b}``); then

- a URL (``http://``, ``https://``, ``pipe:<command>``, ``file://``, ``gs://``, ``s3://``...) is kept as it is
  (nothing is contacted until the shard is read);
- a local folder stands for its ``*.tar`` files, a glob (``*``, ``?``, ``[``) for the files it matches, and
  a local path must name an existing file.

:func:`open_shard` opens one shard as a binary stream: local paths and ``file://`` directly; ``pipe:``,
``http(s)``, ``gs``, ``ais``, ``hf``, ``sftp``, ``scp`` and ``ftps`` through webdataset's ``gopen`` handlers
(``http(s)`` use ``curl``, or Python's ``urllib`` where ``curl`` is not installed); other object-store
schemes (``s3://``, ``az://``, ``abfs://``...) through ``fsspec`` when it and the scheme's backend (``s3fs``,
``adlfs``...) are installed. ``pipe:aws s3 cp s3://bucket/shard.tar -`` works everywhere the command does.

Example:
    >>> expand_shards("https://host/data/media-{000000..000002}.tar")[1]
    'https://host/data/media-000001.tar'
    >>> expand_shards(["pipe:cat /data/a.tar", "s3://bucket/b.tar"])
    ['pipe:cat /data/a.tar', 's3://bucket/b.tar']
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from mmrec.embedding.sources.base import ShardError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(name: str) -> bool:
    """Whether a shard name is a URL or ``pipe:`` command rather than a local path.

    Example:
        >>> is_url("pipe:curl -s http://x/a.tar"), is_url("s3://b/a.tar"), is_url("/data/a.tar")
        (True, True, False)
    """
    return name.startswith("pipe:") or bool(_SCHEME.match(name))


def local_path(name: str) -> Path | None:
    """The local file a shard name refers to (a path or a ``file://`` URL), else ``None``."""
    if name.startswith("file://"):
        return Path(unquote(urlparse(name).path))
    return None if is_url(name) else Path(name)


def shard_label(name: str) -> str:
    """A short name for messages: the file name of a path or URL, the command of a ``pipe:``."""
    if name.startswith("pipe:"):
        return name if len(name) <= 60 else name[:57] + "..."
    return name.rstrip("/").rsplit("/", 1)[-1] or name


def expand_shards(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The ordered shard names a ``shards:`` spec stands for (local paths made absolute).

    Raises:
        ShardError: a local file that does not exist, a folder without ``.tar`` files, a glob that matches
            nothing, a shard named twice, or an empty spec.

    Example:
        >>> expand_shards("/nonexistent/media-{000000..000001}.tar")
        Traceback (most recent call last):
        ...
        mmrec.embedding.sources.base.ShardError: shard file /nonexistent/media-000000.tar does not exist; write shards with `mmrec shard --dataset D --out DIR` or fix `shards:`.
    """
    from braceexpand import braceexpand

    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[str] = []
    for s in specs:
        for name in braceexpand(str(s)):
            if is_url(name):
                out.append(name)
                continue
            p = Path(name).expanduser()
            if p.is_dir():
                found = sorted(p.glob("*.tar"))
                if not found:
                    raise ShardError(f"shard folder {p} holds no .tar files; write some with `mmrec shard`.")
                out.extend(str(f.resolve()) for f in found)
            elif any(ch in name for ch in "*?["):
                matches = sorted(glob.glob(str(p)))
                if not matches:
                    raise ShardError(f"shard pattern {name!r} matches no file; fix `shards:`.")
                out.extend(str(Path(g).resolve()) for g in matches)
            elif p.is_file():
                out.append(str(p.resolve()))
            else:
                raise ShardError(
                    f"shard file {p} does not exist; write shards with `mmrec shard --dataset D --out DIR` "
                    "or fix `shards:`."
                )
    if not out:
        raise ShardError(f"`shards: {spec!r}` names no shard.")
    if len(set(out)) != len(out):
        dup = sorted({n for n in out if out.count(n) > 1})[:3]
        raise ShardError(f"`shards: {spec!r}` names the same shard twice: {dup}.")
    return out


def open_shard(name: str) -> BinaryIO:
    """Open one shard for reading, as a binary stream (see the module docstring for the schemes).

    Raises:
        ShardError: no handler for the URL's scheme (the message says how to add one).
        OSError: the local file cannot be opened.
    """
    path = local_path(name)
    if path is not None:
        return open(path, "rb")
    scheme = "pipe" if name.startswith("pipe:") else name.split("://", 1)[0].lower()
    if scheme in ("http", "https") and shutil.which("curl") is None:
        import urllib.request

        return urllib.request.urlopen(name, timeout=60)  # type: ignore[no-any-return]
    from webdataset.gopen import gopen, gopen_schemes

    if scheme in gopen_schemes:
        return gopen(name, "rb")  # type: ignore[no-any-return]
    fs_open = _fsspec_opener(scheme)
    if fs_open is None:
        raise ShardError(
            f"no handler for {scheme}:// shards ({name}): use `pipe:<command that writes the shard to stdout>` "
            f"(e.g. `pipe:aws s3 cp {name} -`), or install fsspec with the backend for {scheme}:// "
            "(s3fs, gcsfs, adlfs...)."
        )
    return fs_open(name)


def _fsspec_opener(scheme: str) -> Any:
    try:
        import fsspec
    except ImportError:
        return None
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError):
        return None
    return lambda url: fsspec.open(url, "rb").open()
