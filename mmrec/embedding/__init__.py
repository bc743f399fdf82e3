"""Precomputing embedding stores with frozen encoders: ``mmrec embed``, ``mmrec shard``, ``mmrec export``.

- :mod:`~mmrec.embedding.config`: the typed recipe (:class:`EmbedConfig`, :class:`EncoderEntry`);
- :mod:`~mmrec.embedding.fingerprint`: content addresses computed before any model is built (file hashes);
- :mod:`~mmrec.embedding.planning`: an entry's fingerprint, folders and chunking;
- :mod:`~mmrec.embedding.sources`: canonical datasets and streamed webdataset shards (files, URLs, pipes);
- :mod:`~mmrec.embedding.data` / :mod:`~mmrec.embedding.stream`: per-item decoding / preprocessing, batches
  of dataset chunks, shard streams split over DataLoader workers;
- :mod:`~mmrec.embedding.writer`: the Lightning module, datamodule and part writer;
- :mod:`~mmrec.embedding.parts` / :mod:`~mmrec.embedding.merge`: resumable part files and the merge;
- :mod:`~mmrec.embedding.ranks`: how the processes of a distributed run agree;
- :mod:`~mmrec.embedding.build` / :mod:`~mmrec.embedding.pipeline`: one store's build, and :func:`run_embed`;
- :mod:`~mmrec.embedding.export`: ``npy`` / ``parquet`` / RecBole ``.feat`` exports.

Example:
    >>> from mmrec.embedding import EmbedConfig
    >>> cfg = EmbedConfig.from_dict({"dataset": "assets/demo", "cache": "cache/demo",
    ...     "encoders": [{"name": "image", "encoder": "classic/color-histogram", "column": "image"}]})
    >>> cfg.encoders[0].resolved_modality()
    'image'
"""

from typing import Any

from mmrec.embedding.config import ConfigError, EmbedConfig, EmbedError, EncoderEntry

# The pipeline's modules import torch: they load on first use, so that reading a recipe (`mmrec embed
# --help`, `--print_config`) stays fast.
_LAZY = {
    "export_store": "mmrec.embedding.export",
    "read_recbole_feat": "mmrec.embedding.export",
    "StoreResult": "mmrec.embedding.pipeline",
    "plan_entry": "mmrec.embedding.pipeline",
    "run_embed": "mmrec.embedding.pipeline",
    "DatasetSource": "mmrec.embedding.sources",
    "ShardError": "mmrec.embedding.sources",
    "ShardSource": "mmrec.embedding.sources",
    "write_shards": "mmrec.embedding.sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmrec.embedding' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DatasetSource",
    "EmbedConfig",
    "EmbedError",
    "EncoderEntry",
    "ShardError",
    "ShardSource",
    "StoreResult",
    "export_store",
    "plan_entry",
    "read_recbole_feat",
    "run_embed",
    "write_shards",
]
