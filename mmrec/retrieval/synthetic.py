"""Synthetic clustered item catalogues for retrieval tests and benchmarks.

Real item embeddings have structure (categories, styles, topics), so uniform random vectors are a poor
stand-in: approximate indexes look worse on them than on real data and their timings are not
representative. :func:`clustered_vectors` draws from a mixture of isotropic Gaussians instead:

- ``clusters`` centres ``c_j ~ N(0, I_d)``;
- long-tailed cluster sizes: component ``j`` has weight ``∝ (j + 1) ** -zipf`` (a few big categories, many
  small ones; ``zipf=0`` gives equal sizes);
- each component has its own width ``spread * U(0.5, 1.5)``, so some clusters are tight and others wide
  and overlapping (with ``spread = 1`` the noise has the norm of a centre).

Queries come from the same mixture with another ``stream`` (so popular clusters are queried more, as
popular categories are). The cluster count is deliberately not a power of two: an index whose cell count
matched the number of clusters exactly would look better than it would on real data.

Rows are generated in fixed blocks, each from its own seeded generator, so the output is deterministic,
independent of how the caller batches, and can be written straight into a memory map (bounded memory at
1M x 64).

Example:
    >>> x = clustered_vectors(1000, 16, clusters=10, seed=0)
    >>> q = clustered_vectors(5, 16, clusters=10, seed=0, stream=1)  # same mixture, other draws
    >>> x.shape, q.dtype.name, bool((x == clustered_vectors(1000, 16, clusters=10, seed=0)).all())
    ((1000, 16), 'float32', True)
"""

from __future__ import annotations

import numpy as np

_BLOCK = 65_536


def clustered_vectors(
    n: int,
    dim: int,
    *,
    clusters: int = 1000,
    spread: float = 1.0,
    zipf: float = 1.0,
    seed: int = 0,
    stream: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``n`` vectors from a seeded, long-tailed mixture of ``clusters`` Gaussians in ``dim`` dimensions.

    Args:
        n: number of vectors.
        dim: dimension.
        clusters: mixture components (centres, weights and widths depend on ``seed`` only).
        spread: mean standard deviation of a component around its centre (centres are ``N(0, 1)``).
        zipf: exponent of the cluster-size distribution (0 = equal sizes).
        seed: seeds the mixture and the draws.
        stream: a different stream gives other draws from the same mixture (e.g. queries vs items).
        out: an ``(n, dim)`` float32 array or memory map to fill (returned), instead of a new array.

    Returns:
        ``(n, dim)`` float32 array.
    """
    if n < 0 or dim < 1 or clusters < 1 or spread < 0 or zipf < 0:
        raise ValueError(
            f"need n >= 0, dim >= 1, clusters >= 1, spread >= 0, zipf >= 0; got n={n}, dim={dim}, "
            f"clusters={clusters}, spread={spread}, zipf={zipf}."
        )
    rng = np.random.default_rng([seed, 0xC1])
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    widths = (spread * rng.uniform(0.5, 1.5, clusters)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1, dtype=np.float64) ** zipf
    cdf = np.cumsum(weights / weights.sum())
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    elif out.shape != (n, dim):
        raise ValueError(f"out must have shape ({n}, {dim}); got {out.shape}.")
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        draw = np.random.default_rng([seed, stream + 1, start])
        assign = np.minimum(np.searchsorted(cdf, draw.random(m)), clusters - 1)
        noise = draw.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = centers[assign] + widths[assign, None] * noise
    return out
