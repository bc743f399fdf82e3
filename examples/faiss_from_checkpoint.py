"""Serve a trained mmrec model from your own faiss code.

mmrec scores ``query . item``: the model's item table (``Recommender.item_vectors()``, ``(N, d)``, row ``r``
= ``item_ids[r]``) and its query vectors (``user_vectors`` / ``history_vectors``) are all a retrieval
system needs. Here they go into a plain ``faiss.IndexFlatIP``; the user's history is removed by fetching
``k + len(history)`` neighbours and filtering. The lists equal ``mmrec recommend``'s.

Run it from the repository root, on the README's demo SASRec (``mmrec fit --config configs/sasrec_demo.yaml``
writes ``runs/sasrec_demo/version_0``; about 1 min on 2 CPU cores with ``--trainer.max_epochs=1``)::

    python examples/faiss_from_checkpoint.py --ckpt runs/sasrec_demo/version_0/checkpoints/last.ckpt --users u00001,u00002
"""

from __future__ import annotations

import argparse
import json
import sys

import faiss
import numpy as np

from mmrec.retrieval.recommender import Recommender


def recommend_with_faiss(ckpt: str, user_ids: list[str], k: int = 10) -> list[dict[str, object]]:
    """Top-``k`` per user with a hand-built ``IndexFlatIP``; returns ``{"user_id", "items", "scores"}`` dicts."""
    rec = Recommender.from_checkpoint(ckpt)
    table = np.ascontiguousarray(rec.item_vectors().numpy(), dtype=np.float32)  # (N, d)
    index = faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    queries = np.ascontiguousarray(rec.user_vectors(user_ids).numpy(), dtype=np.float32)  # (B, d)
    out = []
    for uid, q in zip(user_ids, queries):
        seen = set(rec.user_history(uid))
        scores, rows = index.search(q[None, :], min(k + len(seen), table.shape[0]))
        items = [
            (rec.item_ids[r], float(s))
            for s, r in zip(scores[0], rows[0])
            if r >= 0 and rec.item_ids[r] not in seen
        ][:k]
        out.append({"user_id": uid, "items": [i for i, _ in items], "scores": [s for _, s in items]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--users", required=True, help="comma-separated user ids")
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args(argv)
    for line in recommend_with_faiss(a.ckpt, [u for u in a.users.split(",") if u], a.k):
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
