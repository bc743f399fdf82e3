"""DataModules, splits and dataset converters (installed as ``mmrec.datamodules``).

Every DataModule registers itself in :data:`DATAMODULES` (``data/sequential``, ``data/vip5``,
``data/multidomain``); converters live in :mod:`mmrec.datamodules.converters`.
"""

from mmrec.datamodules.registry import DATAMODULES, create_datamodule

__all__ = ["DATAMODULES", "create_datamodule"]
