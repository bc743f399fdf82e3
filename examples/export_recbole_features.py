"""Export an mmrec embedding store as a RecBole feature file and read it back.

RecBole reads item side features from an *atomic* file ``<dataset>.itememb`` (any ``.feat``-style name you
list in its config): tab-separated, a header of ``name:type`` fields, here ``item_id:token`` and
``<field>:float_seq``, the floats of a vector separated by spaces. ``mmrec export --format recbole`` writes
exactly that (valid rows only; floats printed with 9 significant digits so float32 round-trips).

Run it::

    python examples/export_recbole_features.py --store cache/demo/image --out data/demo/demo.itememb
    python examples/export_recbole_features.py --demo /tmp/recbole-demo     # writes a toy store first

Then in RecBole's config::

    load_col: {inter: [user_id, item_id], itememb: [item_id, item_emb]}
    alias_of_item_id: [item_id]   # or map the column with `preload_weight: {item_id: item_emb}`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def read_recbole_atomic(path: str | Path) -> dict[str, dict[str, object]]:
    """A minimal reader of RecBole atomic files: ``{column_name: {"type": t, "values": [...]}}``.

    ``token`` -> str, ``float`` -> float, ``float_seq`` -> float32 array, ``token_seq`` -> list of str.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = [h.split(":", 1) for h in lines[0].split("\t")]
    cols: dict[str, dict[str, object]] = {name: {"type": typ, "values": []} for name, typ in header}
    for line in lines[1:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"{path}: a row has {len(cells)} fields, the header {len(header)}.")
        for (name, typ), cell in zip(header, cells):
            values = cols[name]["values"]
            assert isinstance(values, list)
            if typ == "float_seq":
                values.append(
                    np.array(cell.split(" "), dtype=np.float32) if cell else np.zeros(0, np.float32)
                )
            elif typ == "float":
                values.append(float(cell))
            elif typ == "token_seq":
                values.append(cell.split(" ") if cell else [])
            else:
                values.append(cell)
    return cols


def export_and_check(store: str | Path, out: str | Path, field: str = "item_emb") -> int:
    """Export ``store`` to ``out`` with the mmrec CLI, read it back, check every vector; returns the rows."""
    from mmrec.cli import main as mmrec
    from mmrec.store import EmbeddingStore

    code = mmrec(
        [
            "export",
            "--store",
            str(store),
            "--format",
            "recbole",
            "--out",
            str(out),
            "--field",
            field,
            "--overwrite",
        ]
    )
    if code != 0:
        raise SystemExit(f"mmrec export failed with exit code {code}")
    cols = read_recbole_atomic(out)
    s = EmbeddingStore.open(store)
    row = {k: i for i, k in enumerate(s.item_ids)}
    ids = cols["item_id"]["values"]
    vecs = cols[field]["values"]
    assert isinstance(ids, list) and isinstance(vecs, list)
    for iid, v in zip(ids, vecs):
        np.testing.assert_array_equal(v, np.asarray(s.vectors[row[iid]], dtype=np.float32))
    assert len(ids) == int(s.mask.sum()), "the file must hold exactly the store's valid rows"
    return len(ids)


def _demo_store(root: Path) -> Path:
    from mmrec.store import write_store

    rng = np.random.default_rng(0)
    mask = np.ones(20, bool)
    mask[5] = False  # an item whose media failed: left out of the export
    store = write_store(
        root / "store",
        [f"item{j}" for j in range(20)],
        rng.normal(size=(20, 8)).astype(np.float32),
        mask,
        encoder="example/random",
        overwrite=True,
    )
    return store.path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", help="an embedding store folder")
    src.add_argument("--demo", help="write a toy store into this folder and export it")
    p.add_argument("--out", help="the .itememb / .feat file (default: <demo>/demo.itememb)")
    p.add_argument("--field", default="item_emb")
    a = p.parse_args(argv)
    store = Path(a.store) if a.store else _demo_store(Path(a.demo))
    out = Path(a.out) if a.out else Path(a.demo or ".") / "demo.itememb"
    n = export_and_check(store, out, a.field)
    print(f"{out}: {n} item vectors, identical to the store's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
