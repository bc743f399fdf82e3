"""``results.png`` of the quality benchmark: accuracy beside MostPop, overall / tail / cold, and collapse.

Left: test NDCG@10 (mean ± std over seeds) of every model overall, on tail items and on cold items, with
MostPop's overall value as a dashed line; flagged models are hatched. Right: same_top10_share against
coverage@10, with the collapse threshold: a working model sits low (user-dependent lists) and right (many
items recommended); MostPop sits at the top left.

Example:
    >>> plot(summary, Path("results.png"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plot(summary: Mapping[str, Any], path: Path) -> None:
    """Draw the two panels (see the module docstring) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    meta = summary["meta"]
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.27
    for j, (prefix, name) in enumerate((("", "overall"), ("tail/", "tail"), ("cold/", "cold"))):
        means = np.array([r[f"{prefix}ndcg@10_mean"] for r in rows], dtype=float)
        stds = np.nan_to_num(np.array([r[f"{prefix}ndcg@10_std"] for r in rows], dtype=float))
        bars = ax1.bar(x + (j - 1) * width, np.nan_to_num(means), width, yerr=stds, capsize=2, label=name)
        for bar, r in zip(bars, rows):
            if r["flagged"]:
                bar.set_hatch("//")
    ref = next((r for r in rows if r["label"] == summary.get("reference")), None)
    if ref is not None:
        ax1.axhline(ref["ndcg@10_mean"], color="k", ls="--", lw=1, label=f"{ref['label']} (overall)")
    ax1.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    ax1.set_title("accuracy overall / tail / cold (hatched = flagged)", fontsize=10)
    ax1.legend(fontsize=8)
    threshold = meta.get("max_same_top10_share")
    for r in rows:
        cov, share = r["coverage@10_mean"], r["same_top10_share_mean"]
        if math.isnan(cov) or math.isnan(share):
            continue
        ax2.scatter([cov], [share], s=60, marker="x" if r["flagged"] else "o")
        ax2.annotate(r["label"], (cov, share), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if threshold is not None:
        ax2.axhline(threshold, color="r", ls=":", lw=1, label=f"collapse threshold {threshold}")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("coverage@10 (share of the catalogue in some user's top-10)")
    ax2.set_ylabel("same_top10_share (users with the most common top-10)")
    ax2.set_ylim(-0.03, 1.05)
    ax2.set_title("are the rankings user-dependent?", fontsize=10)
    fig.suptitle(f"quality: {meta.get('recipe', '')} — {meta.get('protocol_text', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
