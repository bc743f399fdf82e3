"""Items of webdataset tar shards, streamed: local files, URLs, ``pipe:`` commands, object stores.

The shard is the unit of everything: a shard is read front to back by one DataLoader worker of one rank,
its items become one part file, and a resumed run skips the shards whose part is done. The store's rows are
the shards' samples in shard order, so nothing about the items has to be known before reading.

A sample is what webdataset groups under one key. Shards written by ``mmrec shard`` carry ``<key>.json``
(``item_id``, ``text`` fields, ``media``: column -> member extension, ``missing``: column -> why it is absent)
next to the media members; for other shards the item id is the key, text comes from a member named like the
column (or ``txt``), and media from the first member with a usual extension for the modality
(:data:`DEFAULT_EXTENSIONS`).

The input fingerprint hashes each local shard's bytes (cached, see
:class:`~mmrec.embedding.fingerprint.FileHashCache`) and each remote shard's URL: remote shards are
identified by name, so give them immutable (versioned) URLs. The sha256 of every shard as streamed is
recorded in its part and in the store's manifest.

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> from mmrec.data.canonical import write_dataset
    >>> from mmrec.embedding.sources.shard_writer import write_shards
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ds = write_dataset(d / "ds", pd.DataFrame({"item_id": ["a", "b"], "title": ["Red", "Blue"]}),
    ...                    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}),
    ...                    name="toy", source_format="python")
    >>> _ = write_shards(ds.path, d / "shards", columns=[], max_count=1)
    >>> src = ShardSource(str(d / "shards"))
    >>> src.num_shards, [src.load_sample(s, ["title"], "text")[0] for s in src.read(1)]
    (2, ['Blue'])
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrec.embedding.sources.base import MissingValue, ShardError, join_text
from mmrec.embedding.sources.shard_urls import expand_shards, is_url, open_shard, shard_label
from mmrec.embedding.sources.tar_stream import HashingReader, iter_tar_samples
from mmrec.encoders.media import MediaError, decode

# members tried, in order, for shards not written by `mmrec shard` (no media map in the JSON)
DEFAULT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "image"),
    "audio": ("wav", "flac", "mp3", "ogg", "m4a", "opus", "audio"),
    "video": ("mp4", "webm", "mkv", "avi", "mov", "video"),
}


@dataclass
class ShardSample:
    """One sample of a shard: its key, item id, JSON metadata and member bytes by extension."""

    key: str
    item_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    members: dict[str, bytes] = field(default_factory=dict)
    shard: str = ""


@dataclass
class ShardReading:
    """What reading one shard to its end established (filled in when :meth:`ShardSource.read` finishes)."""

    sha256: str | None = None
    nbytes: int = 0
    samples: int = 0


class ShardSource:
    """Webdataset tar shards as an item source, one shard at a time.

    Args:
        spec: what ``shards:`` accepts (see :func:`~mmrec.embedding.sources.shard_urls.expand_shards`).
    """

    def __init__(self, spec: str | Sequence[str]) -> None:
        self.spec = spec
        self.urls = expand_shards(spec)

    @property
    def num_shards(self) -> int:
        return len(self.urls)

    # -------------------------------------------------------------- fingerprint / description
    def input_fingerprint(self, hashes: Any, columns: Sequence[str] = (), modality: str = "text") -> str:
        """``shards:<sha256 over each shard's identity, in order>``: the sha256 of a local shard's bytes
        (cached in ``hashes``), the URL of a remote one."""
        local = [u for u in self.urls if not is_url(u)]
        digests = dict(zip(local, hashes.sha256_many(local, what="shard files")))
        h = hashlib.sha256()
        for u in self.urls:
            h.update((f"sha256:{digests[u]}" if u in digests else f"url:{u}").encode("utf-8"))
            h.update(b"\n")
        return f"shards:{h.hexdigest()}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "shards",
            "spec": self.spec if isinstance(self.spec, str) else list(self.spec),
            "files": list(self.urls),
            "remote": any(is_url(u) for u in self.urls),
        }

    def check_columns(self, columns: Sequence[str], modality: str) -> None:
        """Shards carry no schema: a column absent from a sample is reported per item."""

    # -------------------------------------------------------------- reading
    def read(self, k: int, reading: ShardReading | None = None) -> Iterator[ShardSample]:
        """Stream the samples of shard ``k`` in order; ``reading`` (if given) gets its sha256 and size.

        Raises:
            ShardError: the shard cannot be opened or read, or is malformed (the message names it).
        """
        url = self.urls[k]
        label = shard_label(url)
        try:
            raw = open_shard(url)
        except ShardError:
            raise
        except Exception as e:
            raise ShardError(f"shard {url} could not be opened ({type(e).__name__}: {e}).") from e
        stream = HashingReader(raw)
        n = 0
        try:
            for key, members in iter_tar_samples(stream, url):
                meta: dict[str, Any] = {}
                if "json" in members:
                    try:
                        meta = json.loads(members["json"].decode("utf-8"))
                    except (ValueError, UnicodeDecodeError) as e:
                        raise ShardError(f"{url}: {key}.json is not valid UTF-8 JSON ({e}).") from e
                    if not isinstance(meta, dict):
                        raise ShardError(f"{url}: {key}.json must hold a JSON object.")
                n += 1
                yield ShardSample(key, str(meta.get("item_id", key)), meta, members, label)
            stream.drain()
        except Exception as e:  # a transfer that failed or broke off, a truncated or malformed shard...
            problem = _transfer_problem(raw)
            if problem:  # the transfer's own failure explains the rest
                raise ShardError(f"shard {url} could not be read: {problem}.") from e
            if isinstance(e, ShardError):
                raise
            raise ShardError(f"shard {url} could not be read to its end ({type(e).__name__}: {e}).") from e
        problem = _transfer_problem(raw)
        if problem:
            raise ShardError(f"shard {url} could not be read: {problem}.")
        if reading is not None:
            reading.sha256, reading.nbytes, reading.samples = stream.sha256, stream.nbytes, n

    @property
    def item_ids(self) -> list[str]:
        """Every item id, in order (reads every shard: for small inputs and tests)."""
        return [s.item_id for k in range(self.num_shards) for s in self.read(k)]

    def load_sample(
        self, sample: ShardSample, columns: Sequence[str], modality: str, **decode_args: Any
    ) -> tuple[Any, str]:
        """The raw item of a sample and ``<shard>:<key>.<ext>`` describing where it came from.

        Raises:
            MissingValue: the item had no value in the column when the shard was written.
            MediaError: the member is absent, corrupt, or the text is empty.
        """
        where = f"{sample.shard}:{sample.key}"
        if modality == "text":
            texts = sample.meta.get("text", {})
            parts: list[Any] = []
            for c in columns:
                if c in texts:
                    parts.append(texts[c])
                elif c in sample.members:
                    parts.append(_utf8(sample.members[c], where, c))
                elif "txt" in sample.members and len(columns) == 1:
                    parts.append(_utf8(sample.members["txt"], where, "txt"))
            return join_text(parts), f"{where}.json"
        col = columns[0]
        absent = sample.meta.get("missing", {}).get(col)
        if absent == MissingValue.reason:
            raise MissingValue()
        if absent:
            raise MediaError(str(absent), f"{where}: {col} was {absent} when the shard was written")
        ext = sample.meta.get("media", {}).get(col)
        if ext is None:
            ext = next((e for e in (col, *DEFAULT_EXTENSIONS.get(modality, ())) if e in sample.members), None)
        if ext is None or ext not in sample.members:
            raise MediaError(
                "missing file",
                f"{where} has no member for column {col!r} (members: {sorted(sample.members)})",
            )
        return decode(modality, sample.members[ext], **decode_args), f"{where}.{ext}"


def _utf8(data: bytes, where: str, ext: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MediaError("undecodable text", f"{where}.{ext} is not UTF-8 ({e})") from e


# curl's exit statuses (`curl -f`) that a user can act on
_CURL_EXIT = {
    6: "the host name could not be resolved",
    7: "nothing answered at that address and port",
    22: "the server answered with an HTTP error such as 404 (check the URL) or 403 (check access)",
    28: "the transfer timed out",
    35: "the TLS handshake failed",
    56: "the connection broke off",
}


def _transfer_problem(stream: Any) -> str | None:
    """Close a shard stream and say what went wrong with the transfer, or ``None`` if nothing did.

    For a ``pipe:`` command or a curl download (webdataset's ``Pipe``), a non-zero exit status is reported
    as the command line, the status and, for curl, what the status means.
    """
    closing = None
    try:
        stream.close()
    except Exception as e:
        closing = f"{type(e).__name__}: {e}"
    from webdataset.gopen import Pipe

    if not isinstance(stream, Pipe):
        return closing
    status = stream.proc.poll()
    if status is None or status in stream.ignore_status:
        return None
    popen_args = stream.args[0][0] if stream.args and stream.args[0] else "?"
    cmd = popen_args if isinstance(popen_args, str) else shlex.join(str(a) for a in popen_args)
    hint = _CURL_EXIT.get(status) if cmd.startswith("curl ") else None
    cmd = cmd if len(cmd) <= 200 else cmd[:197] + "..."
    return f"`{cmd}` exited with status {status}" + (f": {hint}" if hint else "")
