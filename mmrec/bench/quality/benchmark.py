"""``run_quality``: every model of a recipe x every seed, one table beside MostPop, one final JSON line.

``mmrec bench quality --config configs/bench/<dataset>.yaml`` calls
``run_quality(load_quality_config(path, overrides))``:

1. describes the data once (items, users, test users, the protocol, the head / tail / cold item counts);
2. runs every (model, seed) with :class:`~mmrec.bench.quality.runner.QualityRunner` (a MostPop reference row is
   added first when the recipe has none; models without training run once), reusing finished runs;
3. summarises (:func:`~mmrec.bench.quality.report.summarise`: mean ± std, Wilcoxon + Holm against MostPop and
   the best baseline, flags for collapsed models and models not above MostPop), writes ``results.md``,
   ``results.csv``, ``results.png``, ``summary.json`` into ``out``;
4. prints the Markdown table and, as its very last line, one JSON object
   ``{"dataset": ..., "protocol": {...}, "results": {"<label>": {"ndcg@10": mean, "hr@10": mean, ...}}}``.

Example:
    >>> summary = run_quality(load_quality_config("configs/bench/demo.yaml", ["seeds=[0]"]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mmrec.bench.quality.config import QualityConfig
from mmrec.bench.quality.report import final_json, summarise, write_reports
from mmrec.bench.quality.runner import QualityRunner
from mmrec.eval_protocol import protocol_of
from mmrec.metrics import item_groups
from mmrec.protocols import ModelInputSource


def describe_data(runner: QualityRunner) -> dict[str, Any]:
    """Dataset, protocol and item-group facts for the report header (one datamodule set up once)."""
    c = runner.config
    dm = runner.datamodule(seed=c.seeds[0])
    dm.setup("fit")
    cat = dm.catalog
    protocol = protocol_of(dm)
    meta: dict[str, Any] = {
        "recipe": c.name,
        "recipe_path": c.path,
        "dataset": cat.get("dataset"),
        "dataset_path": str(c.data.args.get("dataset")),
        "items": int(cat["num_items"]),
        "users": int(cat["num_users"]),
        "protocol": protocol.as_dict() if protocol is not None else None,
        "protocol_text": protocol.describe() if protocol is not None else "not declared by the datamodule",
        "head_fraction": c.groups.head_fraction,
        "cold_max_count": c.groups.cold_max_count,
        "monitor": c.trainer.monitor,
        "seeds": list(c.seeds),
        **{k: v for k, v in vars(c.flags).items()},
    }
    splits = getattr(dm, "splits", None)
    if splits is not None:
        meta["test_users"] = len(splits.test)
        meta["valid_users"] = len(splits.valid)
    if isinstance(dm, ModelInputSource):
        inputs = dm.model_inputs()
        if "train_interactions" in inputs:
            pop = torch.as_tensor(np.asarray(inputs["train_interactions"].sum(axis=0)).ravel())
            groups = item_groups(pop, c.groups.head_fraction, c.groups.cold_max_count, ignore_columns=(0,))
            meta.update({f"{g}_items": int(m.sum()) for g, m in groups.items()})
    return meta


def run_quality(config: QualityConfig, printer: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a quality recipe end to end (see the module docstring).

    Args:
        config: from :func:`~mmrec.bench.quality.config.load_quality_config`.
        printer: progress sink (default: ``print`` with flush). The table and the final JSON line always go
            to stdout.

    Returns:
        the summary (``rows``, ``meta``, ``markdown``, ``final``) that was written to ``config.out``.
    """
    t0 = time.perf_counter()
    runner = QualityRunner(config, printer)
    say = runner.print
    meta = describe_data(runner)
    say(
        f"quality benchmark {config.name!r}: {meta['dataset']} ({meta['items']:,} items, {meta['users']:,} users), "
        f"protocol {meta['protocol_text']} -> {runner.out}"
    )
    entries = config.with_reference()
    plan = [(e, s) for e in entries for s in runner.seeds_of(e)]
    records = []
    for n, (entry, seed) in enumerate(plan, start=1):
        say(f"[{n}/{len(plan)}] {entry.display} seed {seed}")
        records.append(runner.run_one(entry, seed))
    first = records[0] if records else {}
    on_cuda = str(first.get("device", "cpu")).startswith("cuda")
    meta.update(
        device=first.get("device", "cpu"),
        threads=torch.get_num_threads(),
        seconds=time.perf_counter() - t0,
        memory_note=(
            "peak torch.cuda.max_memory_allocated during training"
            if on_cuda
            else "CPU estimate of one AdamW step on the batch_size longest training sequences (parameters, "
            "buffers, gradients, optimizer states, tensors saved for backward)"
        ),
    )
    summary = summarise(records, config, meta)
    summary["final"] = final_json(summary)
    paths = write_reports(summary, runner.out)
    print()
    print(summary["markdown"])
    print(
        f"wrote {paths['md']}, {paths['csv'].name}, {paths['png'].name}, {paths['json'].name} and runs/*.json"
    )
    print(json.dumps(summary["final"]), flush=True)
    return summary
