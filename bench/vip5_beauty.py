"""VIP5's full-catalogue ranking head (bundled MiniLM) vs the multimodal sequential model on Beauty.

Compares, on the same leave-one-out split of Amazon 2014 Beauty (the P5 / VIP5 split from
``../shared/data``; item titles as the only content, embedded by MiniLM -- no images ship for it):

- ``vip5_ranking``: :class:`mmrec.models.VIP5Ranking` on the frozen all-MiniLM-L6-v2 with Houlsby adapters
  (reduction 8), k=2 feature tokens per item mention (from the title store, in place of CLIP images),
  whole-word embeddings; exact full ranking over every item;
- ``multimodal_sequential``: :class:`mmrec.models.MultimodalSequential` (ID embedding + projected title
  feature, gated fusion), the foundation issue's model;
- ``vip5_full_finetune``: the same ranking head with every backbone weight trained (no adapters), for the
  cost side: trainable parameters, peak memory and time per epoch (``--ft-epochs``, default 1).

Each (variant, seed) runs in its own process so that peak memory (RSS on CPU, CUDA peak on GPU) is that
variant's alone. Test metrics are full ranking with history masked (HR@K, NDCG@K, MRR; mean and std over
seeds). On 2 CPU cores the full dataset is slow: ``--max-users`` samples users (seeded; the same sample for
every variant and seed), ``--epochs`` / ``--seq-epochs`` bound training. Prints a table, then one JSON line.

Example:
    python bench/vip5_beauty.py --max-users 1000 --epochs 1 --seq-epochs 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    from common import emit_json, peak_rss_mb, print_table
except ImportError:  # pragma: no cover - python -m bench.vip5_beauty
    from bench.common import emit_json, peak_rss_mb, print_table

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMREC_SHARED_DATA", REPO.parent / "shared" / "data"))
KS = (1, 5, 10, 20)


# ----------------------------------------------------------------------------------------- data prep
def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """The (subsampled) Beauty dataset and its MiniLM title store; built once under ``--workdir``."""
    import numpy as np

    from mmrec.data.canonical import CanonicalDataset, write_dataset
    from mmrec.store import EmbeddingStore, write_store
    from mmrec.store.reader import resolve_store_path

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    full = Path(args.dataset)
    if not (full / "dataset.json").is_file():
        from mmrec.cli import main as mmrec_main

        src = SHARED / "amazon2014-beauty"
        if not src.is_dir():
            raise SystemExit(f"no prepared dataset at {full} and no raw Beauty files at {src}.")
        full = work / "beauty"
        if not (full / "dataset.json").is_file():
            rc = mmrec_main([
                "data", "prepare", "sequence/s3rec", str(src / "s3rec" / "Beauty.txt"),
                "--datamaps", str(src / "p5" / "beauty_datamaps.json"),
                "--item_table", str(src / "derived" / "Beauty_items.tsv"), "--out", str(full),
            ])  # fmt: skip
            if rc:
                raise SystemExit("mmrec data prepare failed")
    ds = CanonicalDataset.load(full)
    name = f"beauty-u{args.max_users or 'all'}-s{args.sample_seed}"
    sub = work / name
    if not (sub / "dataset.json").is_file():
        inter = ds.interactions
        users = sorted(inter["user_id"].unique())
        if args.max_users and args.max_users < len(users):
            rng = np.random.default_rng(args.sample_seed)
            users = sorted(rng.choice(users, size=args.max_users, replace=False).tolist())
        inter = inter[inter["user_id"].isin(set(users))]
        items = (
            ds.items[ds.items["item_id"].isin(set(inter["item_id"]))] if args.interacted_items else ds.items
        )
        write_dataset(sub, items.reset_index(drop=True), inter.reset_index(drop=True), name=name,
                      source_format="bench/subsample")  # fmt: skip
    sub_ds = CanonicalDataset.load(sub)
    store_dir = work / f"{name}-text"
    if not (store_dir / "manifest.json").is_file():
        vecs, valid = None, None
        if args.text_store:
            try:  # reuse `mmrec embed --config configs/embed/beauty.yaml` (items without a title stay masked)
                store = EmbeddingStore.open(resolve_store_path(Path(args.text_store)))
                v, mask = store.aligned(sub_ds.item_ids)
                vecs, valid = v.float().numpy(), mask.numpy()
            except Exception as e:  # a partial or missing store: embed ourselves
                print(
                    f"[bench] text store {args.text_store} unusable ({e}); embedding titles", file=sys.stderr
                )
        if vecs is None:
            from mmrec.encoders import create_encoder

            enc = create_encoder("text/minilm")
            titles = [
                str(t) if isinstance(t, str) and t.strip() else "unknown item" for t in sub_ds.items["title"]
            ]
            t0 = time.time()
            parts = [enc.encode_raw(titles[i : i + 256]).float().numpy() for i in range(0, len(titles), 256)]
            vecs = np.concatenate(parts)
            print(
                f"[bench] embedded {len(titles)} titles with text/minilm in {time.time() - t0:.0f}s",
                file=sys.stderr,
            )
        write_store(
            store_dir,
            sub_ds.item_ids,
            vecs.astype(np.float32),
            valid,
            encoder="text/minilm",
            weights="bundled",
        )
    return sub, store_dir


# ----------------------------------------------------------------------------------------- one run
def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Train and test one (variant, seed) in this process; returns its record."""
    import lightning as L
    import torch

    from mmrec.datamodules.sequential import SequentialDataModule
    from mmrec.datamodules.vip5 import VIP5DataModule
    from mmrec.datamodules.vip5_config import EvaluationConfig, PromptConfig, TrainingConfig
    from mmrec.models import MultimodalSequential, VIP5Ranking
    from mmrec.models.vip5_config import (
        AdapterConfig,
        BackboneConfig,
        OptimConfig,
        PromptFeatureConfig,
        RankingHeadConfig,
    )

    torch.set_num_threads(args.threads)
    variant, seed = args.child_variant, args.child_seed
    L.seed_everything(seed, verbose=False)
    stores = {"text": args.child_store}
    if variant == "multimodal_sequential":
        dm: Any = SequentialDataModule(
            args.child_dataset, max_len=args.max_history, batch_size=args.seq_batch_size, eval_batch_size=256,
            stores=stores, seed=seed,
        )  # fmt: skip
        model: Any = MultimodalSequential(
            catalog=dm.catalog, dim=64, num_layers=2, num_heads=2, dropout=0.2, lr=1e-3, eval_ks=KS
        )
        epochs = args.seq_epochs
    else:
        dm = VIP5DataModule(
            args.child_dataset, tokenizer="minilm", stores=stores, tasks=["sequential"],
            prompts=PromptConfig(visual_tokens=2, max_history=args.max_history,
                                 max_source_length=args.max_source_length, sequential_yes_no=False),
            training=TrainingConfig(batch_size=args.batch_size, future_targets=3),
            evaluation=EvaluationConfig(batch_size=128), seed=seed, derived_dir=str(Path(args.workdir) / "derived"),
        )  # fmt: skip
        full_ft = variant == "vip5_full_finetune"
        model = VIP5Ranking(
            catalog=dm.catalog, backbone=BackboneConfig(name="minilm", init_seed=seed),
            adapter=AdapterConfig(name="none" if full_ft else "bottleneck/houlsby"),
            features=PromptFeatureConfig(stores=["text"]),
            head=RankingHeadConfig(item_stores=["text"], id_embedding=args.id_embedding),
            optim=OptimConfig(lr=args.ft_lr if full_ft else args.lr),
        )  # fmt: skip
        if full_ft:
            for p in model.backbone.parameters():
                p.requires_grad_(True)
        epochs = args.ft_epochs if full_ft else args.epochs
    counts = model.parameter_counts()
    epoch_times: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            epoch_times.append(time.perf_counter() - self.t0)

    device = "gpu" if torch.cuda.is_available() and not args.cpu else "cpu"
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=device, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[EpochTimer()],
    )  # fmt: skip
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0
    rec: dict[str, Any] = {
        "variant": variant, "seed": seed, "epochs": epochs, "trainable": counts["trainable"],
        "total": counts["total"], "fit_s": fit_s,
        "s_per_epoch": statistics.mean(epoch_times) if epoch_times else float("nan"),
        "peak_rss_mb": peak_rss_mb(), "peak_rss_before_fit_mb": rss_before,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "gpu" else None,
    }  # fmt: skip
    if variant != "vip5_full_finetune" or args.ft_test:
        t1 = time.perf_counter()
        res = trainer.test(model, datamodule=dm, verbose=False)[0]
        rec["test_s"] = time.perf_counter() - t1
        for k in ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "num_users"):
            rec[k] = float(res[f"test/{k}"])
        if "test/sequential/unseen/hr@10" in res:
            rec["unseen_hr@10"] = float(res["test/sequential/unseen/hr@10"])
            rec["unseen_ndcg@10"] = float(res["test/sequential/unseen/ndcg@10"])
    return rec


def spawn(args: argparse.Namespace, variant: str, seed: int, dataset: Path, store: Path) -> dict[str, Any]:
    """Run one (variant, seed) in a child process; its record is cached in ``<workdir>/runs/`` keyed by the
    settings that change it, so an interrupted benchmark resumes where it stopped."""
    keys = ("max_users", "sample_seed", "interacted_items", "epochs", "seq_epochs", "ft_epochs", "ft_test",
            "lr", "ft_lr", "max_history", "max_source_length", "batch_size", "seq_batch_size", "id_embedding")  # fmt: skip
    tag = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
    cache = Path(args.workdir) / "runs" / f"{variant}-seed{seed}-{digest}.json"
    if cache.is_file():
        rec = json.loads(cache.read_text())
        print(f"[bench] {variant} seed {seed}: cached ({cache.name}), hr@10={rec.get('hr@10')}", flush=True)
        return rec
    cmd = [
        sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--child-variant", variant,
        "--child-seed", str(seed), "--child-dataset", str(dataset), "--child-store", str(store),
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{variant} seed {seed} failed (exit {proc.returncode})")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["wall_s"] = time.time() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rec))
    print(f"[bench] {json.dumps(rec)}", flush=True)
    return rec


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = [r for r in records if r["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "seeds": len(rs)}
        for k in ("hr@10", "ndcg@10", "hr@20", "mrr", "unseen_hr@10"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                row[k] = statistics.mean(vals)
                row[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        for k in ("trainable", "total", "s_per_epoch", "peak_rss_mb", "cuda_peak_mb", "epochs"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                row[k] = statistics.mean(vals)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dataset",
        default=str(REPO / "data" / "beauty"),
        help="prepared Beauty (else built from ../shared/data)",
    )
    p.add_argument(
        "--text-store",
        default=str(REPO / "cache" / "beauty" / "text"),
        help="MiniLM title store (else embedded here)",
    )
    p.add_argument("--workdir", default=str(REPO / "cache" / "bench_vip5_beauty"))
    p.add_argument("--max-users", type=int, default=1000, help="sample this many users (0 = all 22,363)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--interacted-items", action="store_true", help="keep only items of the sampled users")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=1, help="VIP5 ranking head epochs")
    p.add_argument("--seq-epochs", type=int, default=20, help="MultimodalSequential epochs")
    p.add_argument("--ft-epochs", type=int, default=1, help="full fine-tuning epochs (cost measurement)")
    p.add_argument("--ft-test", action="store_true", help="also test the fully fine-tuned model")
    p.add_argument("--ft-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ft-lr", type=float, default=5e-5)
    p.add_argument("--max-history", type=int, default=8)
    p.add_argument("--max-source-length", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--id-embedding", action=argparse.BooleanOptionalAction, default=True,
        help="learned item ID embedding on the ranking head's item side (as the demo config)",
    )  # fmt: skip
    p.add_argument("--seq-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpu", action="store_true", help="stay on CPU even when CUDA is available")
    p.add_argument(
        "--variants", nargs="+", default=["multimodal_sequential", "vip5_full_finetune", "vip5_ranking"]
    )
    p.add_argument("--child-variant", help=argparse.SUPPRESS)
    p.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-dataset", help=argparse.SUPPRESS)
    p.add_argument("--child-store", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_variant:
        print(json.dumps(run_child(args)), flush=True)
        return
    t_all = time.time()
    dataset, store = prepare(args)
    records = []
    for variant in args.variants:
        seeds = args.ft_seeds if variant == "vip5_full_finetune" else args.seeds
        for seed in seeds:
            records.append(spawn(args, variant, seed, dataset, store))
    rows = summarize(records)
    print_table(rows, ["variant", "seeds", "epochs", "hr@10", "hr@10_std", "ndcg@10", "ndcg@10_std", "mrr",
                       "unseen_hr@10", "trainable", "total", "s_per_epoch", "peak_rss_mb"])  # fmt: skip
    with open(dataset / "dataset.json") as f:
        counts = json.load(f)["counts"]
    emit_json({
        "bench": "vip5_beauty", "dataset": str(dataset), "counts": counts, "max_users": args.max_users,
        "seeds": args.seeds, "epochs": args.epochs, "seq_epochs": args.seq_epochs, "ft_epochs": args.ft_epochs,
        "max_history": args.max_history, "threads": args.threads, "id_embedding": args.id_embedding,
        "wall_s": time.time() - t_all,
        "summary": rows, "runs": records,
    })  # fmt: skip


if __name__ == "__main__":
    main()
