"""``mmrec store``: inspect embedding stores and import ``.npy`` matrices as stores.

``mmrec store info PATH [--json]``
    manifest summary of a store (``PATH`` may be ``<cache>/<name>``: its ``CURRENT`` is followed, and the
    other builds in that folder are listed).
``mmrec store ls CACHE``
    every store under a cache folder (name, fingerprint, current or not, items, valid, encoder).
``mmrec store import-npy --npy F --dataset D --out DIR [--keys dataset-order|row-index] [--name NAME]``
    :func:`mmrec.store.importing.import_npy`: row ``k`` of ``F`` is the ``k``-th item of the dataset
    (``dataset-order``) or the item whose id is ``k`` (``row-index``, MMRec's convention). With ``--name``
    the store goes to ``DIR/<name>/<fingerprint>/`` with a ``CURRENT`` pointer (the layout of ``mmrec embed``
    caches), else to ``DIR`` itself.

Example:
    >>> main(["info", "cache/demo/image"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from mmrec.cli.common import CommandError, load
from mmrec.cli.dialect import add_signature, bare_flags, new_parser, parse

READER = "mmrec.store.reader"
IMPORT_NPY = "mmrec.store.importing:import_npy"


def _fmt_seconds(v: Any) -> str:
    return f"{float(v):.2f} s" if isinstance(v, (int, float)) else "?"


def describe_manifest(m: dict[str, Any], path: Path) -> str:
    """Human-readable summary of a store manifest."""
    lines = [f"store       {path}"]
    lines.append(f"fingerprint {m.get('fingerprint', '?')}")
    lines.append(f"encoder     {m.get('encoder')}  (weights {m.get('weights')})")
    if m.get("random_init") or str(m.get("weights", "")).startswith("random-init"):
        lines.append("WARNING     RANDOM-INIT WEIGHTS: these vectors carry no pretrained knowledge")
    lines.append(f"vectors     {m.get('count')} x {m.get('dim')} {m.get('dtype')}, {m.get('valid')} valid")
    if m.get("missing_count"):
        lines.append(f"missing     {m['missing_count']} items without a value")
    counts = dict(m.get("failure_counts") or {})
    if not counts and m.get("failures"):
        for reason in m["failures"].values():
            counts[reason] = counts.get(reason, 0) + 1
    lines.append(
        "failures    " + (", ".join(f"{r}: {n}" for r, n in sorted(counts.items())) if counts else "none")
    )
    if m.get("columns"):
        source = m.get("input", {}).get("path") or m.get("input", {}).get("spec", "?")
        lines.append(f"input       {m.get('modality', '')} column(s) {m['columns']} of {source}")
    t = m.get("timings", {})
    if t:
        rate = m.get("throughput_items_per_s")
        lines.append(
            f"timings     total {_fmt_seconds(t.get('total_s'))}"
            + (f", {rate:.1f} items/s" if rate else "")
            + f", {m.get('num_parts', '?')} part(s), world size {m.get('world_size', '?')}"
        )
    if m.get("created_at") or m.get("created_by"):
        lines.append(f"created     {m.get('created_at', '')} by {m.get('created_by', '?')}")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    """The ``mmrec store`` parser (``info``, ``ls``, ``import-npy``)."""
    parser = new_parser("mmrec store", "Inspect embedding stores, import .npy matrices.", config=False)
    commands = parser.add_subcommands(required=True, dest="command")
    info = new_parser("mmrec store info", "Manifest summary of a store (follows CURRENT).")
    info.add_argument("path", type=str, help="store folder, or <cache>/<name> (follows CURRENT)")
    info.add_argument("--json", type=bool, default=False, help="print the whole manifest as JSON")
    commands.add_subcommand("info", info, help="manifest summary of a store (follows CURRENT)")
    ls = new_parser("mmrec store ls", "List the stores under a cache folder.")
    ls.add_argument("cache", type=str, help="cache folder (the `cache:` of an embed recipe)")
    commands.add_subcommand("ls", ls, help="list the stores under a cache folder")
    imp = new_parser("mmrec store import-npy", "Import a (num_items, dim) .npy matrix aligned to a dataset.")
    add_signature(imp, load(IMPORT_NPY), positional=False)
    commands.add_subcommand(
        "import-npy", imp, help="import a (num_items, dim) .npy matrix aligned to a dataset"
    )
    bare_flags(info)
    return parser


def _info(path: str, as_json: bool) -> int:
    reader = load(READER)
    root = Path(path).expanduser().resolve()
    store = reader.resolve_store_path(root)
    manifest = reader.EmbeddingStore.read_manifest(store)
    if as_json:
        print(json.dumps(manifest, indent=2, default=str))
        return 0
    print(describe_manifest(manifest, store))
    if (root / "CURRENT").is_file() and store != root:
        others = sorted(
            p.name for p in root.iterdir() if p.is_dir() and p != store and not p.name.startswith(".")
        )
        if others:
            print(f"other builds {', '.join(others)}")
    return 0


def _ls(cache_dir: str) -> int:
    reader = load(READER)
    cache = Path(cache_dir).expanduser().resolve()
    if not cache.is_dir():
        raise CommandError(f"cache folder {cache} does not exist.")
    rows = []
    for name_dir in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        current_file = name_dir / "CURRENT"
        current = current_file.read_text(encoding="utf-8").strip() if current_file.is_file() else None
        for d in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name.endswith(".partial"):
                done = len(list(d.glob("part-*.done")))
                rows.append((name_dir.name, d.name, "", f"in progress ({done} part(s) done)", "", ""))
                continue
            try:
                m = reader.EmbeddingStore.read_manifest(d)
            except reader.StoreError:
                rows.append((name_dir.name, d.name, "", "incomplete", "", ""))
                continue
            rows.append(
                (
                    name_dir.name,
                    d.name,
                    "*" if d.name == current else "",
                    str(m.get("count")),
                    str(m.get("valid")),
                    str(m.get("encoder")),
                )
            )
    if not rows:
        print(f"no stores under {cache}")
        return 0
    header = ("name", "fingerprint", "cur", "items", "valid", "encoder")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def main(argv: list[str]) -> int:
    """``mmrec store``: ``info``, ``ls`` and ``import-npy``. Returns the exit status."""
    cfg = parse(build_parser(), argv)
    if cfg.command == "info":
        return _info(cfg.info.path, cfg.info.json)
    if cfg.command == "ls":
        return _ls(cfg.ls.cache)
    values = {k: v for k, v in cfg["import-npy"].as_dict().items() if k != "config"}
    store = load(IMPORT_NPY)(**values)
    print(f"imported {store.num_items} x {store.dim} ({store.manifest['dtype']}) -> {store.path}")
    return 0
