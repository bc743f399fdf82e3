"""The DataModule registry: ``data/sequential``, ``data/vip5``, ``data/multidomain``...

A DataModule module registers its class itself (``@DATAMODULES.register("data/sequential")``); the
registry imports the modules of :mod:`mmrec.datamodules` (and the ``mmrec.datamodules`` entry-point group)
on its first lookup.

Example:
    >>> DATAMODULES.get("data/sequential").__name__
    'SequentialDataModule'
"""

from __future__ import annotations

from typing import Any

from mmrec.registry import Registry

DATAMODULES: Registry[Any] = Registry(
    "datamodule", packages=("mmrec.datamodules",), entry_point_group="mmrec.datamodules"
)


def create_datamodule(name: str, /, **kwargs: Any) -> Any:
    """Build a registered DataModule, e.g. ``create_datamodule("data/sequential", dataset="assets/demo")``."""
    return DATAMODULES.create(name, **kwargs)
