"""Sparse graphs for graph recommenders: the normalised user-item graph, propagation, item kNN graphs.

Nodes of the user-item graph are users ``0..U-1`` followed by items ``U..U+N`` (item index ``i`` of the
catalogue, padding 0 included, is node ``U + i``; padding has no edge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sym_norm_values(rows: torch.Tensor, cols: torch.Tensor, num_rows: int, num_cols: int) -> torch.Tensor:
    """``1 / sqrt(deg(row) * deg(col))`` for every edge ``(rows[e], cols[e])`` of a bipartite graph.

    Example:
        >>> [round(v, 4) for v in sym_norm_values(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 2, 2).tolist()]
        [0.7071, 0.5, 0.7071]
    """
    deg_r = torch.bincount(rows, minlength=num_rows).float().clamp_min(1)
    deg_c = torch.bincount(cols, minlength=num_cols).float().clamp_min(1)
    return deg_r[rows].rsqrt() * deg_c[cols].rsqrt()


def bipartite_adjacency(
    users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int
) -> torch.Tensor:
    """The symmetrically normalised adjacency ``D^-1/2 A D^-1/2`` of the user-item graph (LightGCN eq. 7).

    Args:
        users: ``(E,)`` user index of each interaction (one edge per distinct pair).
        items: ``(E,)`` item index (1..N) of each interaction.
        num_users: U.
        num_items: N (the graph has ``U + N + 1`` nodes; node ``U`` is padding).

    Returns:
        A coalesced sparse COO tensor ``(U+N+1, U+N+1)``.
    """
    values = sym_norm_values(users, items, num_users, num_items + 1)
    n = num_users + num_items + 1
    idx = torch.cat([torch.stack([users, items + num_users]), torch.stack([items + num_users, users])], 1)
    return torch.sparse_coo_tensor(
        idx, torch.cat([values, values]), (n, n), check_invariants=False
    ).coalesce()


def propagate(adjacency: torch.Tensor, ego: torch.Tensor, num_layers: int) -> torch.Tensor:
    """LightGCN layer combination: the mean of ``ego, A ego, ..., A^K ego`` (``alpha_k = 1 / (K+1)``).

    Args:
        adjacency: ``(n, n)`` sparse normalised adjacency.
        ego: ``(n, d)`` layer-0 embeddings.
        num_layers: K.

    Returns:
        ``(n, d)``.
    """
    out = ego
    h = ego
    for _ in range(num_layers):
        h = torch.sparse.mm(adjacency, h)
        out = out + h
    return out / (num_layers + 1)


@torch.no_grad()
def knn_graph(features: torch.Tensor, valid: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """FREEDOM / LATTICE item-item graph: each item's ``k`` most cosine-similar items (itself included),
    edge weights ``1 / sqrt(deg(i) deg(j))`` over the kNN adjacency (= ``1/k`` when every row has ``k``).

    Args:
        features: ``(N+1, D)`` frozen item features (row 0 padding).
        valid: ``(N+1,)`` bool, items with a real feature; invalid items (and padding) get no edge.
        k: neighbours per item.
        chunk: rows per similarity block (bounds memory to ``chunk x N``).

    Returns:
        A coalesced sparse COO tensor ``(N+1, N+1)``.

    Example:
        >>> f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
        >>> g = knn_graph(f, torch.tensor([False, True, True, True]), k=2).to_dense()
        >>> g[1].nonzero().flatten().tolist(), round(float(g[1, 2]), 3)
        ([1, 2], 0.5)
    """
    n = features.shape[0]
    valid = valid.bool()
    ids = valid.nonzero().flatten()
    if ids.numel() == 0:
        return torch.sparse_coo_tensor(
            torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (n, n), check_invariants=False
        ).coalesce()
    k = min(k, int(ids.numel()))
    normed = F.normalize(features[ids].float(), dim=-1)
    cols = []
    for start in range(0, ids.numel(), chunk):
        sim = normed[start : start + chunk] @ normed.T
        cols.append(ids[sim.topk(k, dim=1).indices])
    rows = ids.repeat_interleave(k)
    col = torch.cat(cols).flatten()
    deg = torch.bincount(rows, minlength=n).float().clamp_min(1)
    values = deg[rows].rsqrt() * deg[col].rsqrt()
    return torch.sparse_coo_tensor(
        torch.stack([rows, col]), values, (n, n), check_invariants=False
    ).coalesce()
