"""Embedding stores: content-addressed, memory-mapped item feature matrices (DESIGN §3)."""

from mmrec.store.reader import (
    EmbeddingStore,
    StoreError,
    file_sha256,
    store_fingerprint,
    write_store,
)

__all__ = ["EmbeddingStore", "StoreError", "file_sha256", "store_fingerprint", "write_store"]
