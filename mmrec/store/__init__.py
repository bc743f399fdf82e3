"""Embedding stores: content-addressed, memory-mapped item feature matrices (DESIGN §3)."""

from mmrec.data.hashing import file_sha256
from mmrec.store.reader import (
    EmbeddingStore,
    StoreError,
    resolve_store_path,
    store_fingerprint,
    write_store,
)

__all__ = [
    "EmbeddingStore",
    "StoreError",
    "file_sha256",
    "resolve_store_path",
    "store_fingerprint",
    "write_store",
]
