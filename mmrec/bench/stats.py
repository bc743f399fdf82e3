"""Statistics for benchmark tables: mean ± std over seeds, paired Wilcoxon tests over users, Holm correction.

Example:
    >>> mean_std([1.0, 3.0])[0]
    2.0
    >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value, NaN for none).

    Example:
        >>> mean_std([1.0, 3.0])
        (2.0, 1.4142135623730951)
    """
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples ``a`` vs ``b`` (e.g. per-user NDCG@10 of two
    systems over the same users). Pairs with a zero difference are dropped (``zero_method="wilcox"``); when
    every difference is zero the systems are indistinguishable and the p-value is 1.

    Args:
        a: values of the first system, ``(U,)``.
        b: values of the second system on the same users, ``(U,)``.

    Returns:
        the p-value (NaN when there are no pairs).

    Example:
        >>> round(paired_wilcoxon([1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 0]), 4)
        0.0078
    """
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same shape, got {x.shape} and {y.shape}.")
    if x.size == 0:
        return math.nan
    d = x - y
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over several comparisons); NaN entries
    stay NaN and are not counted.

    Example:
        >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out
