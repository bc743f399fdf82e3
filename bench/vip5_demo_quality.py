"""Does VIP5's ranking head learn? The demo recipe beside MostPop, on the same split and protocol.

For each seed, trains ``configs/vip5_demo.yaml`` (or ``--config``) exactly as ``mmrec fit`` does
(LightningCLI, best checkpoint by validation NDCG@10), then on the same datamodule:

- the model's validation (seen templates, the configured user subset) and test metrics (seen and unseen
  templates, every user), full ranking with the protocol of the config (history masked by default);
- **MostPop**: items ranked by their number of *training* interactions, scored by the same evaluator on the
  same examples with the same masking;
- ``same_top10_share`` and ``coverage@10`` from :class:`~mmrec.metrics.FullRankingEvaluator`: the share of
  test users whose top-10 (before history masking) equals the most common top-10 -- a collapsed model that
  ignores the user scores ~1.0 -- and the share of the catalogue in the union of the (masked) top-10s;
- ``unseen_tokens_differ``: the share of test examples whose unseen-template prompt has other token ids
  than their seen-template prompt, and ``unseen_top10_differs``: the share whose top-10 changes with the
  template (the model reads the prompt's wording, not only the items).

Extra arguments are passed to the LightningCLI (``--model.init_args.head.user_embedding=false``), so
ablations use the one override syntax. Prints a table, then one JSON line.

Example:
    OMP_NUM_THREADS=1 python bench/vip5_demo_quality.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from common import emit_json, print_table
except ImportError:  # pragma: no cover - python -m bench.vip5_demo_quality
    from bench.common import emit_json, print_table

REPO = Path(__file__).resolve().parents[1]
METRICS = ("hr@10", "ndcg@10", "mrr")


def _cli(config: str, seed: int, workdir: str, extra: list[str]) -> Any:
    """The model, datamodule and trainer exactly as ``mmrec fit --config <config>`` builds them (mmrec's
    LightningCLI and config dialect: registry keys as class paths), not run."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from mmrec.cli.dialect import PARSER_MODE, rewrite_class_args
    from mmrec.cli.trainer import MMRecCLI

    args = ["--config", config, "--seed_everything", str(seed), "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={workdir}", *rewrite_class_args(extra)]  # fmt: skip
    return MMRecCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        save_config_callback=None, auto_configure_optimizers=False, args=args,
        parser_kwargs={"parser_mode": PARSER_MODE},
    )  # fmt: skip


def _evaluate(model: Any, dm: Any, stage: str) -> dict[str, dict[str, float]]:
    """Model and MostPop metrics per (template split) of ``stage``, plus the top-10 lists (unmasked)."""
    import torch

    from mmrec.metrics import FullRankingEvaluator

    pop = dm.item_popularity().clone()
    pop[0] = float("-inf")
    out: dict[str, Any] = {}
    with torch.no_grad():
        items = model.item_vectors()
        for s in dm.eval_sets(stage):
            if s.task != "sequential":
                continue
            loader = torch.utils.data.DataLoader(s, batch_size=128, collate_fn=dm._collate)
            ev = FullRankingEvaluator(ks=(10,), ignore_columns=(0,), list_k=10)
            ev_pop = FullRankingEvaluator(ks=(10,), ignore_columns=(0,), list_k=10)
            tops: list[tuple[int, ...]] = []
            ids: list[tuple[int, ...]] = []
            for b in loader:
                scores = model.score_all(b, items)
                raw = scores.clone()
                raw[:, 0] = float("-inf")
                tops += [tuple(r) for r in raw.topk(10, dim=1).indices.tolist()]  # unmasked, for unseen vs seen
                ids += [tuple(r[m].tolist()) for r, m in zip(b["input_ids"], b["attention_mask"].bool())]
                ex = (b["exclude_rows"], b["exclude_cols"])
                ev.update(scores, b["targets"], exclude=ex)
                ev_pop.update(pop.expand(len(scores), -1).clone(), b["targets"], exclude=ex)
            r, rp = ev.compute(), ev_pop.compute()
            out[s.split] = {
                "model": {k: float(r[k]) for k in METRICS},
                "mostpop": {k: float(rp[k]) for k in METRICS},
                "same_top10_share": float(r["same_top10_share"]),
                "coverage@10": float(r["coverage@10"]),
                "mostpop_coverage@10": float(rp["coverage@10"]),
                "tops": tops,
                "ids": ids,
            }
    return out


def run_seed(args: argparse.Namespace, seed: int, extra: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        cli = _cli(args.config, seed, work, extra)
        model, dm, trainer = cli.model, cli.datamodule, cli.trainer
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_s = time.perf_counter() - t0
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=False)
            model.on_load_checkpoint(state)
            model.load_state_dict(state["state_dict"])
        model.eval()
        val = _evaluate(model, dm, "valid")
        test = _evaluate(model, dm, "test")
    rec: dict[str, Any] = {
        "seed": seed, "fit_s": round(fit_s, 1), "best_checkpoint": Path(best).name,
        "mask_history": bool(dm.evaluation.mask_history), "protocol": dm.protocol.describe(),
    }  # fmt: skip
    keep = ("model", "mostpop", "same_top10_share", "coverage@10", "mostpop_coverage@10")
    rec["valid"] = {k: val["seen"][k] for k in keep}
    for split in test:
        rec[f"test_{split}"] = {k: test[split][k] for k in keep}
    if "unseen" in test and "seen" in test:
        seen, unseen = test["seen"], test["unseen"]
        n = len(seen["ids"])
        rec["unseen_tokens_differ"] = sum(a != b for a, b in zip(seen["ids"], unseen["ids"])) / n
        rec["unseen_top10_differs"] = sum(a != b for a, b in zip(seen["tops"], unseen["tops"])) / n
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "vip5_demo.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    args, extra = p.parse_known_args()
    t_all = time.time()
    runs = []
    for seed in args.seeds:
        rec = run_seed(args, seed, extra)
        print(f"[bench] {json.dumps(rec)}", flush=True)
        runs.append(rec)
    rows = []
    for key in ("valid", "test_seen", "test_unseen"):
        if key not in runs[0]:
            continue
        for who in ("model", "mostpop"):
            row: dict[str, Any] = {"split": key, "ranker": who}
            for m in METRICS:
                vals = [r[key][who][m] for r in runs]
                row[m] = statistics.mean(vals)
                row[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            if who == "model":
                row["same_top10_share"] = statistics.mean(r[key]["same_top10_share"] for r in runs)
                row["coverage@10"] = statistics.mean(r[key]["coverage@10"] for r in runs)
            else:
                row["same_top10_share"] = 1.0  # one list for every user by construction
                row["coverage@10"] = statistics.mean(r[key]["mostpop_coverage@10"] for r in runs)
            rows.append(row)
    print_table(rows, ["split", "ranker", "hr@10", "hr@10_std", "ndcg@10", "ndcg@10_std", "mrr",
                       "same_top10_share", "coverage@10"])  # fmt: skip
    summary = {r["split"] + "/" + r["ranker"]: {m: r[m] for m in METRICS} for r in rows}
    ratios = "  ".join(
        f"{m} x{summary['test_seen/model'][m] / max(summary['test_seen/mostpop'][m], 1e-12):.2f}" for m in METRICS
    )
    print(f"[bench] test (seen templates), model / MostPop: {ratios}")
    emit_json({
        "bench": "vip5_demo_quality", "config": args.config, "overrides": extra, "seeds": args.seeds,
        "protocol": runs[0]["protocol"],
        "summary": summary,
        "test_ratio_vs_mostpop": {
            m: summary["test_seen/model"][m] / max(summary["test_seen/mostpop"][m], 1e-12) for m in METRICS
        },
        "same_top10_share": statistics.mean(r["test_seen"]["same_top10_share"] for r in runs),
        "unseen_tokens_differ": statistics.mean(r.get("unseen_tokens_differ", 0.0) for r in runs),
        "unseen_top10_differs": statistics.mean(r.get("unseen_top10_differs", 0.0) for r in runs),
        "wall_s": round(time.time() - t_all, 1), "runs": runs,
    })  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
