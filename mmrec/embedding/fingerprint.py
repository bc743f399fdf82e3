"""Content addresses of embedding stores, computed *before* any network is built (DESIGN §3).

A store's fingerprint (:func:`mmrec.store.store_fingerprint`) hashes the encoder's registry name, the
identity of its weights, the preprocessing (the entry's ``init_args``, columns, decode options, the decoder
version and the mmrec version), the stored dtype and the input (the dataset's content fingerprint plus the
sha256 of every media file the column names, or the shards' content hashes / URLs). Everything is content:
a fresh clone of the same data gives the same fingerprints, so its stores are cache hits.

Hashing file contents is what makes that true, and reading every file of a large catalogue is slow, so
:class:`FileHashCache` remembers each file's sha256 in ``<cache>/.file-hashes.json``. A remembered hash is
reused only when the file provably did not change since it was hashed (see the class for the rule).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); f = d / "w.bin"; _ = f.write_bytes(b"abc")
    >>> hashes = FileHashCache(d / "cache")
    >>> hashes.sha256(f)[:12]
    'ba7816bf8f01'
    >>> weights_identity({"weights": str(f)}, hashes)[:19]
    'sha256:ba7816bf8f01'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmrec import __version__
from mmrec.data.hashing import file_sha256
from mmrec.encoders.media import DECODER_VERSIONS
from mmrec.encoders.weights import parse_weights
from mmrec.store.reader import store_fingerprint

HASH_CACHE_FILE = ".file-hashes.json"
_CACHE_VERSION = 2
#: A file changed less than this long before it was hashed may change again within the same timestamp tick
#: (filesystems store times with 1 ns to 2 s resolution); such a hash is not trusted next time ("racy").
RACY_NS = 2_000_000_000
_SAVE_EVERY_S = 30.0

log = logging.getLogger("mmrec.embed")


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class FileHashCache:
    """sha256 of files, remembered in ``<cache>/.file-hashes.json`` and reused only when provably current.

    The rule: a remembered hash of ``path`` is reused when the file's size, mtime, ctime, inode and device
    are all what they were when it was hashed, *and* the file's last change (mtime and ctime) lies at least
    :data:`RACY_NS` (2 s) before the moment it was hashed. Otherwise the file is read and hashed again.

    Why each part: size + mtime alone are not enough, because both can be put back by hand (``touch -d``,
    ``cp -p``, ``rsync -t``, an archive extraction), so a file replaced by another of the same size and
    mtime would be a stale hit. The ctime (inode change time) cannot be set by user-level tools: any write,
    ``chmod`` or rename sets it to the current time, and a file replaced by a rename or a copy is a new
    inode, so inode + device + ctime change whatever mtime says. A file modified within the timestamp
    resolution after being hashed could still keep its ctime; hashes of files that had changed less than
    2 s before hashing are therefore not trusted (like git's "racy" index entries). What remains is a system
    clock set backwards, and filesystems that do not keep inode numbers or ctimes stable (some FUSE and
    network mounts), where the cache simply misses and the files are re-read: slower, never wrong.

    Args:
        cache_dir: the embedding cache folder (created on the first write).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a").write_text("x") and None
        >>> FileHashCache(d).sha256(d / "a") == FileHashCache(d).sha256(d / "a")
        True
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.path = Path(cache_dir) / HASH_CACHE_FILE
        self._entries: dict[str, list[Any]] | None = None
        self.hashed_files = 0  # files read in this process (cache misses)
        self.hashed_bytes = 0

    def _load(self) -> dict[str, list[Any]]:
        if self._entries is None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                files = (
                    data.get("files")
                    if isinstance(data, dict) and data.get("version") == _CACHE_VERSION
                    else None
                )
                self._entries = files if isinstance(files, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def _lookup(self, path: str, st: os.stat_result) -> str | None:
        hit = self._load().get(path)
        if not isinstance(hit, list) or len(hit) != 7 or hit[:5] != _stat_key(st):
            return None
        hashed_at = int(hit[5])
        if max(st.st_mtime_ns, st.st_ctime_ns) > hashed_at - RACY_NS:
            return None  # racy: it changed too close to the moment it was hashed
        return str(hit[6])

    def _hash(self, path: str) -> tuple[str, os.stat_result, int]:
        hashed_at = time.time_ns()
        before = os.stat(path)
        digest = file_sha256(path)
        after = os.stat(path)
        if _stat_key(after) != _stat_key(before):  # written while we read it: do not remember this one
            hashed_at = -1
        return digest, after, hashed_at

    def _remember(self, path: str, st: os.stat_result, hashed_at: int, digest: str) -> None:
        if hashed_at < 0:
            self._load().pop(path, None)
            return
        self._load()[path] = [*_stat_key(st), hashed_at, digest]
        self.hashed_files += 1
        self.hashed_bytes += st.st_size

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """Hex sha256 of ``path``'s bytes (read only when the remembered hash cannot be trusted)."""
        return self.sha256_many([path])[0]

    def sha256_many(
        self, paths: Iterable[str | os.PathLike[str]], *, threads: int = 4, what: str = "files"
    ) -> list[str]:
        """Hex sha256 of each file, in order; files whose hash is not remembered are read in ``threads``
        threads and the cache is saved at the end (and every 30 s on long runs).

        Raises:
            OSError: a file does not exist or cannot be read.
        """
        resolved = [str(Path(p).expanduser().resolve()) for p in paths]
        out: list[str | None] = []
        todo: list[int] = []
        for i, p in enumerate(resolved):
            digest = self._lookup(p, os.stat(p))
            out.append(digest)
            if digest is None:
                todo.append(i)
        if todo:
            if len(todo) > 50:
                log.info("hashing %d %s (remembered in %s for later runs)", len(todo), what, self.path)
            last_save = time.monotonic()
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
                for i, (digest, st, hashed_at) in zip(
                    todo, pool.map(lambda j: self._hash(resolved[j]), todo)
                ):
                    out[i] = digest
                    self._remember(resolved[i], st, hashed_at, digest)
                    if time.monotonic() - last_save > _SAVE_EVERY_S:
                        self._save()
                        last_save = time.monotonic()
            self._save()
        return [str(d) for d in out]

    def dir_digest(self, path: str | os.PathLike[str]) -> str:
        """Same value as :func:`mmrec.encoders.weights.directory_digest`, with cached file hashes."""
        root = Path(path).expanduser().resolve()
        files = sorted(p for p in root.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for f, digest in zip(files, self.sha256_many(files)):
            h.update(str(f.relative_to(root)).encode())
            h.update(digest.encode())
        return h.hexdigest()

    def _save(self) -> None:
        # concurrent writers (several ranks, two runs) may each lose the other's new entries: harmless,
        # those files are hashed again next time
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": _CACHE_VERSION, "files": self._entries}, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs recomputation


def weights_identity(init_args: Mapping[str, Any], hashes: FileHashCache) -> str:
    """Identity of the weights an entry asks for, without loading them.

    ``weights`` absent -> ``"default"`` (the family's default weights for this mmrec version, which is
    part of the fingerprint too); a file -> ``sha256:<hex>``; a folder -> ``dir:<digest>``; a hub tag ->
    ``hub:<tag>``; ``random`` -> ``random-init:<seed>`` (``seed`` from ``init_args``, default 0).

    Args:
        init_args: the entry's ``create_encoder`` keyword arguments.
        hashes: the file-hash cache.

    Raises:
        MissingWeightsError: a local path that does not exist (message names the three ways to supply
            weights).
    """
    if "weights" not in init_args:
        return "default"
    spec = parse_weights(init_args["weights"])
    if spec.kind == "file":
        return f"sha256:{hashes.sha256(spec.value)}"
    if spec.kind == "dir":
        return f"dir:{hashes.dir_digest(spec.value)}"
    if spec.kind == "hub":
        return f"hub:{spec.value}"
    return f"random-init:{int(init_args.get('seed', 0))}"


def preprocessing_key(
    init_args: Mapping[str, Any], columns: Sequence[str], modality: str, decode_args: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``preprocessing`` part of a store fingerprint.

    ``weights`` is left out of ``init_args`` (its identity is hashed separately, so moving a weights file
    does not invalidate the store); the mmrec version and the modality's decoder version
    (:data:`mmrec.encoders.media.DECODER_VERSIONS`) are included, so a decoder whose output changed
    recomputes.
    """
    args = {k: v for k, v in init_args.items() if k != "weights"}
    return {
        "init_args": args,
        "columns": list(columns),
        "modality": modality,
        "decode_args": dict(decode_args),
        "decoder": f"{modality}-v{DECODER_VERSIONS.get(modality, 1)}",
        "mmrec": __version__,
    }


def entry_fingerprint(
    *,
    encoder: str,
    weights: str,
    preprocessing: Mapping[str, Any],
    dtype: str,
    input_fingerprint: str,
    columns: Sequence[str],
) -> str:
    """Fingerprint of one store (16 hex digits): see :func:`mmrec.store.store_fingerprint`.

    Example:
        >>> a = entry_fingerprint(encoder="e/x", weights="default", preprocessing={}, dtype="float16",
        ...                       input_fingerprint="dataset:abc", columns=["image"])
        >>> b = entry_fingerprint(encoder="e/x", weights="default", preprocessing={}, dtype="float32",
        ...                       input_fingerprint="dataset:abc", columns=["image"])
        >>> len(a), a != b
        (16, True)
    """
    return store_fingerprint(
        encoder=encoder,
        weights=weights,
        preprocessing=dict(preprocessing),
        dtype=dtype,
        inputs=f"{input_fingerprint}|columns={','.join(columns)}",
    )
