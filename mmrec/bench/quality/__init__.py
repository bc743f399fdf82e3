"""The quality harness (``mmrec bench quality``): models x seeds on one dataset, split and protocol, every row
beside MostPop, broken models flagged.

- :mod:`~mmrec.bench.quality.config`: the recipe dataclasses and :func:`load_quality_config`;
- :mod:`~mmrec.bench.quality.runner`: one (model, seed) run through Lightning and the registries;
- :mod:`~mmrec.bench.quality.report` / :mod:`~mmrec.bench.quality.plot`: the table, flags, files;
- :mod:`~mmrec.bench.quality.benchmark`: :func:`run_quality`, the whole recipe;
- :mod:`~mmrec.bench.quality.beside`: a fitted checkpoint's test metrics beside MostPop's (``make demo``).

Example:
    >>> from mmrec.bench.quality import load_quality_config, run_quality
    >>> run_quality(load_quality_config("configs/bench/demo.yaml", ["seeds=[0]"]))  # doctest: +SKIP
"""

from mmrec.bench.quality.benchmark import run_quality
from mmrec.bench.quality.config import (
    DataConfig,
    FlagsConfig,
    GroupsConfig,
    ModelEntry,
    QualityConfig,
    QualityConfigError,
    TrainerConfig,
    load_quality_config,
)

__all__ = [
    "DataConfig",
    "FlagsConfig",
    "GroupsConfig",
    "ModelEntry",
    "QualityConfig",
    "QualityConfigError",
    "TrainerConfig",
    "load_quality_config",
    "run_quality",
]
