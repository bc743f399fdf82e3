"""Embedding pipeline benchmark: ``mmrec embed`` vs the bare encoder forward, cache hits, cached training.

Measured side by side in one run, on the demo catalogue regenerated at ``--num-items`` items:

1. **Pipeline vs bare forward**, per store (offline encoders: ``classic/color-histogram`` image,
   ``text/minilm`` text, ``classic/log-mel`` audio, ``classic/video-stats`` video, the pretrained
   ``image/efficientnet-lite0`` of the demo recipe (``image_effnet``) and, unless ``--no-heavy``, a
   random-init ``open_clip/ViT-B-32`` as a realistically heavy image forward; ``--stores`` picks some):
   - *pipeline*: ``run_embed`` in process into a fresh cache (fingerprint, lock, encoder build,
     ``Trainer.predict`` with decoding + preprocessing in DataLoader workers, part files written by a
     background thread, merge, manifest) -> items/s end to end, items/s of the predict loop alone (the
     manifest's throughput), and where the rest went (encoder build, Trainer set-up, merge);
   - *bare*: the same encoder, the same batches (fixed chunks of ``shard_size`` cut into ``batch_size``),
     items decoded and preprocessed in memory beforehand, only ``encode`` timed;
   - ratio = pipeline / bare (target >= 0.90), best of ``--repeats`` interleaved runs each, and the median
     ratio of adjacent (pipeline, bare) pairs, which is steadier on a shared machine; and where the rest
     goes (encoder build, decode+preprocess time in workers, merge);
   - *naive loop*: decode + preprocess + encode batch by batch in one process, no workers and no files:
     what a hand-written script does (the classic encoders do their work in ``preprocess``, so for them
     this, not the bare forward, is the meaningful reference).
2. **Cache hit**: the second identical ``run_embed`` of all stores / the first (target <= 0.02), plus the
   wall time of ``mmrec embed`` as a fresh process on a hit (interpreter and torch start-up included).
3. **Training on cached features vs encoding inside the step**: the same small MLP (features of all four
   modalities -> item category), the same batches, a few optimiser steps; speed-up of reading the stores.

Prints a table per part and, as the last line, one JSON object with every figure.

Usage:
    python bench/embed_throughput.py [--num-items 480] [--workers 2] [--no-heavy] [--device cpu]
        [--stores text,image_effnet] [--throughput-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

try:
    from common import Timer, emit_json, print_table, resolve_device, seed_everything
except ImportError:  # python -m bench.embed_throughput
    from bench.common import Timer, emit_json, print_table, resolve_device, seed_everything

MODALITIES: dict[str, dict[str, Any]] = {
    "image": {"encoder": "classic/color-histogram", "column": "image", "batch_size": 64},
    "text": {"encoder": "text/minilm", "column": ["title", "description"], "batch_size": 64},
    "audio": {"encoder": "classic/log-mel", "column": "audio", "batch_size": 64},
    "video": {"encoder": "classic/video-stats", "column": "video", "batch_size": 32},
}
NEURAL = {
    "image_effnet": {"encoder": "image/efficientnet-lite0", "column": "image", "batch_size": 64},
}
HEAVY = {
    "image_vit": {
        "encoder": "open_clip/ViT-B-32",
        "column": "image",
        "batch_size": 32,
        "init_args": {"weights": "random"},
    }
}


def _config(dataset: Path, cache: Path, entries: dict[str, dict[str, Any]], args: argparse.Namespace) -> Any:
    from mmrec.embedding import EmbedConfig

    return EmbedConfig.from_dict(
        {
            "dataset": str(dataset),
            "cache": str(cache),
            "shard_size": args.shard_size,
            "num_workers": args.workers,
            "encoders": [{"name": name, **spec} for name, spec in entries.items()],
            "trainer": {"accelerator": "gpu" if args.device.startswith("cuda") else "cpu", "devices": 1},
        }
    )


def _decoded(dataset: Path, entry: Any, encoder: Any) -> list[Any]:
    """Every item decoded and preprocessed in memory (not timed); failures are skipped."""
    from mmrec.embedding.build import encoder_decode_args
    from mmrec.embedding.sources import DatasetSource

    src = DatasetSource(dataset)
    decode_args = {**encoder_decode_args(encoder), **entry.decode_args}
    out = []
    for i in range(len(src.item_ids)):
        raw, _ = src.load(i, entry.columns, entry.resolved_modality(), **decode_args)
        out.append(encoder.preprocess(raw))
    return out


class BareForward:
    """The bare encoder forward on the pipeline's batches: the encoder is built once and every item decoded
    and preprocessed in memory beforehand (not timed); :meth:`time_encode` times ``encode`` alone.
    :meth:`naive` times a single-process loop doing decode + preprocess + encode batch by batch (no
    workers, no files): what a hand-written script does."""

    def __init__(self, dataset: Path, entry: Any, shard_size: int, device: torch.device) -> None:
        from mmrec.encoders import create_encoder

        self.dataset, self.entry, self.device = dataset, entry, device
        with Timer() as build:
            self.enc = create_encoder(entry.encoder, **entry.init_args).to(device)
        self.build_s = build.seconds
        items = _decoded(dataset, entry, self.enc)
        self.n = len(items)
        self.batches = []
        for start in range(0, len(items), shard_size):
            chunk = items[start : start + shard_size]
            self.batches += [
                self.enc.collate(chunk[b : b + entry.batch_size])
                for b in range(0, len(chunk), entry.batch_size)
            ]
        self.enc.encode(self.batches[0])  # warm-up (lazy init, allocator)

    def time_encode(self) -> float:
        """Seconds to encode every batch once."""
        with Timer(self.device) as t:
            for b in self.batches:
                self.enc.encode(b)
        return t.seconds

    def naive(self) -> float:
        """Items/s of decode + preprocess + encode in one process, batch by batch."""
        with Timer(self.device) as t:
            items = _decoded(self.dataset, self.entry, self.enc)
            for start in range(0, len(items), self.entry.batch_size):
                self.enc.encode(self.enc.collate(items[start : start + self.entry.batch_size]))
        return len(items) / t.seconds


def pipeline_run(
    dataset: Path, cache: Path, name: str, spec: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    from mmrec.embedding import run_embed

    cfg = _config(dataset, cache, {name: spec}, args)
    with Timer() as t:
        result = run_embed(cfg, progress=False, echo=lambda _m: None)[0]
    m = result.manifest
    tim = m["timings"]
    parts = tim["parts"].values()
    return {
        "wall_s": t.seconds,
        "items_per_s": m["count"] / t.seconds,
        "loop_items_per_s": m["throughput_items_per_s"],
        "predict_s": tim["predict_s"],
        "loop_s": tim["predict_loop_s"],
        "merge_s": tim["merge_s"],
        "encoder_build_s": tim.get("encoder_build_s", 0.0),
        "encode_s": sum(p["encode_s"] for p in parts),
        "preprocess_worker_s": sum(p["preprocess_s"] for p in parts),
        "valid": m["valid"],
        "count": m["count"],
        "entry": cfg.encoders[0],
    }


def cli_hit_seconds(
    dataset: Path, cache: Path, entries: dict[str, dict[str, Any]], args: argparse.Namespace
) -> float:
    """Wall time of `mmrec embed` as a new process when every store is a cache hit."""
    import yaml

    cfg = _config(dataset, cache, entries, args).to_dict()
    recipe = cache / "bench-recipe.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}), encoding="utf-8")
    exe = Path(sys.executable).with_name("mmrec")
    t0 = time.perf_counter()
    run = subprocess.run(
        [str(exe), "embed", "--config", str(recipe), "--no_progress"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if run.returncode != 0 or run.stdout.count("nothing to compute") != len(entries):
        raise RuntimeError(f"CLI cache-hit run failed: {run.stdout[-500:]} {run.stderr[-1500:]}")
    return seconds


def training_comparison(
    dataset: Path,
    cache: Path,
    entries: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, float]:
    """Same MLP, same batches: features read from the stores vs encoded inside each training step."""
    from mmrec.data.canonical import CanonicalDataset
    from mmrec.embedding.build import encoder_decode_args
    from mmrec.embedding.config import EncoderEntry
    from mmrec.embedding.sources import DatasetSource
    from mmrec.encoders import create_encoder
    from mmrec.store import EmbeddingStore

    ds = CanonicalDataset.load(dataset)
    labels_raw = (
        ds.items["attr_category"].astype(str) if "attr_category" in ds.items else ds.items["item_id"].str[-1]
    )
    classes = sorted(set(labels_raw))
    y_all = torch.tensor([classes.index(v) for v in labels_raw], device=device)
    stores = {n: EmbeddingStore.open(cache / n) for n in entries}
    feats = torch.cat([stores[n].aligned(ds.item_ids)[0] for n in entries], dim=1).to(device)
    dims = feats.shape[1]
    gen = seed_everything(0)
    steps, bs = args.train_steps, args.train_batch
    n = len(ds.item_ids)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-steps * bs // n))])[
        : steps * bs
    ].view(steps, bs)

    def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(dims, 256), torch.nn.ReLU(), torch.nn.Linear(256, len(classes))
        ).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    model, opt = make_model()
    with Timer(device) as cached:
        for idx in order:
            step(model, opt, feats[idx], y_all[idx])

    src = DatasetSource(dataset)
    encs = {}
    for n, spec in entries.items():
        entry = EncoderEntry(name=n, **spec)
        enc = create_encoder(entry.encoder, **entry.init_args).to(device)
        encs[n] = (entry, enc, {**encoder_decode_args(enc), **entry.decode_args})
    model, opt = make_model()
    with Timer(device) as online:
        for idx in order:
            parts = []
            for entry, enc, decode_args in encs.values():
                pre = [
                    enc.preprocess(
                        src.load(int(i), entry.columns, entry.resolved_modality(), **decode_args)[0]
                    )
                    for i in idx
                ]
                parts.append(enc.encode(enc.collate(pre)).to(device))
            step(model, opt, torch.cat(parts, dim=1), y_all[idx])
    return {
        "steps": steps,
        "batch": bs,
        "cached_step_ms": 1000 * cached.seconds / steps,
        "online_step_ms": 1000 * online.seconds / steps,
        "speedup": online.seconds / cached.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-items", type=int, default=480, help="demo catalogue size (default 480)")
    p.add_argument("--dataset", default=None, help="use this canonical dataset instead of generating one")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the pipeline (default 2)")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument(
        "--no-heavy", action="store_true", help="skip the random-init open_clip/ViT-B-32 image encoder"
    )
    p.add_argument(
        "--heavy-items", type=int, default=128, help="catalogue size for the ViT-B-32 runs (default 128)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats of pipeline / bare (best kept)"
    )
    p.add_argument(
        "--stores",
        default=None,
        help=f"comma-separated stores to measure (default all of {[*MODALITIES, *NEURAL, *HEAVY]})",
    )
    p.add_argument(
        "--throughput-only", action="store_true", help="only part 1 (no cache-hit and training parts)"
    )
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    args.device = str(device)

    import lightning.pytorch  # noqa: F401  (one-time import, not part of any measured run)

    from mmrec.encoders import list_encoders

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmrec-embed-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.dataset:
            dataset = Path(args.dataset).resolve()
        else:
            from mmrec.datamodules.synth import generate_demo_catalogue

            dataset = work / "demo"
            if not (dataset / "dataset.json").is_file():
                generate_demo_catalogue(
                    dataset, num_items=args.num_items, num_users=max(20, args.num_items), show_progress=False
                )
        entries = {**MODALITIES, **NEURAL}
        heavy_dataset = dataset
        if not args.no_heavy and "open_clip/ViT-B-32" in list_encoders("open_clip/*"):
            entries.update(HEAVY)
            if not args.dataset and args.heavy_items != args.num_items:
                from mmrec.datamodules.synth import generate_demo_catalogue

                heavy_dataset = work / "demo-heavy"
                if not (heavy_dataset / "dataset.json").is_file():
                    generate_demo_catalogue(
                        heavy_dataset, num_items=args.heavy_items, num_users=20, show_progress=False
                    )
        if args.stores:
            wanted = [s.strip() for s in args.stores.split(",") if s.strip()]
            unknown = sorted(set(wanted) - set(entries))
            if unknown:
                raise SystemExit(f"--stores: unknown {unknown}; choose from {sorted(entries)}")
            entries = {k: entries[k] for k in wanted}
        missing = [s["encoder"] for s in entries.values() if s["encoder"] not in list_encoders()]
        if missing:
            raise SystemExit(f"encoders not registered in this checkout: {missing}")

        # 1. pipeline vs bare forward, per modality; measurements interleaved, best of --repeats (the
        #    machine may be shared: the best run is the least disturbed one)
        rows, per = [], {}
        for name, spec in entries.items():
            data = heavy_dataset if name in HEAVY else dataset
            pipes, encodes = [], []
            bare = None
            for r in range(args.repeats):
                pipe = pipeline_run(data, work / f"cache-{name}-{r}", name, spec, args)
                if bare is None:
                    bare = BareForward(data, pipe["entry"], args.shard_size, device)
                encodes.append(bare.time_encode())
                pipes.append(pipe)
            assert bare is not None
            naive = bare.naive()
            pipe = max(pipes, key=lambda p: p["items_per_s"])
            bare_ips = bare.n / min(encodes)
            # adjacent pairs (pipeline run r, bare run r right after it) see similar machine load
            pair_median = statistics.median(p["items_per_s"] / (bare.n / t) for p, t in zip(pipes, encodes))
            per[name] = {
                "encoder": spec["encoder"],
                "items": pipe["count"],
                "pipeline_items_per_s": pipe["items_per_s"],
                "loop_items_per_s": pipe["loop_items_per_s"],
                "bare_items_per_s": bare_ips,
                "ratio": pipe["items_per_s"] / bare_ips,
                "loop_ratio": (pipe["loop_items_per_s"] or 0) / bare_ips,
                "ratio_median_of_pairs": pair_median,
                "naive_loop_items_per_s": naive,
                "ratio_vs_naive_loop": pipe["items_per_s"] / naive,
                "wall_s": pipe["wall_s"],
                "bare_encode_s": min(encodes),
                "encoder_build_s": bare.build_s,
                "pipeline_encoder_build_s": pipe["encoder_build_s"],
                "pipeline_rest_s": pipe["wall_s"] - pipe["loop_s"] - pipe["encoder_build_s"] - pipe["merge_s"],
                "setup_s": pipe["predict_s"] - pipe["loop_s"],
                "preprocess_worker_s": pipe["preprocess_worker_s"],
                "encode_in_pipeline_s": pipe["encode_s"],
                "merge_s": pipe["merge_s"],
                "pipeline_runs_items_per_s": [p["items_per_s"] for p in pipes],
                "bare_runs_items_per_s": [bare.n / t for t in encodes],
                "valid": pipe["valid"],
            }
            rows.append(
                {
                    "store": name,
                    "encoder": spec["encoder"],
                    "items": pipe["count"],
                    "pipeline it/s": pipe["items_per_s"],
                    "loop it/s": pipe["loop_items_per_s"],
                    "bare it/s": bare_ips,
                    "ratio": per[name]["ratio"],
                    "pair ratio": pair_median,
                    "loop ratio": per[name]["loop_ratio"],
                    "naive it/s": naive,
                    "vs naive": per[name]["ratio_vs_naive_loop"],
                    "decode+prep s (workers)": pipe["preprocess_worker_s"],
                    "encode s": pipe["encode_s"],
                    "bare encode s": min(encodes),
                    "build s": pipe["encoder_build_s"],
                    "merge s": pipe["merge_s"],
                }
            )
        print(
            f"\n== mmrec embed vs bare encoder forward (device {device}, {args.workers} workers, torch threads "
            f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, best of {args.repeats})"
        )
        print_table(rows)

        if args.throughput_only:
            emit_json(
                {
                    "bench": "embed_throughput",
                    "device": str(device),
                    "repeats": args.repeats,
                    "workers": args.workers,
                    "torch_threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(),
                    "modalities": per,
                }
            )
            return 0

        # 2. cache hit: all stores at once, first build vs identical second run
        from mmrec.embedding import run_embed

        cache = work / "cache-all"
        cfg = _config(
            dataset, cache, entries, args
        )  # every store (ViT-B-32 included) over the main catalogue
        with Timer() as first:
            run_embed(cfg, progress=False, echo=lambda _m: None)
        with Timer() as second:
            hits = run_embed(cfg, progress=False, echo=lambda _m: None)
        assert all(r.cache_hit for r in hits)
        cli_s = cli_hit_seconds(dataset, cache, entries, args)
        n_items = next(iter(per.values()))["items"]
        hit = {
            "first_s": first.seconds,
            "second_s": second.seconds,
            "ratio": second.seconds / first.seconds,
            "cli_hit_process_s": cli_s,
            "stores": len(entries),
            "items": n_items,
        }
        print(f"\n== cache hit ({len(entries)} stores x {n_items} items)")
        print_table(
            [
                {
                    "first run s": first.seconds,
                    "identical second run s": second.seconds,
                    "ratio": hit["ratio"],
                    "CLI hit (new process) s": cli_s,
                }
            ]
        )

        # 3. training on cached features vs encoding inside the step (the four offline modalities)
        train = training_comparison(
            dataset, cache, {k: v for k, v in entries.items() if k in MODALITIES}, args, device
        )
        print(
            f"\n== training: cached features vs encoding in the step ({train['steps']} steps x {train['batch']} items)"
        )
        print_table([train])

        emit_json(
            {
                "bench": "embed_throughput",
                "device": str(device),
                "items": n_items,
                "heavy_items": per.get("image_vit", {}).get("items"),
                "repeats": args.repeats,
                "workers": args.workers,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "modalities": per,
                "cache_hit": hit,
                "train": train,
            }
        )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
