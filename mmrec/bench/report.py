"""Tables and plots of the cross-domain benchmark: ``results.csv``, ``results.md``, ``results.png``.

:func:`summarise` turns per-run records (one per strategy and seed) into one row per strategy: HR@10 and
NDCG@10 mean ± std over seeds, trainable parameters, memory, seconds per epoch, and a paired significance test
against the baseline (``transfer/scratch``): every test user's NDCG@10 is averaged over the seeds, then a
two-sided Wilcoxon signed-rank test over users (:func:`mmrec.bench.stats.paired_wilcoxon`), with
Holm-adjusted p-values over the strategies compared (:func:`mmrec.bench.stats.holm`).

Example:
    >>> summary = summarise(records, baseline="transfer/scratch", meta={"recipe": "demo"})  # doctest: +SKIP
    >>> write_reports(summary, Path("runs/crossdomain/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.bench.stats import holm, mean_std, paired_wilcoxon

CSV_COLUMNS = (
    "label",
    "strategy",
    "where",
    "tune_layer_norm",
    "seeds",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "hr@10_mean",
    "hr@10_std",
    "ndcg@10_mean",
    "ndcg@10_std",
    "delta_ndcg@10",
    "p_wilcoxon",
    "p_holm",
    "test_users",
    "memory_mib",
    "train_state_mib",
    "activations_mib",
    "memory_kind",
    "s_per_epoch",
    "epochs_mean",
    "best_epoch_mean",
    "val_ndcg@10_mean",
)


def _per_user_mean(payloads: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """user id -> NDCG@10 averaged over the runs (seeds) that evaluated the user."""
    acc: dict[str, list[float]] = {}
    for p in payloads:
        per = p["per_user"]
        for u, v in zip(per["user_ids"], per["ndcg@10"]):
            acc.setdefault(u, []).append(float(v))
    return {u: float(np.mean(v)) for u, v in acc.items()}


def summarise(records: Sequence[Any], baseline: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """One row per strategy label (in first-seen order) with the significance test against ``baseline``.

    Args:
        records: :class:`~mmrec.bench.crossdomain.RunRecord` s (``label``, ``strategy``, ``payload``).
        baseline: the strategy key compared against (``transfer/scratch``); absent = no p-values.
        meta: recipe / data / pre-training facts for the report header.

    Returns:
        ``{"rows": [...], "meta": {...}, "markdown": str}``.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(r.label, []).append(r.payload)
    base_label = next((lbl for lbl, ps in groups.items() if ps[0]["strategy"] == baseline), None)
    base_users = _per_user_mean(groups[base_label]) if base_label else None
    memory_kind = str(meta.get("memory_kind", "cpu_estimate"))
    rows: list[dict[str, Any]] = []
    for label, ps in groups.items():
        first = ps[0]
        hr = mean_std([p["test"]["hr@10"] for p in ps])
        nd = mean_std([p["test"]["ndcg@10"] for p in ps])
        mems = [p["memory"] for p in ps if p.get("memory")]
        mem_key = "cuda_peak" if memory_kind == "cuda_peak" else "total"
        spe = [p["seconds_per_epoch"] for p in ps if p.get("seconds_per_epoch") is not None]
        row: dict[str, Any] = {
            "label": label,
            "strategy": first["strategy"],
            "where": "+".join(first.get("where") or []) or "-",
            "tune_layer_norm": bool(first["spec"].get("tune_layer_norm")),
            "seeds": len(ps),
            "trainable_params": int(first["trainable"]),
            "total_params": int(first["total"]),
            "trainable_pct": 100.0 * first["trainable"] / max(1, first["total"]),
            "hr@10_mean": hr[0],
            "hr@10_std": hr[1],
            "ndcg@10_mean": nd[0],
            "ndcg@10_std": nd[1],
            "delta_ndcg@10": math.nan,
            "p_wilcoxon": math.nan,
            "p_holm": math.nan,
            "test_users": len(first["per_user"]["user_ids"]),
            "memory_mib": float(np.mean([m.get(mem_key, math.nan) for m in mems])) if mems else math.nan,
            "train_state_mib": float(np.mean([m["train_state"] for m in mems])) if mems else math.nan,
            "activations_mib": float(np.mean([m["activations"] for m in mems])) if mems else math.nan,
            "memory_kind": memory_kind,
            "s_per_epoch": float(np.mean(spe)) if spe else math.nan,
            "epochs_mean": float(np.mean([p["epochs"] for p in ps])),
            "best_epoch_mean": float(np.mean([p["best_epoch"] for p in ps])),
            "val_ndcg@10_mean": float(np.mean([p["val_ndcg@10"] for p in ps])),
        }
        if base_users is not None and label != base_label:
            mine = _per_user_mean(ps)
            common = sorted(set(mine) & set(base_users))
            row["p_wilcoxon"] = paired_wilcoxon([mine[u] for u in common], [base_users[u] for u in common])
        rows.append(row)
    if base_label is not None:
        base_nd = next(r["ndcg@10_mean"] for r in rows if r["label"] == base_label)
        for r in rows:
            r["delta_ndcg@10"] = r["ndcg@10_mean"] - base_nd
        adjusted = holm([r["p_wilcoxon"] for r in rows])
        for r, a in zip(rows, adjusted):
            r["p_holm"] = a
    summary = {"rows": rows, "meta": dict(meta), "baseline": base_label}
    summary["markdown"] = markdown_report(summary)
    return summary


# --------------------------------------------------------------------------------------------- formatting
def _pm(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    if p == 0.0:
        return "<1e-300"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _num(v: float, fmt: str = "{:.1f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], baseline: str | None) -> str:
    """The results table in GitHub Markdown."""
    base = baseline or "baseline"
    head = (
        f"| strategy | where | trainable params (%) | HR@10 | NDCG@10 | ΔNDCG@10 vs {base} | p (Wilcoxon) "
        "| p (Holm) | memory MiB | train-state MiB | s / epoch | epochs (best) |"
    )
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["label"],
                    r["where"],
                    f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)",
                    _pm(r["hr@10_mean"], r["hr@10_std"]),
                    _pm(r["ndcg@10_mean"], r["ndcg@10_std"]),
                    "-"
                    if r["label"] == baseline or math.isnan(r["delta_ndcg@10"])
                    else f"{r['delta_ndcg@10']:+.4f}",
                    _p(r["p_wilcoxon"]),
                    _p(r["p_holm"]),
                    _num(r["memory_mib"]),
                    _num(r["train_state_mib"], "{:.2f}"),
                    _num(r["s_per_epoch"], "{:.2f}"),
                    f"{r['epochs_mean']:.1f} ({r['best_epoch_mean']:.1f})",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def markdown_report(summary: Mapping[str, Any]) -> str:
    """Header (data, pre-training), the table, and how each column was measured."""
    meta = summary["meta"]
    rows = summary["rows"]

    def domains(ds: Sequence[Mapping[str, Any]]) -> str:
        return " + ".join(
            f"{d['domain']} ({d['items']:,} items, {d['users']:,} users, {d['interactions']:,} interactions)"
            for d in ds
        )

    pre = meta.get("pretrain") or {}
    mem_kind = meta.get("memory_kind", "cpu_estimate")
    lines = [f"## Cross-domain transfer: {meta.get('recipe', '')}", ""]
    if meta.get("sources"):
        lines.append(f"- sources: {domains(meta['sources'])}")
    if meta.get("target"):
        t = meta["target"][0]
        few = meta.get("few_shot")
        lines.append(
            f"- target: {domains(meta['target'])}; {t['training_users']:,} training users"
            + (f" (few-shot {few:g})" if few else "")
            + f", {t['evaluated_users']:,} test users (leave-one-out, full ranking, history masked)"
        )
    if pre:
        lines.append(
            f"- pre-training: best epoch {pre.get('best_epoch')} of {pre.get('epochs')}, source validation "
            f"NDCG@10 {_num(pre.get('val_ndcg@10', math.nan), '{:.4f}')}, {_num(pre.get('seconds', math.nan), '{:.0f}')} s"
            + (" (cached)" if pre.get("cached") else "")
        )
    lines.append(
        f"- seeds {meta.get('seeds')}, device {meta.get('device')} ({meta.get('threads')} threads), model {json.dumps(meta.get('model', {}))}, "
        f"transfer {json.dumps(meta.get('transfer', {}))}"
    )
    lines += ["", markdown_table(rows, summary.get("baseline")), ""]
    mem_note = (
        "peak `torch.cuda.max_memory_allocated` during training"
        if mem_kind == "cuda_peak"
        else "CPU estimate for one AdamW step on a fixed probe batch (the `batch_size` longest training "
        "sequences): parameters + buffers (frozen feature tables included) + gradients + AdamW states + tensors "
        "saved for backward (measured with `torch.autograd.graph.saved_tensors_hooks`); train-state = the "
        "last three, the part that differs between strategies"
    )
    lines += [
        "HR@10 / NDCG@10: test, mean ± std over seeds, each run evaluated at its best validation NDCG@10 epoch "
        "(early stopping on validation only). p (Wilcoxon): two-sided Wilcoxon signed-rank test over test users "
        "of per-user NDCG@10 averaged over seeds, against the baseline row; p (Holm): Holm-adjusted over the "
        f"strategies compared. Memory: {mem_note}. s / epoch: training epoch wall-clock, validation excluded. "
        "zero-shot: the pre-trained model on the target without training. content-knn: no parameters, no "
        "training: cosine between the sum of the L2-normalised frozen features of the user's history (last: "
        "the most recent item only) and each item's normalised feature, the bar content-based transfer must "
        "clear.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- files
def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``results.csv``: one row per strategy, the columns of :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(summary: Mapping[str, Any], path: Path) -> None:
    """``results.png``: NDCG@10 ± std per strategy (baseline line), and NDCG@10 against trainable parameters
    (log scale; marker area ~ memory)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    labels = [r["label"] for r in rows]
    means = np.array([r["ndcg@10_mean"] for r in rows])
    stds = np.array([r["ndcg@10_std"] for r in rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.cm.tab10(np.arange(len(rows)) % 10)
    ax1.bar(range(len(rows)), means, yerr=stds, color=colors, capsize=3)
    ax1.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=8)
    ax1.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    base = summary.get("baseline")
    if base is not None:
        b = next(r for r in rows if r["label"] == base)
        ax1.axhline(b["ndcg@10_mean"], color="k", ls="--", lw=1, label=f"{base}")
        ax1.legend(fontsize=8)
    for i, r in enumerate(rows):
        if not math.isnan(r["p_holm"]) and r["p_holm"] < 0.05:
            ax1.text(i, means[i] + stds[i], "*", ha="center", va="bottom")
    ax1.set_title("test NDCG@10 (* Holm p < 0.05 vs baseline)", fontsize=10)
    mem = np.array([r["memory_mib"] for r in rows], dtype=float)
    finite = mem[np.isfinite(mem)]
    scale = finite.max() if finite.size else 1.0
    for i, r in enumerate(rows):
        x = max(1, r["trainable_params"])
        size = 30 + 300 * (mem[i] / scale if np.isfinite(mem[i]) else 0.0)
        ax2.errorbar(x, means[i], yerr=stds[i], fmt="none", ecolor=colors[i], alpha=0.6)
        ax2.scatter([x], [means[i]], s=size, color=colors[i], alpha=0.8)
        ax2.annotate(r["label"], (x, means[i]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_xlabel("trainable parameters (log; zero-shot drawn at 1)")
    ax2.set_ylabel("test NDCG@10")
    ax2.set_title("accuracy vs trainable parameters (marker area ~ memory)", fontsize=10)
    fig.suptitle(f"cross-domain transfer: {summary['meta'].get('recipe', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(summary: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md``, ``results.png`` and ``summary.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "results.csv",
        "md": out / "results.md",
        "png": out / "results.png",
        "json": out / "summary.json",
    }
    write_csv(summary["rows"], paths["csv"])
    paths["md"].write_text(summary["markdown"], encoding="utf-8")
    plot(summary, paths["png"])
    paths["json"].write_text(
        json.dumps({k: v for k, v in summary.items() if k != "markdown"}, indent=1, default=str) + "\n",
        encoding="utf-8",
    )
    return paths
