"""Torch-only building blocks shared by models, adapters and the cross-domain code.

``item_encoder`` (ID embeddings fused with projected frozen features) and ``sequence_encoder`` (the causal
transformer over item sequences). Nothing here knows about Lightning, datamodules or the CLI.
"""
