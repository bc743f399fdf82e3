"""The data layer: the canonical dataset schema (items, interactions, ``dataset.json``) and file hashing.

Everything above it (embedding stores, the embedding pipeline, converters, DataModules) reads and writes
datasets through this package; it depends on nothing else in mmrec.
"""
