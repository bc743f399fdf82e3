"""Content addresses of embedding stores, computed *before* any network is built (DESIGN §3).

A store's fingerprint (:func:`mmrec.store.store_fingerprint`) hashes the encoder's registry name, the
identity of its weights, the preprocessing (the entry's ``init_args``, columns, decode options and the
mmrec version), the stored dtype and the input (the dataset's content fingerprint plus the columns, or a
digest of the shard files). Computing it must be cheap so that a cache hit costs almost nothing: large
files (weights, shards) are hashed once and their sha256 is remembered in ``<cache>/.file-hashes.json``,
keyed by ``(absolute path, size, mtime)``.

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
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrec import __version__
from mmrec.data.hashing import file_sha256
from mmrec.store.reader import store_fingerprint

HASH_CACHE_FILE = ".file-hashes.json"


class FileHashCache:
    """sha256 of files, remembered by ``(path, size, mtime_ns)`` in a JSON file inside the cache folder.

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
        self._entries: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
                self._entries = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """Hex sha256 of ``path``, computed only when the file's size or mtime changed since last time."""
        p = Path(path).expanduser().resolve()
        st = p.stat()
        entries = self._load()
        hit = entries.get(str(p))
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
        digest = file_sha256(p)
        entries[str(p)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self._save()
        return digest

    def dir_digest(self, path: str | os.PathLike[str]) -> str:
        """Same value as :func:`mmrec.encoders.weights.directory_digest`, with cached file hashes."""
        root = Path(path).expanduser().resolve()
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root)).encode())
            h.update(self.sha256(f).encode())
        return h.hexdigest()

    def _save(self) -> None:
        # concurrent writers (several ranks) may each lose the other's new entry: harmless, it is recomputed
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._entries, f, indent=0, sort_keys=True)
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
    from mmrec.encoders.weights import parse_weights

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
    from mmrec.encoders.media import DECODER_VERSIONS

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
