"""Benchmark: batched full-ranking evaluation vs a per-user loop, on a Beauty-sized problem.

Synthetic, seeded: ``--users`` user vectors and ``--items`` item vectors (dim 64; item column 0 is the
padding item and is ignored, so scores have ``items + 1`` columns), each user with a random history of
4..12 items (mean 8, duplicates possible; masked) and one random target (which may also be in the
history: repeat consumption, never masked).

Measured in the same run, on the same device:

* **batched**: :class:`mmrec.metrics.FullRankingEvaluator` over user batches (``scores = U_b @ I^T``
  written into one reused buffer, sparse history exclusion, ``update``), all users.
* **loop**: the straightforward per-user code (``s = I @ u``, ``s[history] = -inf``, restore the target,
  count items scored ``>=`` the target, metrics in Python), timed on the first ``--loop-users`` users.

Both must agree exactly on that shared subset (ranks compared one by one, metrics to 1e-6), else the
script fails. Vector entries are multiples of 1/128 in [-1, 1), so every dot product is exact in float32
whatever the summation order (batched GEMM vs per-user GEMV, CPU or GPU): the comparison is exact, not
"close enough".

Usage:
    python bench/eval_full_ranking.py                       # Beauty sizes on CPU
    python bench/eval_full_ranking.py --device cuda
    python bench/eval_full_ranking.py --users 2000 --items 3000 --loop-users 300   # quick

The last line of output is one JSON object with the results.

On a machine whose cores are busy with other work, pass ``--threads 1``: torch's multi-threaded (OpenMP)
kernels of the batched path then stall at their barriers while the per-user loop's small single-threaded
ops do not, which understates the batched path by several times.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from mmrec.metrics import FullRankingEvaluator, target_ranks

try:  # run as `python bench/eval_full_ranking.py` (bench/ on sys.path) ...
    from common import (
        Timer,
        cuda_peak_mb,
        emit_json,
        peak_rss_mb,
        print_table,
        resolve_device,
        seed_everything,
    )
except ImportError:  # ... or as `python -m bench.eval_full_ranking` from the repository root
    from bench.common import (
        Timer,
        cuda_peak_mb,
        emit_json,
        peak_rss_mb,
        print_table,
        resolve_device,
        seed_everything,
    )

BEAUTY_USERS = 22_363
BEAUTY_ITEMS = 12_101


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=BEAUTY_USERS, help="number of users (Beauty: 22,363)")
    p.add_argument("--items", type=int, default=BEAUTY_ITEMS, help="number of items (Beauty: 12,101)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--batch-size", type=int, default=1024, help="users per batch for the batched evaluator")
    p.add_argument("--loop-users", type=int, default=2000, help="users timed in the per-user loop")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (falls back to cpu if CUDA is absent)")
    p.add_argument("--ks", default="1,5,10,20", help="comma-separated cut-offs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)
    for name in ("users", "items", "dim", "batch_size", "loop_users"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.loop_users = min(args.loop_users, args.users)
    args.ks = tuple(sorted({int(k) for k in args.ks.split(",") if k.strip()}))
    return args


def make_problem(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Seeded synthetic problem; vectors are exact multiples of 1/128 (see module docstring)."""
    g = seed_everything(args.seed)
    users = torch.randint(-128, 128, (args.users, args.dim), generator=g).float() / 128
    items = torch.randint(-128, 128, (args.items + 1, args.dim), generator=g).float() / 128
    items[0] = 0.0  # padding item (column 0), ignored by the evaluator
    lengths = torch.randint(4, 13, (args.users,), generator=g)
    indptr = torch.zeros(args.users + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(lengths, 0)
    history = torch.randint(1, args.items + 1, (int(indptr[-1]),), generator=g)
    targets = torch.randint(1, args.items + 1, (args.users,), generator=g)
    on = {"users": users, "items": items, "history": history, "lengths": lengths, "targets": targets}
    out = {k: v.to(device) for k, v in on.items()}
    out["indptr"] = indptr  # kept on CPU: only used to slice
    return out


def batched_eval(
    p: dict[str, torch.Tensor],
    start: int,
    stop: int,
    batch_size: int,
    ks: tuple[int, ...],
    with_ranks: bool = False,
) -> tuple[dict[str, float], torch.Tensor | None]:
    """The batched evaluator over users ``[start, stop)``; optionally also returns every target's rank."""
    ev = FullRankingEvaluator(ks=ks, ignore_columns=(0,)).to(p["users"].device)
    item_t = p["items"].T.contiguous()  # (dim, N)
    # One reused scores buffer: a fresh (B, N) tensor per batch (48 MiB at B=1024) costs page faults.
    buf = torch.empty((min(batch_size, stop - start), item_t.shape[1]), device=item_t.device)
    indptr = p["indptr"]
    all_ranks = []
    for s in range(start, stop, batch_size):
        e = min(s + batch_size, stop)
        scores = torch.mm(p["users"][s:e], item_t, out=buf[: e - s])  # (B, N)
        lens = p["lengths"][s:e]
        rows = torch.repeat_interleave(torch.arange(e - s, device=scores.device), lens)
        cols = p["history"][int(indptr[s]) : int(indptr[e])]
        targets = p["targets"][s:e].unsqueeze(1)  # (B, 1)
        ev.update(scores, targets, exclude=(rows, cols))
        if with_ranks:
            all_ranks.append(target_ranks(scores, targets, exclude=(rows, cols), ignore_columns=(0,))[:, 0])
    return ev.compute(), (torch.cat(all_ranks).cpu() if with_ranks else None)


def loop_eval(
    p: dict[str, torch.Tensor], n_users: int, ks: tuple[int, ...], histories: list[torch.Tensor]
) -> tuple[dict[str, float], list[int]]:
    """The straightforward per-user evaluation loop (what a research script typically does)."""
    sums = {f"{m}@{k}": 0.0 for m in ("hr", "recall", "ndcg") for k in ks}
    sums["mrr"] = 0.0
    ranks = []
    items = p["items"]
    targets = p["targets"].tolist()
    for u in range(n_users):
        s = items @ p["users"][u]  # (N,)
        t = targets[u]
        target_score = s[t].clone()
        s[histories[u]] = -math.inf
        s[0] = -math.inf  # padding item
        s[t] = target_score  # the target is never masked
        rank = int((s >= target_score).sum())
        ranks.append(rank)
        for k in ks:
            hit = rank <= k
            sums[f"hr@{k}"] += hit
            sums[f"recall@{k}"] += hit
            sums[f"ndcg@{k}"] += 1.0 / math.log2(rank + 1) if hit else 0.0
        sums["mrr"] += 1.0 / rank
    return {k: v / n_users for k, v in sums.items()}, ranks


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    import_rss_mb = peak_rss_mb()  # interpreter + torch + torchmetrics, before any data exists
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # keep float32 dot products exact (see docstring)
    torch.set_float32_matmul_precision("highest")
    p = make_problem(args, device)
    indptr = p["indptr"].tolist()
    histories = [p["history"][indptr[u] : indptr[u + 1]] for u in range(args.loop_users)]

    # Warm-up (first-call allocations, CUDA context/kernels), not timed.
    batched_eval(p, 0, min(args.batch_size, args.users), args.batch_size, args.ks)
    loop_eval(p, min(20, args.loop_users), args.ks, histories)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    with Timer(device) as t_batched:
        metrics, _ = batched_eval(p, 0, args.users, args.batch_size, args.ks)
    with Timer(device) as t_loop:
        loop_metrics, loop_ranks = loop_eval(p, args.loop_users, args.ks, histories)

    # Same numbers on the shared subset: ranks exactly, metric means to 1e-6.
    sub_metrics, sub_ranks = batched_eval(p, 0, args.loop_users, args.batch_size, args.ks, with_ranks=True)
    assert sub_ranks is not None
    mismatched = (sub_ranks != torch.tensor(loop_ranks)).nonzero().flatten().tolist()
    assert not mismatched, f"batched and loop ranks differ for users {mismatched[:10]}"
    for name, value in loop_metrics.items():
        assert abs(sub_metrics[name] - value) <= 1e-6, (name, sub_metrics[name], value)
    assert metrics["num_users"] == args.users and sub_metrics["num_users"] == args.loop_users

    batched_ups = args.users / t_batched.seconds
    loop_ups = args.loop_users / t_loop.seconds
    print(
        f"full ranking: {args.users:,} users x {args.items:,} items (+ padding column), dim {args.dim}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    print_table(
        [
            {
                "variant": f"batched (B={args.batch_size})",
                "users": args.users,
                "seconds": t_batched.seconds,
                "users/s": batched_ups,
            },
            {
                "variant": "per-user loop",
                "users": args.loop_users,
                "seconds": t_loop.seconds,
                "users/s": loop_ups,
            },
        ]
    )
    shown = [f"hr@{k}" for k in args.ks] + [f"ndcg@{k}" for k in args.ks] + ["mrr"]
    print("metrics (all users): " + ", ".join(f"{m}={metrics[m]:.5f}" for m in shown))
    print(f"check: batched == loop on the first {args.loop_users:,} users (ranks exact, metrics to 1e-6): ok")
    result: dict[str, object] = {
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "batch_size": args.batch_size,
        "loop_users": args.loop_users,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batched_s": t_batched.seconds,
        "batched_users_per_s": batched_ups,
        "loop_s": t_loop.seconds,
        "loop_users_per_s": loop_ups,
        "speedup": batched_ups / loop_ups,
        "peak_rss_mb": peak_rss_mb(),
        "import_rss_mb": import_rss_mb,
    }
    if device.type == "cuda":
        result["cuda_peak_mb"] = cuda_peak_mb(device)
        result["gpu"] = torch.cuda.get_device_name(device)
    result["metrics_match"] = True
    emit_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
