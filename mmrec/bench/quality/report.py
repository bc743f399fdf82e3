"""The quality table: one row per model beside MostPop, mean ± std over seeds, significance, and flags.

:func:`summarise` turns run payloads (:mod:`mmrec.bench.quality.runner`) into rows:

- test HR@{5,10,20}, NDCG@{5,10,20}, MRR, coverage@10 and same_top10_share, mean ± std over seeds (the
  weights of each run's best validation epoch), and the same accuracy metrics on tail, cold and head items;
- ``Δ vs MostPop``: relative test NDCG@10 change against the MostPop reference row;
- paired significance: every test user's NDCG@10 is averaged over the seeds, and a two-sided Wilcoxon
  signed-rank test over users (:func:`mmrec.bench.stats.paired_wilcoxon`) compares each model with MostPop
  and with **the best baseline** (the ``baseline: true`` row, MostPop included, with the highest mean
  *validation* NDCG@10: chosen without looking at test); p-values are Holm-adjusted over the models compared
  (:func:`mmrec.bench.stats.holm`);
- ``warning``: a model is **flagged** when its rankings collapse (``same_top10_share`` above
  ``flags.max_same_top10_share``) or when it does not beat MostPop (test NDCG@10 below
  ``(1 + flags.min_gain_over_mostpop)`` x MostPop's, or Holm p against MostPop >= ``flags.alpha``).

:func:`write_reports` writes ``results.md``, ``results.csv``, ``results.png`` and ``summary.json``;
:func:`final_json` is the one-line result the benchmark prints last.

Example:
    >>> summary = summarise(payloads, config, meta)  # doctest: +SKIP
    >>> write_reports(summary, Path("runs/bench/quality/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.bench.quality.config import MOSTPOP_KEY, QualityConfig
from mmrec.bench.quality.plot import plot
from mmrec.bench.report import _num, _p, _per_user_mean, _pm
from mmrec.bench.stats import holm, mean_std, paired_wilcoxon

ACCURACY = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
LISTS = ("coverage@10", "same_top10_share")
GROUPS = ("tail", "cold", "head")
#: what the final JSON line carries per model (means)
JSON_METRICS = (*ACCURACY, *LISTS, "tail/ndcg@10", "tail/hr@10", "cold/ndcg@10", "cold/hr@10")


def _mean_std_of(payloads: Sequence[Mapping[str, Any]], metric: str) -> tuple[float, float]:
    return mean_std([p["test"].get(metric, math.nan) for p in payloads])


def _memory_mib(payloads: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    mems = [p["memory"] for p in payloads if p.get("memory")]
    if not mems:
        return math.nan, "-"
    if "cuda_peak" in mems[0]:
        return float(np.mean([m["cuda_peak"] for m in mems])), "cuda_peak"
    return float(np.mean([m["total"] for m in mems])), "cpu_estimate"


def _row(label: str, payloads: Sequence[Mapping[str, Any]], baseline: bool) -> dict[str, Any]:
    first = payloads[0]
    spe = [p["seconds_per_epoch"] for p in payloads if p.get("seconds_per_epoch") is not None]
    mem, mem_kind = _memory_mib(payloads)
    row: dict[str, Any] = {
        "label": label,
        "model": first["model"],
        "baseline": baseline,
        "seeds": len(payloads),
        "requires_training": bool(first.get("requires_training", True)),
        "trainable_params": int(first.get("trainable", 0)),
        "test_users": len(first["per_user"]["user_ids"]),
        "epochs_mean": float(np.mean([p["epochs"] for p in payloads])),
        "best_epoch_mean": float(np.mean([p["best_epoch"] for p in payloads])),
        "s_per_epoch": float(np.mean(spe)) if spe else math.nan,
        "memory_mib": mem,
        "memory_kind": mem_kind,
        "val_ndcg@10_mean": float(np.mean([p["val"].get("ndcg@10", math.nan) for p in payloads])),
    }
    for m in (*ACCURACY, *LISTS):
        row[f"{m}_mean"], row[f"{m}_std"] = _mean_std_of(payloads, m)
    for g in GROUPS:
        for m in ACCURACY:
            row[f"{g}/{m}_mean"], row[f"{g}/{m}_std"] = _mean_std_of(payloads, f"{g}/{m}")
        row[f"{g}/num_users"] = int(first["test"].get(f"{g}/num_users", 0))
    return row


def _paired_p(mine: Mapping[str, float], other: Mapping[str, float]) -> float:
    common = sorted(set(mine) & set(other))
    return paired_wilcoxon([mine[u] for u in common], [other[u] for u in common])


def summarise(
    records: Sequence[Mapping[str, Any]], config: QualityConfig, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """One row per model (recipe order, MostPop first when added) with significance and flags.

    Args:
        records: run payloads (one per model and seed).
        config: the recipe (baselines, flag thresholds).
        meta: dataset / protocol / split facts for the header.

    Returns:
        ``{"rows", "meta", "reference", "best_baseline", "markdown"}``.
    """
    entries = config.with_reference()
    groups: dict[str, list[Mapping[str, Any]]] = {e.display: [] for e in entries}
    for r in records:
        groups.setdefault(r["label"], []).append(r)
    groups = {k: v for k, v in groups.items() if v}
    is_base = {e.display: e.baseline or e.model == MOSTPOP_KEY for e in entries}
    rows = [_row(label, ps, is_base.get(label, False)) for label, ps in groups.items()]
    reference = next((r["label"] for r in rows if r["model"] == MOSTPOP_KEY), None)
    baselines = [r for r in rows if r["baseline"]]
    best = max(baselines, key=lambda r: r["val_ndcg@10_mean"])["label"] if baselines else None
    users = {label: _per_user_mean(ps) for label, ps in groups.items()}
    for r in rows:
        r["p_vs_best_baseline"] = (
            math.nan if (best is None or r["label"] == best) else _paired_p(users[r["label"]], users[best])
        )
        r["p_vs_mostpop"] = (
            math.nan
            if (reference is None or r["label"] == reference)
            else _paired_p(users[r["label"]], users[reference])
        )
    for key in ("p_vs_best_baseline", "p_vs_mostpop"):
        for r, adj in zip(rows, holm([r[key] for r in rows])):
            r[f"{key}_holm"] = adj
    ref_nd = next((r["ndcg@10_mean"] for r in rows if r["label"] == reference), math.nan)
    f = config.flags
    for r in rows:
        if ref_nd == 0.0:  # MostPop scores 0 (cold-item split: popularity never ranks an unseen item)
            r["delta_vs_mostpop"] = math.inf if r["ndcg@10_mean"] > 0 else 0.0
        else:
            r["delta_vs_mostpop"] = (
                (r["ndcg@10_mean"] / ref_nd - 1.0) if ref_nd and ref_nd == ref_nd else math.nan
            )
        warnings: list[str] = []
        if r["label"] != reference:
            share = r["same_top10_share_mean"]
            if share == share and share > f.max_same_top10_share:
                warnings.append(f"COLLAPSED: {share:.0%} of users get the same top-10")
            p = r["p_vs_mostpop_holm"]
            gain_ok = r["delta_vs_mostpop"] >= f.min_gain_over_mostpop
            if reference is not None and not (gain_ok and p == p and p < f.alpha):
                warnings.append(
                    f"NOT ABOVE MostPop: NDCG@10 {r['delta_vs_mostpop']:+.1%}, p {_p(p)} (needs >= "
                    f"{f.min_gain_over_mostpop:+.0%} and p < {f.alpha})"
                )
        r["flagged"] = bool(warnings)
        r["warning"] = "; ".join(warnings) if warnings else ("reference" if r["label"] == reference else "-")
    summary: dict[str, Any] = {
        "rows": rows,
        "meta": dict(meta),
        "reference": reference,
        "best_baseline": best,
    }
    summary["markdown"] = markdown_report(summary)
    return summary


# --------------------------------------------------------------------------------------------- markdown
def _cell(r: Mapping[str, Any], metric: str) -> str:
    return _pm(r[f"{metric}_mean"], r[f"{metric}_std"])


def main_table(rows: Sequence[Mapping[str, Any]], best: str | None) -> str:
    """The overall table: accuracy, lists, Δ and p against MostPop and the best baseline, cost, warning."""
    head = (
        "| model | seeds | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 | MRR | coverage@10 | same top-10 "
        f"| ΔNDCG@10 vs MostPop | p vs MostPop (Holm) | p vs best baseline {best or '-'} (Holm) | s / epoch | "
        "memory MiB | epochs (best) | warning |"
    )
    lines = [head, "|---|---:|" + "---:|" * 15 + "---|"]
    for r in rows:
        cells = [
            r["label"] + (" (baseline)" if r["baseline"] else ""),
            str(r["seeds"]),
            *(_cell(r, m) for m in (*ACCURACY, *LISTS)),
            "-"
            if math.isnan(r["delta_vs_mostpop"]) or r["warning"] == "reference"
            else f"{r['delta_vs_mostpop']:+.1%}",
            _p(r["p_vs_mostpop_holm"]),
            _p(r["p_vs_best_baseline_holm"]),
            _num(r["s_per_epoch"], "{:.2f}"),
            _num(r["memory_mib"]),
            f"{r['epochs_mean']:.1f} ({r['best_epoch_mean']:.1f})"
            if r["requires_training"]
            else "no training",
            r["warning"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(rows: Sequence[Mapping[str, Any]], group: str) -> str:
    """Accuracy restricted to the test targets of one item group (tail, cold, head)."""
    lines = [
        "| model | test users | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 | MRR |",
        "|---|---:|" + "---:|" * 7,
    ]
    for r in rows:
        cells = [r["label"], f"{r[f'{group}/num_users']:,}", *(_cell(r, f"{group}/{m}") for m in ACCURACY)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(summary: Mapping[str, Any]) -> str:
    """Header (dataset, protocol, groups, thresholds), the overall table, the tail and cold tables, notes."""
    meta = summary["meta"]
    rows = summary["rows"]
    flagged = [r["label"] for r in rows if r["flagged"]]
    lines = [
        f"## Quality: {meta.get('recipe', '')}",
        "",
        f"- dataset: {meta.get('dataset')} ({meta.get('items', 0):,} items, {meta.get('users', 0):,} users), "
        f"{meta.get('test_users', 0):,} test users",
        f"- protocol: **{meta.get('protocol_text', 'not declared')}**",
        f"- item groups (training popularity): head = the {meta.get('head_fraction', 0):.0%} most popular items "
        f"({meta.get('head_items', 0):,}), tail = the others ({meta.get('tail_items', 0):,}), cold = at most "
        f"{meta.get('cold_max_count')} training interactions ({meta.get('cold_items', 0):,})",
        f"- seeds {meta.get('seeds')}, {meta.get('device')} ({meta.get('threads')} threads); selection and early "
        f"stopping on {meta.get('monitor')}; best baseline (on validation): {summary.get('best_baseline')}",
        f"- flagged: {', '.join(flagged) if flagged else 'none'}",
        "",
        main_table(rows, summary.get("best_baseline")),
        "",
        "### Tail items",
        "",
        group_table(rows, "tail"),
        "",
        "### Cold items",
        "",
        group_table(rows, "cold"),
        "",
        "Test metrics, mean ± std over seeds, each run evaluated with the weights of its best validation epoch "
        "(models without training: one run). coverage@10: distinct items in all test users' top-10 lists / "
        "catalogue size; same top-10: share of users whose top-10 list (unmasked ranking) is the most common "
        "one (MostPop: 1 by construction). p: two-sided Wilcoxon signed-rank over test users of per-user "
        "NDCG@10 averaged over seeds, Holm-adjusted over the models compared. Warning: COLLAPSED when same "
        f"top-10 > {meta.get('max_same_top10_share')}; NOT ABOVE MostPop unless NDCG@10 >= "
        f"{1 + meta.get('min_gain_over_mostpop', 0):.2f} x MostPop's with Holm p < {meta.get('alpha')}. "
        f"Memory: {meta.get('memory_note', '')}. s / epoch: training wall-clock, validation excluded.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- files
def final_json(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"dataset", "protocol", "results": {label: {metric: mean, ..., "warning": str | None}}}``."""
    results: dict[str, Any] = {}
    for r in summary["rows"]:
        entry = {m: round(r[f"{m}_mean"], 6) for m in JSON_METRICS if r[f"{m}_mean"] == r[f"{m}_mean"]}
        entry["val/ndcg@10"] = round(r["val_ndcg@10_mean"], 6)
        entry["seeds"] = r["seeds"]
        entry["flagged"] = r["flagged"]
        entry["warning"] = None if r["warning"] in ("-", "reference") else r["warning"]
        results[r["label"]] = entry
    meta = summary["meta"]
    return {"dataset": meta.get("dataset"), "protocol": meta.get("protocol"), "results": results}


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``results.csv``: one row per model, every column of the summary rows."""
    fields = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def write_reports(summary: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``results.png`` and ``summary.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"results.{k}" for k in ("md", "csv", "png")}
    paths["json"] = out / "summary.json"
    paths["md"].write_text(summary["markdown"], encoding="utf-8")
    write_csv(summary["rows"], paths["csv"])
    plot(summary, paths["png"])
    record = {k: v for k, v in summary.items() if k != "markdown"} | {"final": final_json(summary)}
    paths["json"].write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return paths
