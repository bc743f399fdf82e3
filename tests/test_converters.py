"""Dataset converters: every registered format on a tiny fixture written here in that exact format, plus
the real datasets of ``../shared/data`` (marked ``realdata``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mmrec.data.canonical import CanonicalDataset, DatasetError
from mmrec.datamodules.converters import CONVERTERS, convert, format_aliases, prepare_dataset, resolve_format
from mmrec.datamodules.sequential import SequentialDataModule
from mmrec.store import EmbeddingStore

# --------------------------------------------------------------------------------------------- helpers


def write_lines(path: Path, lines: list[str], *, gz: bool = False, encoding: str = "utf-8") -> Path:
    data = ("\n".join(lines) + "\n").encode(encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def jl(records: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r) for r in records]


def items_of(ds: CanonicalDataset) -> dict[str, dict[str, Any]]:
    rows = ds.items.to_dict("records")
    out = {}
    for r in rows:
        out[r["item_id"]] = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in r.items()}
    return out


def null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def assert_canonical(ds: CanonicalDataset) -> None:
    """Invariants every converter must meet: no empty strings, int64 times, string ids, known items."""
    for df in (ds.items, ds.interactions):
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
                empties = df[col].str.strip().eq("")  # lists and nulls give NaN here, not True
                assert not empties.any(), f"column {col} holds empty strings standing for null"
    assert ds.interactions["timestamp"].dtype == np.int64
    assert set(ds.interactions["item_id"]) <= set(ds.items["item_id"])
    assert ds.items["item_id"].is_unique
    for cats in ds.items["categories"]:
        assert cats is None or (len(cats) > 0 and all(isinstance(c, str) and c for c in cats))
    counts = ds.counts
    assert counts["items"] == len(ds.items)
    assert counts["interactions"] == len(ds.interactions)
    assert counts["users"] == ds.interactions["user_id"].nunique()


def user_items(ds: CanonicalDataset, user: str) -> list[str]:
    inter = ds.interactions
    return inter.loc[inter["user_id"] == user].sort_values("timestamp", kind="stable")["item_id"].tolist()


# --------------------------------------------------------------------------------------------- fixtures

REVIEWS_2014 = [
    # numbers stored as strings, as in the shared copy of the 2014 release
    {"reviewerID": "U1", "asin": "A1", "reviewerName": "x", "helpful": [0, 0], "reviewText": "Great &amp; cheap",
     "overall": "5.0", "summary": "good", "unixReviewTime": "1393545600", "reviewTime": "02 28, 2014"},
    {"reviewerID": "U1", "asin": "A2", "reviewText": "", "overall": 3.0, "summary": "meh",
     "unixReviewTime": 1363392000, "reviewTime": "03 16, 2013"},
    # no unixReviewTime: the date string is used (UTC midnight)
    {"reviewerID": "U2", "asin": "A1", "reviewText": "ok", "overall": 4, "summary": "  ", "reviewTime": "01 02, 2014"},
]  # fmt: skip

META_2014 = [
    "{'asin': 'A1', 'title': 'Pop &amp; Filter', 'price': 3.17, 'imUrl': 'http://img/a1.jpg', "
    "'related': {'also_bought': ['A9']}, 'salesRank': {'Musical Instruments': 12}, 'brand': 'Acme', "
    "'categories': [['Musical Instruments', 'Recording'], ['Musical Instruments', 'Microphones']], "
    "'description': \"It's a filter\"}",
    # valid JSON is accepted too; an empty brand is null, a missing price is null
    json.dumps({"asin": "A2", "title": "Strap", "brand": "", "categories": [["Musical Instruments"]]}),
    "{'asin': 'A3', 'title': 'Never reviewed', 'price': 9.5}",
]


def fx_amazon_2014(tmp: Path) -> dict[str, Any]:
    return {
        "reviews": write_lines(tmp / "reviews_Musical_Instruments_5.json.gz", jl(REVIEWS_2014), gz=True),
        "meta": write_lines(tmp / "meta_Musical_Instruments.json.gz", META_2014, gz=True),
    }


REVIEWS_2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "08 5, 2016", "reviewerID": "R1", "asin": "B1",
     "style": {"Color:": " Black"}, "reviewerName": "a", "reviewText": "Nice", "summary": "Five Stars",
     "unixReviewTime": 1470355200, "vote": "2"},
    {"overall": 2.0, "verified": False, "reviewerID": "R2", "asin": "B2", "reviewText": "Broke",
     "summary": "Two Stars", "unixReviewTime": 1470441600},
    {"overall": 4.0, "reviewerID": "R2", "asin": "B1", "reviewText": "Fine", "summary": "ok",
     "unixReviewTime": 1470528000},
]  # fmt: skip

META_2018 = [
    {"asin": "B1", "title": "Guitar Strap 2&quot; Wide", "description": ["Soft &amp; strong.", "", "Fits all."],
     "category": ["Musical Instruments", "Accessories", "Straps"], "brand": "Acme", "price": "$1,299.00",
     "imageURL": ["http://img/b1-small.jpg"], "imageURLHighRes": ["http://img/b1.jpg"], "also_buy": ["B9"]},
    {"asin": "B2", "title": "Capo", "description": "One &lt;b&gt;capo&lt;/b&gt;", "category": [],
     "brand": "", "price": "$10.99 - $15.99", "imageURL": [], "imageURLHighRes": []},
]  # fmt: skip


def fx_amazon_2018(tmp: Path) -> dict[str, Any]:
    # the 2018 metadata repeats some records verbatim: one copy is dropped and counted
    return {
        "reviews": write_lines(tmp / "Musical_Instruments_5.json", jl(REVIEWS_2018)),
        "meta": write_lines(
            tmp / "meta_Musical_Instruments.json.gz", jl([*META_2018, META_2018[1]]), gz=True
        ),
    }


def fx_s3rec(tmp: Path) -> dict[str, Any]:
    datamaps = {
        "user2id": {"AU1": "1", "AU2": "2", "AU3": "3"},
        "item2id": {"B001": "1", "B002": "2", "B003": "3", "B004": "4"},
        "id2user": {"1": "AU1", "2": "AU2", "3": "AU3"},
        "id2item": {"1": "B001", "2": "B002", "3": "B003", "4": "B004"},
    }
    write_lines(tmp / "beauty_datamaps.json", [json.dumps(datamaps)])
    return {
        "sequences": write_lines(tmp / "Beauty.txt", ["1 1 2 3", "2 2 4", "3 3 1 4 2"]),
        "datamaps": tmp / "beauty_datamaps.json",
        "item_table": write_lines(
            tmp / "Beauty_items.tsv",
            [
                "p5_item_id\tasin\ttitle\tattributes",
                "1\tB001\tOPI Nail Lacquer, 0.5-Fluid Ounce\tOPI|Makeup|Nails",
                "2\tB002\t  Derma Cr&egrave;me  \tSkin Care|Face|Skin Care",
                "3\tB003\t\tHair Care",
                "4\tB004\tComb\tTools & Accessories",
            ],
        ),
    }


def fx_tsv(tmp: Path) -> dict[str, Any]:
    return {
        "sequences": write_lines(tmp / "users.tsv", ["UA\tI1 I2 I1", "UB\tI3", "UC\tI2 I3"]),
        "titles": write_lines(
            tmp / "items.tsv",
            ["I1\t Guitar Strap 2&quot; Wide", "I2\tDrum &amp; Bass Sticks", "I3\tCello", "I4\tNever bought"],
        ),
    }


GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def fx_ml100k(tmp: Path) -> dict[str, Any]:
    root = tmp / "ml-100k"
    write_lines(root / "u.genre", [f"{g}|{i}" for i, g in enumerate(GENRES)] + [""])
    write_lines(
        root / "u.item",
        [
            "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
            + _flags("Animation", "Children's", "Comedy"),
            "267|unknown||||" + _flags("unknown"),
            "543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|"
            + _flags("Drama", "Musical"),
            "1682|Scream of Stone (Schrei aus Stein) (1991)|08-Mar-1996||http://x|" + _flags("Drama"),
        ],
        encoding="latin-1",
    )
    write_lines(
        root / "u.data",
        ["196\t1\t3\t881250949", "186\t543\t3\t891717742", "196\t267\t1\t878887116", "22\t1\t2\t880606923"],
    )
    return {"root": root}


def fx_ml1m(tmp: Path) -> dict[str, Any]:
    """A few real-looking lines of MovieLens 1M (no 1M data is available here)."""
    root = tmp / "ml-1m"
    write_lines(
        root / "movies.dat",
        [
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "2::Jumanji (1995)::Adventure|Children's|Fantasy",
            "29::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure|Sci-Fi",
            "3952::Contender, The (2000)::Drama|Thriller",
        ],
        encoding="latin-1",
    )
    write_lines(
        root / "ratings.dat",
        [
            "1::1::5::978824268",
            "1::29::3::978302109",
            "2::1::4::978300760",
            "2::3952::4::978299026",
            "6040::2::3::956716541",
        ],
    )
    write_lines(root / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072", "6040::M::25::6::11106"])
    return {"root": root}


def fx_mmrec(tmp: Path) -> dict[str, Any]:
    inter = write_lines(
        tmp / "toy.inter",
        [
            "userID\titemID\trating\tx_label",
            "0\t0\t1\t0",
            "0\t2\t1\t0",
            "0\t1\t1\t2",
            "1\t2\t1\t0",
            "1\t0\t1\t1",
        ],
    )
    text = write_lines(
        tmp / "item_index_map.tsv",
        [
            "item_idx\tartistID\tartist_name\ttags_text",
            "0\t80\tGroove Armada\tchillout,electronic",
            "1\t66\tFaithless\t",
            # item 3 has text but no interaction: still an item, so the rows of the matrices line up
            "3\t12\tMoby\tambient",
        ],
    )
    feats = tmp / "features_npy"
    feats.mkdir(parents=True)
    np.save(feats / "vggish.npy", np.arange(4 * 3, dtype=np.float64).reshape(4, 3))
    np.save(feats / "whisper.npy", np.ones((4, 5), dtype=np.float32))
    return {"inter": inter, "item_text": text, "features": feats}


def fx_recbole(tmp: Path) -> dict[str, Any]:
    return {
        "inter": write_lines(
            tmp / "ml-100k.inter",
            [
                "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                "196\t242\t3\t881250949",
                "186\t302\t3\t891717742.0",
                "196\t302\t5\t881250950",
            ],
        ),
        "item": write_lines(
            tmp / "ml-100k.item",
            [
                "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
                "242\tKolya\t1996\tComedy",
                "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller",
                "999\tUnrated Movie\t\t",
            ],
        ),
    }


BENCH_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"

BENCH_SEQUENCES = {
    "AU1": ["B05", "B02", "B07", "B01", "B04", "B03", "B06"],  # longer than the prefixes: truncated
    "AU2": ["B02", "B01", "B03"],  # one training item: no train row, only history
    "AU3": ["B03", "B03", "B04", "B03", "B05", "B06"],  # re-purchases
    "AU4": ["B04", "B05", "B01", "B02"],
}

BENCH_TEXTS = {
    "B01": "Pop Filter. Recording. Acme. ",  # UniSRec joins title, category and brand, each ending in '.'
    "B02": ".",  # what UniSRec writes for an item without metadata
    "B03": "Cello Strings & Rosin. ",
    "B05": "Capo.",
}


def write_recbole_benchmark(
    root: Path,
    name: str,
    sequences: dict[str, list[str]],
    *,
    max_prefix: int = 50,
    texts: dict[str, str] | None = None,
    index_maps: bool = True,
) -> dict[str, Any]:
    """RecBole's benchmark layout as UniSRec's preprocessing writes it (see the converter's docstring):
    leave-one-out per user, one train row per training item after the first, last target first, prefixes
    cut to their last ``max_prefix`` items, 0-based indices with ``original<TAB>index`` maps (no header),
    and ``.text`` keyed by the original item ids."""
    root.mkdir(parents=True, exist_ok=True)
    user2index = {u: str(i) for i, u in enumerate(sequences)}
    item2index: dict[str, str] = {}
    for seq in sequences.values():
        for item in seq:
            item2index.setdefault(item, str(len(item2index)))
    train, valid, test = [BENCH_HEADER], [BENCH_HEADER], [BENCH_HEADER]
    for user, seq in sequences.items():
        u = user2index[user] if index_maps else user
        ids = [item2index[i] for i in seq] if index_maps else list(seq)
        tr, va, te = ids[:-2], ids[-2], ids[-1]
        for k in range(len(tr) - 1, 0, -1):
            train.append(f"{u}\t{' '.join(tr[:k][-max_prefix:])}\t{tr[k]}")
        valid.append(f"{u}\t{' '.join(tr[-max_prefix:])}\t{va}")
        test.append(f"{u}\t{' '.join([*tr, va][-max_prefix:])}\t{te}")
    write_lines(root / f"{name}.train.inter", train)
    write_lines(root / f"{name}.valid.inter", valid)
    write_lines(root / f"{name}.test.inter", test)
    if index_maps:
        write_lines(root / f"{name}.user2index", [f"{u}\t{i}" for u, i in user2index.items()])
        write_lines(root / f"{name}.item2index", [f"{it}\t{i}" for it, i in item2index.items()])
    if texts is not None:
        write_lines(
            root / f"{name}.text", ["item_id:token\ttext:token_seq", *(f"{k}\t{v}" for k, v in texts.items())]
        )
    return {"root": root}


def fx_recbole_benchmark(tmp: Path) -> dict[str, Any]:
    return write_recbole_benchmark(
        tmp / "Instruments", "Instruments", BENCH_SEQUENCES, max_prefix=3, texts=BENCH_TEXTS
    )


def fx_hm(tmp: Path) -> dict[str, Any]:
    """The H&M sample layout: two parquet tables and ``images/<10-digit id>.jpg`` (one article has no photo)."""
    from PIL import Image

    tmp.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "article_id": [108775015, 108775044, 110065001],
            "product_code": [108775, 108775, 110065],
            "prod_name": ["Strap top", "Strap top", "OP T-shirt(Idro)"],
            "product_type_name": ["Vest top", "Vest top", "Bra"],
            "product_group_name": ["Garment Upper body", "Garment Upper body", "Underwear"],
            "colour_group_name": ["Black", "White", "Black"],
            "detail_desc": ["Jersey top with narrow shoulder straps.", "", "Microfibre T-shirt bra."],
        }
    ).to_parquet(tmp / "articles_sample.parquet")
    pd.DataFrame(
        {
            "t_dat": ["2019-06-13", "2020-06-12", "2020-06-12", "2019-07-01"],
            "customer_id": ["c" * 64, "c" * 64, "c" * 64, "d" * 64],
            "article_id": [108775015, 110065001, 110065001, 108775044],
            "price": [0.0169, 0.0508, 0.0508, 0.0101],
        }
    ).to_parquet(tmp / "transactions_sample.parquet")
    (tmp / "images").mkdir()
    for key in ("0108775015", "0108775044"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp / "images" / f"{key}.jpg")
    return {"root": tmp}


FIXTURES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "amazon/2014": fx_amazon_2014,
    "amazon/2018": fx_amazon_2018,
    "sequence/s3rec": fx_s3rec,
    "sequence/tsv": fx_tsv,
    "movielens/100k": fx_ml100k,
    "movielens/1m": fx_ml1m,
    "movielens/auto": fx_ml1m,
    "mmrec/inter": fx_mmrec,
    "recbole/atomic": fx_recbole,
    "recbole/benchmark": fx_recbole_benchmark,
    "hm/sample": fx_hm,
}


# --------------------------------------------------------------------------------------------- registry


def test_every_registered_converter_has_a_fixture_and_meets_the_invariants(tmp_path: Path) -> None:
    assert set(CONVERTERS) == set(FIXTURES), "add a fixture for each new converter"
    for i, key in enumerate(CONVERTERS):
        meta = CONVERTERS.meta(key)
        assert meta["description"] and "\n" not in meta["description"]
        args = FIXTURES[key](tmp_path / f"raw{i}")
        ds = prepare_dataset(key, tmp_path / f"out{i}", **args)
        assert_canonical(ds)
        assert ds.meta["source_format"] == key
        assert ds.meta["conversion_report"]["skipped"] == {} or key in ("amazon/2018", "hm/sample")
        assert all(Path(p).exists() for p in ds.meta["source_files"])


def test_aliases_resolve_and_unknown_formats_suggest() -> None:
    assert resolve_format("amazon2014") == "amazon/2014"
    assert resolve_format("s3rec") == "sequence/s3rec"
    assert resolve_format("movielens") == "movielens/auto"
    assert resolve_format("ml-1m") == "movielens/1m"
    assert set(format_aliases().values()) <= set(CONVERTERS)
    with pytest.raises(DatasetError, match=r"unknown dataset format 'amazon2013'.*amazon2014"):
        resolve_format("amazon2013")


def test_wrong_format_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"unknown argument\(s\) \['reveiws'\].*missing required argument\(s\) \['reviews'\]"
    ):
        prepare_dataset("amazon/2014", tmp_path / "x", reveiws="r.json")


# --------------------------------------------------------------------------------------------- amazon


def test_amazon2014_reviews_and_python_literal_meta(tmp_path: Path) -> None:
    ds = prepare_dataset("amazon2014", tmp_path / "mi", **fx_amazon_2014(tmp_path))
    assert ds.counts == {"users": 2, "items": 2, "interactions": 3}
    items = items_of(ds)
    assert list(items) == ["A1", "A2"]  # meta order; A3 was never reviewed ("interacted" is the default)
    a1, a2 = items["A1"], items["A2"]
    assert a1["title"] == "Pop & Filter"
    assert a1["categories"] == ["Musical Instruments", "Recording", "Microphones"]
    assert a1["price"] == pytest.approx(3.17)
    assert a1["image"] == "http://img/a1.jpg"
    assert a1["brand"] == "Acme" and a1["description"] == "It's a filter"
    assert null(a2["brand"]) and null(a2["price"]) and null(a2["image"]) and null(a2["description"])
    inter = ds.interactions
    assert inter[["user_id", "item_id", "timestamp"]].values.tolist() == [
        ["U1", "A2", 1363392000],  # sorted by user, then time
        ["U1", "A1", 1393545600],
        ["U2", "A1", 1388620800],  # "01 02, 2014" at UTC midnight
    ]
    assert inter["rating"].tolist() == [3.0, 5.0, 4.0]
    assert null(inter["review"][0]) and inter["review"][1] == "Great & cheap"
    assert inter["summary"].tolist()[:2] == ["meh", "good"] and null(inter["summary"][2])


def test_amazon2014_items_all_keeps_unreviewed_meta(tmp_path: Path) -> None:
    ds = prepare_dataset("amazon/2014", tmp_path / "mi", items="all", **fx_amazon_2014(tmp_path))
    assert ds.item_ids == ["A1", "A2", "A3"]
    assert items_of(ds)["A3"]["price"] == 9.5


def test_amazon2014_without_meta_items_come_from_reviews(tmp_path: Path) -> None:
    reviews = fx_amazon_2014(tmp_path)["reviews"]
    ds = prepare_dataset("amazon/2014", tmp_path / "mi", reviews=reviews)
    assert ds.item_ids == ["A1", "A2"]  # order of first appearance in the reviews
    assert ds.meta["columns"]["items"] == ["item_id"]


def test_amazon2014_meta_code_is_rejected_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    reviews = fx_amazon_2014(tmp_path)["reviews"]
    meta = write_lines(
        tmp_path / "meta_Evil.json.gz",
        [META_2014[0], f"__import__('os').system('touch {marker}')", META_2014[1]],
        gz=True,
    )
    with pytest.raises(DatasetError, match=r"meta_Evil\.json\.gz:2: not a Python literal") as err:
        prepare_dataset("amazon/2014", tmp_path / "out", reviews=reviews, meta=meta)
    assert "--skip_bad" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    ds = prepare_dataset("amazon/2014", tmp_path / "out", reviews=reviews, meta=meta, skip_bad=True)
    assert not marker.exists()
    assert ds.meta["conversion_report"]["skipped"] == {"malformed lines in meta_Evil.json.gz": 1}
    assert ds.meta["conversion_report"]["examples"]["malformed lines in meta_Evil.json.gz"][0].startswith(
        "meta_Evil.json.gz:2: "
    )


def test_amazon_malformed_review_lines(tmp_path: Path) -> None:
    lines = jl(REVIEWS_2014)
    bad = [lines[0], "{not json", json.dumps({"asin": "A1", "unixReviewTime": 1}), '["a list"]', lines[1]]
    reviews = write_lines(tmp_path / "reviews.json.gz", bad, gz=True)
    with pytest.raises(DatasetError, match=r"reviews\.json\.gz:2: not valid JSON"):
        prepare_dataset("amazon/2014", tmp_path / "out", reviews=reviews)
    ds = prepare_dataset("amazon/2014", tmp_path / "out", reviews=reviews, skip_bad=True)
    assert ds.counts["interactions"] == 2
    report = ds.meta["conversion_report"]
    assert report["skipped"] == {"malformed lines in reviews.json.gz": 3}
    assert [e.split(": ")[0] for e in report["examples"]["malformed lines in reviews.json.gz"]] == [
        "reviews.json.gz:2",
        "reviews.json.gz:3",
        "reviews.json.gz:4",
    ]
    assert "missing or empty 'reviewerID'" in report["examples"]["malformed lines in reviews.json.gz"][1]


def test_amazon_reviews_of_items_missing_from_meta_follow_the_unknown_items_rule(tmp_path: Path) -> None:
    args = fx_amazon_2014(tmp_path)
    meta = write_lines(tmp_path / "meta_small.json", [META_2014[0]])
    with pytest.raises(
        DatasetError,
        match=r"1 interaction\(s\) refer to item ids missing from the item table.*A2.*--skip_bad",
    ):
        prepare_dataset("amazon/2014", tmp_path / "out", reviews=args["reviews"], meta=meta)
    ds = prepare_dataset("amazon/2014", tmp_path / "out", reviews=args["reviews"], meta=meta, skip_bad=True)
    assert ds.counts == {"users": 2, "items": 1, "interactions": 2}
    assert ds.meta["conversion_report"]["skipped"] == {"interactions with unknown items": 1}


def test_amazon2018_metadata(tmp_path: Path) -> None:
    ds = prepare_dataset("amazon/2018", tmp_path / "mi", **fx_amazon_2018(tmp_path))
    assert ds.counts == {"users": 2, "items": 2, "interactions": 3}
    b1, b2 = items_of(ds)["B1"], items_of(ds)["B2"]
    assert b1["title"] == 'Guitar Strap 2" Wide'
    assert b1["description"] == "Soft & strong.\nFits all."
    assert b1["categories"] == ["Musical Instruments", "Accessories", "Straps"]
    assert b1["price"] == 1299.0 and b1["brand"] == "Acme"
    assert b1["image"] == "http://img/b1.jpg"  # high resolution first
    assert b2["description"] == "One <b>capo</b>"
    assert null(b2["categories"]) and null(b2["price"]) and null(b2["brand"]) and null(b2["image"])
    assert ds.interactions["summary"].tolist() == ["Five Stars", "Two Stars", "ok"]
    assert ds.meta["conversion_report"]["skipped"] == {"identical duplicate metadata records (dropped)": 1}


def test_amazon2018_conflicting_duplicate_metadata(tmp_path: Path) -> None:
    reviews = fx_amazon_2018(tmp_path)["reviews"]
    other = dict(META_2018[0], title="Another title")
    meta = write_lines(tmp_path / "meta2.json", jl([*META_2018, other]))
    with pytest.raises(DatasetError, match=r"1 duplicate item id\(s\) in the item table.*B1"):
        prepare_dataset("amazon/2018", tmp_path / "out", reviews=reviews, meta=meta)
    ds = prepare_dataset("amazon/2018", tmp_path / "out", reviews=reviews, meta=meta, skip_bad=True)
    assert items_of(ds)["B1"]["title"] == 'Guitar Strap 2" Wide'  # the first record wins
    assert ds.meta["conversion_report"]["skipped"] == {"duplicate item rows": 1}


# --------------------------------------------------------------------------------------------- sequences


def test_s3rec_with_datamaps_uses_raw_ids(tmp_path: Path) -> None:
    ds = prepare_dataset("s3rec", tmp_path / "beauty", **fx_s3rec(tmp_path))
    assert ds.counts == {"users": 3, "items": 4, "interactions": 9}
    assert ds.item_ids == ["B001", "B002", "B003", "B004"]
    assert user_items(ds, "AU1") == ["B001", "B002", "B003"]
    assert user_items(ds, "AU3") == ["B003", "B001", "B004", "B002"]
    assert ds.interactions.loc[ds.interactions["user_id"] == "AU3", "timestamp"].tolist() == [0, 1, 2, 3]
    assert ds.interactions["rating"].isna().all()
    items = items_of(ds)
    assert items["B002"]["title"] == "Derma Crème"
    assert items["B002"]["categories"] == ["Skin Care", "Face"]
    assert null(items["B003"]["title"])
    assert items["B001"]["p5_item_id"] == "1"
    assert "asin" not in ds.items.columns  # it is the item id now
    assert ds.meta["timestamps"] == "sequence-order"
    assert ds.meta["repeated_user_item_pairs"] == 0


def test_s3rec_without_datamaps_keeps_ints_in_numeric_order(tmp_path: Path) -> None:
    seq = write_lines(tmp_path / "Toys.txt", ["1 10 2", "2 2 10 10", "3 1"])
    ds = prepare_dataset("sequence/s3rec", tmp_path / "toys", sequences=seq)
    assert ds.item_ids == ["1", "2", "10"]
    assert user_items(ds, "2") == ["2", "10", "10"]  # a repeat is a second interaction at a later position
    assert ds.meta["repeated_user_item_pairs"] == 1


def test_s3rec_errors_name_file_and_line(tmp_path: Path) -> None:
    args = fx_s3rec(tmp_path)
    bad_table = write_lines(
        tmp_path / "bad_items.tsv", ["p5_item_id\tasin\ttitle\tattributes", "1\tB001\tA\tx", "2\tB999\tB\ty"]
    )
    with pytest.raises(DatasetError, match=r"bad_items\.tsv:3: asin 'B999' disagrees with the datamaps"):
        prepare_dataset("s3rec", tmp_path / "o", **{**args, "item_table": bad_table})
    seq = write_lines(tmp_path / "Bad.txt", ["1 1 2", "2 2 7", "1 3"])
    with pytest.raises(DatasetError, match=r"Bad\.txt:2: item id\(s\) \['7'\] not in the datamaps"):
        prepare_dataset("s3rec", tmp_path / "o", **{**args, "sequences": seq})
    with pytest.raises(DatasetError, match=r"Bad\.txt:3: user '1' already has a sequence on line 1"):
        prepare_dataset("s3rec", tmp_path / "o", sequences=seq)
    ds = prepare_dataset("s3rec", tmp_path / "o", skip_bad=True, **{**args, "sequences": seq})
    assert ds.meta["conversion_report"]["skipped"] == {"malformed lines in Bad.txt": 2}
    assert ds.counts["interactions"] == 2
    assert not (tmp_path / "o2").exists()


def test_user_sequence_tsv_keeps_catalogue_items(tmp_path: Path) -> None:
    args = fx_tsv(tmp_path)
    ds = prepare_dataset("sequence/tsv", tmp_path / "inst", **args)
    assert ds.counts == {"users": 3, "items": 4, "interactions": 6}
    assert ds.item_ids == ["I1", "I2", "I3", "I4"]
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    assert titles == {
        "I1": 'Guitar Strap 2" Wide',
        "I2": "Drum & Bass Sticks",
        "I3": "Cello",
        "I4": "Never bought",
    }
    assert user_items(ds, "UA") == ["I1", "I2", "I1"]
    assert ds.meta["repeated_user_item_pairs"] == 1
    small = prepare_dataset("sequence/tsv", tmp_path / "inst2", items="interacted", **args)
    assert small.item_ids == ["I1", "I2", "I3"]


def test_user_sequence_tsv_bad_lines_and_unknown_items(tmp_path: Path) -> None:
    args = fx_tsv(tmp_path)
    seq = write_lines(tmp_path / "u.tsv", ["UA\tI1 I2", "UB I3", "UC\tI9 I3"])
    with pytest.raises(DatasetError, match=r"u\.tsv:2: expected 2 tab-separated fields"):
        prepare_dataset("sequence/tsv", tmp_path / "o", sequences=seq, titles=args["titles"])
    unknown = write_lines(tmp_path / "v.tsv", ["UC\tI9 I3"])
    with pytest.raises(
        DatasetError,
        match=r"1 interaction\(s\) refer to item ids missing from the item table, e\.g\. \['I9'\]",
    ):
        prepare_dataset("sequence/tsv", tmp_path / "o", sequences=unknown, titles=args["titles"])
    ds = prepare_dataset("sequence/tsv", tmp_path / "o", sequences=seq, titles=args["titles"], skip_bad=True)
    assert ds.meta["conversion_report"]["skipped"] == {
        "malformed lines in u.tsv": 1,
        "interactions with unknown items": 1,
    }
    assert user_items(ds, "UC") == ["I3"]


# --------------------------------------------------------------------------------------------- movielens


def test_movielens_100k(tmp_path: Path) -> None:
    ds = prepare_dataset("movielens/100k", tmp_path / "ml", **fx_ml100k(tmp_path))
    assert ds.counts == {"users": 3, "items": 4, "interactions": 4}
    items = items_of(ds)
    assert list(items) == ["1", "267", "543", "1682"]  # u.item order; 1682 has no rating but is kept
    assert items["1"]["categories"] == ["Animation", "Children's", "Comedy"]
    assert items["1"]["release_date"] == "1995-01-01"
    assert items["543"]["title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert (
        null(items["267"]["title"]) and null(items["267"]["release_date"]) and null(items["267"]["imdb_url"])
    )
    assert items["267"]["categories"] == ["unknown"]
    assert items["1682"]["release_date"] == "1996-03-08"
    inter = ds.interactions
    assert inter.loc[inter["user_id"] == "196", ["item_id", "timestamp", "rating"]].values.tolist() == [
        ["267", 878887116, 1.0],
        ["1", 881250949, 3.0],
    ]


def test_movielens_100k_malformed_rating_line(tmp_path: Path) -> None:
    args = fx_ml100k(tmp_path)
    with open(args["root"] / "u.data", "a") as f:
        f.write("7\t1\tfive\t881250949\n")
    with pytest.raises(DatasetError, match=r"u\.data:5: rating must be a number, got 'five'"):
        prepare_dataset("movielens/100k", tmp_path / "ml", **args)
    ds = prepare_dataset("movielens/100k", tmp_path / "ml", skip_bad=True, **args)
    assert ds.meta["conversion_report"]["skipped"] == {"malformed lines in u.data": 1}


def test_movielens_1m_and_auto_detection(tmp_path: Path) -> None:
    args = fx_ml1m(tmp_path)
    ds = prepare_dataset("movielens/1m", tmp_path / "ml1m", **args)
    assert ds.counts == {"users": 3, "items": 4, "interactions": 5}
    items = items_of(ds)
    assert items["29"]["title"] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert items["29"]["categories"] == ["Adventure", "Sci-Fi"]
    assert items["3952"]["release_year"] == 2000
    assert user_items(ds, "1") == ["29", "1"]
    assert ds.interactions["rating"].tolist() == [3.0, 5.0, 4.0, 4.0, 3.0]
    auto = prepare_dataset("movielens", tmp_path / "auto", **args)
    assert auto.meta["detected"] == "movielens/1m" and auto.fingerprint == ds.fingerprint
    auto100k = prepare_dataset("movielens", tmp_path / "auto100k", **fx_ml100k(tmp_path))
    assert auto100k.meta["detected"] == "movielens/100k"
    with pytest.raises(DatasetError, match=r"neither u\.data .* nor ratings\.dat"):
        prepare_dataset("movielens", tmp_path / "none", root=tmp_path / "ml1m")


def test_movielens_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"lacks ratings\.dat, movies\.dat"):
        prepare_dataset("movielens/1m", tmp_path / "o", root=tmp_path / "empty")


# --------------------------------------------------------------------------------------------- mmrec


def test_mmrec_inter_with_text_and_feature_stores(tmp_path: Path) -> None:
    args = fx_mmrec(tmp_path)
    ds = prepare_dataset("mmrec/inter", tmp_path / "toy", **args)
    assert ds.counts == {"users": 2, "items": 4, "interactions": 5}
    assert ds.item_ids == ["0", "1", "2", "3"]  # row k = item k, item 2 has no text, 3 no interaction
    items = items_of(ds)
    assert items["0"]["title"] == "Groove Armada" and items["0"]["description"] == "chillout,electronic"
    assert null(items["1"]["description"]) and null(items["2"]["title"]) and items["3"]["artistID"] == "12"
    inter = ds.interactions
    assert inter[["user_id", "item_id", "timestamp", "split"]].values.tolist() == [
        ["0", "0", 0, 0],
        ["0", "2", 1, 0],
        ["0", "1", 2, 2],
        ["1", "2", 3, 0],
        ["1", "0", 4, 1],
    ]
    assert ds.meta["split"] == "given" and ds.meta["timestamps"] == "file-order"
    assert set(ds.meta["stores"]) == {"vggish", "whisper"}
    vgg = EmbeddingStore.open(ds.path / "stores" / "vggish")
    assert vgg.dim == 3 and vgg.item_ids == ds.item_ids
    assert vgg.manifest["encoder"] == "import/npy" and vgg.manifest["weights"].startswith("sha256:")
    assert vgg.manifest["source_dtype"] == "float64"
    vecs, mask = vgg.aligned(["3", "0"])
    assert vecs.tolist() == [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]] and mask.all()
    assert EmbeddingStore.open(ds.path / "stores" / "whisper").dim == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_mmrec_custom_text_columns_and_timestamps(tmp_path: Path) -> None:
    inter = write_lines(
        tmp_path / "b.inter",
        ["itemID\tuserID\trating\ttimestamp\tx_label", "1\t0\t5\t100\t0", "0\t0\t4\t50\t2"],
    )
    text = write_lines(tmp_path / "t.tsv", ["iid\tname\tgenres\tblurb", "0\tA\tx|y\tfirst", "1\tB\t\tsecond"])
    ds = prepare_dataset(
        "mmrec/inter",
        tmp_path / "b",
        inter=inter,
        item_text=text,
        description_column="blurb",
        categories_column="genres",
        categories_sep="|",
    )
    items = items_of(ds)
    assert items["0"] | {} == {**items["0"], "title": "A", "description": "first", "categories": ["x", "y"]}
    assert null(items["1"]["categories"])
    assert user_items(ds, "0") == ["0", "1"] and ds.interactions["timestamp"].tolist() == [50, 100]
    assert "timestamps" not in ds.meta
    with pytest.raises(DatasetError, match=r"no column 'nope' for the title \(--title-column\)"):
        prepare_dataset("mmrec/inter", tmp_path / "c", inter=inter, item_text=text, title_column="nope")


def test_mmrec_bad_rows_and_feature_mismatch_leave_nothing(tmp_path: Path) -> None:
    args = fx_mmrec(tmp_path)
    bad = write_lines(
        tmp_path / "bad.inter",
        ["userID\titemID\trating\tx_label", "0\t0\t1\t0", "0\t1\t1\t3", "0\t0\t1\t2", "x\t1\t1\t0"],
    )
    with pytest.raises(
        DatasetError, match=r"bad\.inter:3: x_label must be 0 \(train\), 1 \(valid\) or 2 \(test\), got 3"
    ):
        prepare_dataset("mmrec/inter", tmp_path / "o", inter=bad)
    ds = prepare_dataset("mmrec/inter", tmp_path / "o", inter=bad, skip_bad=True)
    examples = ds.meta["conversion_report"]["examples"]["malformed lines in bad.inter"]
    assert [e.split(": ", 1)[0] for e in examples] == ["bad.inter:3", "bad.inter:4", "bad.inter:5"]
    assert "already form an interaction on line 2" in examples[1]
    np.save(tmp_path / "short.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"short\.npy: has 3 rows but the dataset has 4 items"):
        prepare_dataset(
            "mmrec/inter",
            tmp_path / "p",
            inter=args["inter"],
            item_text=args["item_text"],
            features=tmp_path / "short.npy",
        )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "p") == []


# --------------------------------------------------------------------------------------------- recbole


def test_recbole_atomic(tmp_path: Path) -> None:
    ds = prepare_dataset("recbole/atomic", tmp_path / "rb", **fx_recbole(tmp_path))
    assert ds.counts == {"users": 2, "items": 3, "interactions": 3}
    items = items_of(ds)
    assert items["302"]["title"] == "L.A. Confidential"
    assert items["302"]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items["242"]["release_year"] == 1996
    assert null(items["999"]["categories"]) and null(items["999"]["release_year"])
    assert ds.interactions["timestamp"].tolist() == [891717742, 881250949, 881250950]
    assert ds.interactions["rating"].tolist() == [3.0, 3.0, 5.0]


def test_recbole_header_and_row_errors(tmp_path: Path) -> None:
    bad_header = write_lines(tmp_path / "a.inter", ["user_id:token\titem_id\trating:float", "1\t2\t3"])
    with pytest.raises(DatasetError, match=r"a\.inter:1: header field 'item_id' is not 'name:type'"):
        prepare_dataset("recbole", tmp_path / "o", inter=bad_header)
    bad_rows = write_lines(
        tmp_path / "b.inter",
        ["user_id:token\titem_id:token\trating:float", "1\t2\t3", "1\t3\tgood", "2\t\t4", "3\t4"],
    )
    with pytest.raises(DatasetError, match=r"b\.inter:3: rating must be a number, got 'good'"):
        prepare_dataset("recbole", tmp_path / "o", inter=bad_rows)
    ds = prepare_dataset("recbole", tmp_path / "o", inter=bad_rows, skip_bad=True)
    assert ds.meta["conversion_report"]["skipped"] == {"malformed lines in b.inter": 3}
    assert ds.meta["timestamps"] == "file-order"


# --------------------------------------------------------------------------------------------- recbole benchmark


RowKey = tuple[str, str, tuple[str, ...], str]
"""One RecBole example: ``(split, user, history, target)`` with original ids."""


def read_benchmark_rows(root: Path, name: str) -> list[RowKey]:
    """``(split, user, prefix, target)`` of every row of the three files, original ids, read on its own."""
    user = dict(reversed(line.split("\t")) for line in (root / f"{name}.user2index").read_text().splitlines())
    item = dict(reversed(line.split("\t")) for line in (root / f"{name}.item2index").read_text().splitlines())
    rows = []
    for split in ("train", "valid", "test"):
        for line in (root / f"{name}.{split}.inter").read_text().splitlines()[1:]:
            u, prefix, target = line.split("\t")
            rows.append((split, user[u], tuple(item[i] for i in prefix.split()), item[target]))
    return sorted(rows)


def rows_of_given_split(dm: SequentialDataModule, max_prefix: int) -> list[RowKey]:
    """The examples RecBole would build from the DataModule's split: every prefix of a user's training
    sequence, then (train history, valid target) and (train + valid history, test target)."""
    s = dm.splits

    def ids(seq: list[int]) -> list[str]:
        return [dm.item_ids[i - 1] for i in seq]

    rows = []
    for u, train in enumerate(s.train):
        seq = ids(train)
        rows += [("train", dm.user_ids[u], tuple(seq[:k][-max_prefix:]), seq[k]) for k in range(1, len(seq))]
    for split, ev in (("valid", s.valid), ("test", s.test)):
        for u, history, targets in zip(ev.users, ev.histories, ev.targets, strict=True):
            assert len(targets) == 1
            rows.append((split, dm.user_ids[u], tuple(ids(history)[-max_prefix:]), ids(targets)[0]))
    return sorted(rows)


def trained_examples(dm: SequentialDataModule, max_prefix: int) -> list[RowKey]:
    """``(history, next item)`` pairs a SASRec-style model is trained on (the train loader's examples)."""
    out = []
    for ex in dm.train_dataloader().dataset:
        inputs, targets = ex["input_ids"], ex["target_ids"]
        for p, target in enumerate(targets):
            if target:
                history = [dm.item_ids[i - 1] for i in inputs[: p + 1] if i]
                out.append(
                    ("train", dm.user_ids[ex["user"]], tuple(history[-max_prefix:]), dm.item_ids[target - 1])
                )
    return sorted(out)


def test_recbole_benchmark_reproduces_the_given_split(tmp_path: Path) -> None:
    raw = fx_recbole_benchmark(tmp_path / "raw")["root"]
    ds = prepare_dataset("recbole-benchmark", tmp_path / "ds", root=raw)
    assert_canonical(ds)
    assert ds.counts == {"users": 4, "items": 7, "interactions": 20}
    # items in index order (row k = index k, as UniSRec's feature matrices), original ids
    assert ds.item_ids == ["B05", "B02", "B07", "B01", "B04", "B03", "B06"]
    assert ds.items["recbole_item_index"].tolist() == list(range(7))
    inter = ds.interactions
    for user, seq in BENCH_SEQUENCES.items():
        mine = inter[inter["user_id"] == user]
        assert mine["item_id"].tolist() == seq  # time runs forwards although the train file runs backwards
        assert mine["timestamp"].tolist() == list(range(len(seq)))
        assert mine["split"].tolist() == [0] * (len(seq) - 2) + [1, 2]
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    assert titles["B01"] == "Pop Filter. Recording. Acme." and titles["B03"] == "Cello Strings & Rosin."
    assert null(titles["B02"]) and null(titles["B04"])  # '.' only, and no text at all
    bench = ds.meta["recbole_benchmark"]
    assert bench["rows"] == {"train": 8, "valid": 4, "test": 4}
    assert bench["longest_prefix"] == {"train": 3, "valid": 3, "test": 3}
    assert ds.meta["timestamps"] == "sequence-order" and ds.meta["split"] == "given"
    assert ds.meta["repeated_user_item_pairs"] == 2

    dm = SequentialDataModule(str(ds.path), split="given", max_len=50)
    dm.setup()
    s = dm.splits
    assert dm.user_ids == list(BENCH_SEQUENCES) and s.not_evaluated == 0
    for u, user in enumerate(dm.user_ids):
        seq = [dm.item_ids.index(i) + 1 for i in BENCH_SEQUENCES[user]]
        assert s.train[u] == seq[:-2]
        assert (s.valid.users[u], s.valid.histories[u], s.valid.targets[u]) == (u, seq[:-2], [seq[-2]])
        assert (s.test.users[u], s.test.histories[u], s.test.targets[u]) == (u, seq[:-1], [seq[-1]])
    # exactly RecBole's examples: every train row, the valid row and the test row of each user
    expected = read_benchmark_rows(raw, "Instruments")
    assert rows_of_given_split(dm, max_prefix=3) == expected
    assert trained_examples(dm, max_prefix=3) == [r for r in expected if r[0] == "train"]


def test_recbole_benchmark_training_examples_when_sequences_exceed_max_len(tmp_path: Path) -> None:
    raw = fx_recbole_benchmark(tmp_path / "raw")["root"]
    ds = prepare_dataset("recbole/benchmark", tmp_path / "ds", root=raw)
    expected = [r for r in read_benchmark_rows(raw, "Instruments") if r[0] == "train"]
    # window_stride 1: every target trained once with its max_len predecessors, exactly RecBole's examples
    dm = SequentialDataModule(str(ds.path), split="given", max_len=3, window_stride=1)  # AU1: 5 train items
    dm.setup()
    assert trained_examples(dm, max_prefix=3) == expected
    # the default (windows of max_len targets): every target exactly once, with fewer predecessors for some
    dm = SequentialDataModule(str(ds.path), split="given", max_len=3)
    dm.setup()
    ours = trained_examples(dm, max_prefix=3)
    assert sorted((r[1], r[3]) for r in ours) == sorted((r[1], r[3]) for r in expected)
    assert ours != expected


def test_recbole_benchmark_without_index_maps_keeps_the_file_ids(tmp_path: Path) -> None:
    texts = {"B01": "Pop Filter."}
    raw = write_recbole_benchmark(tmp_path / "raw", "toy", BENCH_SEQUENCES, texts=texts, index_maps=False)[
        "root"
    ]
    ds = prepare_dataset("recbole/benchmark", tmp_path / "ds", root=raw, dataset="toy")
    assert sorted(ds.item_ids) == [f"B0{i}" for i in range(1, 8)] and "recbole_item_index" not in ds.items
    assert user_items(ds, "AU3") == BENCH_SEQUENCES["AU3"]
    assert items_of(ds)["B01"]["title"] == "Pop Filter."
    assert ds.meta["recbole_benchmark"]["index_maps"] == []
    # UniSRec's .text is keyed by original ids: with index files but no item2index they cannot be matched
    raw = fx_recbole_benchmark(tmp_path / "raw2")["root"]
    (raw / "Instruments.item2index").unlink()
    with pytest.raises(
        DatasetError, match=r"Instruments\.text:2: item 'B01' is not an item of the dataset .*item2index"
    ):
        prepare_dataset("recbole/benchmark", tmp_path / "ds2", root=raw)


def _edit_line(path: Path, lineno: int, new: str | None) -> None:
    """Replace line ``lineno`` (1-based) with ``new``, delete it (``None``) or append it (one past the end)."""
    lines = path.read_text().splitlines()
    if new is None:
        del lines[lineno - 1]
    elif lineno == len(lines) + 1:
        lines.append(new)
    else:
        lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "lineno", "new", "where", "reason"),
    [
        # item indices: B05 0, B02 1, B07 2, B01 3, B04 4, B03 5, B06 6 (order of first appearance)
        # AU4 = user 3 = items 4 0 3 1: its valid row is '3<TAB>4 0<TAB>3'; a prefix in the wrong order
        (
            "valid",
            5,
            "3\t0 4\t3",
            r"valid\.inter:5: user '3'",
            r"this valid row does not continue the user's sequence",
        ),
        # AU1 = user 0 = items 0..6: the test prefix must be the valid prefix plus the valid target (5)
        (
            "test",
            2,
            "0\t3 4 6\t6",
            r"test\.inter:2: user '0'",
            r"does not continue the user's sequence: its item_id_list \['3', '4', '6'\]",
        ),
        # AU1's train row '0<TAB>0 1 2<TAB>3' is missing: the row after it ('1 2 3' -> 4) cannot be placed
        ("train", 3, None, r"train\.inter:2: user '0'", r"prefixes of this file keep the last 3"),
        # AU4's only train row ('4' -> 0) is missing: its first two items would be history only
        (
            "train",
            9,
            None,
            r"valid\.inter:5: user '3'",
            r"earliest row already has 2 items before its target",
        ),
        # AU4's test row '3<TAB>4 0 3<TAB>1' repeated on a new line 6
        (
            "test",
            6,
            "3\t4 0 3\t1",
            r"test\.inter:6: user '3'",
            r"a second test row for this user \(the first is on line 5\)",
        ),
    ],
)
def test_recbole_benchmark_refuses_rows_that_are_not_one_sequence(
    tmp_path: Path, file: str, lineno: int, new: str | None, where: str, reason: str
) -> None:
    raw = fx_recbole_benchmark(tmp_path / "raw")["root"]
    path = raw / f"Instruments.{file}.inter"
    _edit_line(path, lineno, new)
    with pytest.raises(DatasetError, match=where + ".*" + reason + ".*--skip-bad"):
        prepare_dataset("recbole/benchmark", tmp_path / "ds", root=raw)
    assert not (tmp_path / "ds").exists()
    ds = prepare_dataset("recbole/benchmark", tmp_path / "ds", root=raw, skip_bad=True)
    assert ds.meta["conversion_report"]["skipped"] == {
        "users whose rows do not form one sequence (dropped)": 1
    }
    assert ds.counts["users"] == 3


def test_recbole_benchmark_refuses_an_order_it_cannot_tell(tmp_path: Path) -> None:
    # prefixes of one item: 'a' is followed by 'b' once and by 'c' once; which came first is lost
    raw = write_recbole_benchmark(
        tmp_path / "raw", "amb", {"U": ["a", "b", "a", "c", "d", "e"]}, max_prefix=1
    )
    with pytest.raises(
        DatasetError, match=r"amb\.train\.inter:\d: user '0': rows \d and \d have the same item_id_list"
    ):
        prepare_dataset("recbole/benchmark", tmp_path / "ds", **raw)


def test_recbole_atomic_refuses_a_benchmark_file(tmp_path: Path) -> None:
    raw = fx_recbole_benchmark(tmp_path / "raw")["root"]
    with pytest.raises(
        DatasetError,
        match=r"Instruments\.train\.inter:1: the header has a 'item_id_list' field: this is RecBole's benchmark "
        r"layout.*recbole/benchmark",
    ):
        prepare_dataset("recbole", tmp_path / "ds", inter=raw / "Instruments.train.inter")
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------------------------- files


def test_existing_output_is_never_overwritten_without_the_flag(tmp_path: Path) -> None:
    args = fx_ml1m(tmp_path)
    first = prepare_dataset("ml-1m", tmp_path / "ds", **args)
    with pytest.raises(DatasetError, match=r"already exists; pass --overwrite"):
        prepare_dataset("ml-1m", tmp_path / "ds", **args)
    assert CanonicalDataset.load(tmp_path / "ds").fingerprint == first.fingerprint
    with open(args["root"] / "ratings.dat", "a") as f:
        f.write("3::2::1::978300000\n")
    second = prepare_dataset("ml-1m", tmp_path / "ds", overwrite=True, **args)
    assert second.counts["interactions"] == 6
    (tmp_path / "ds" / "items.parquet").unlink()  # a broken dataset is still not overwritten silently
    with pytest.raises(DatasetError, match="already exists"):
        prepare_dataset("ml-1m", tmp_path / "ds", **args)


def test_failed_conversion_leaves_no_partial_folder(tmp_path: Path) -> None:
    args = fx_mmrec(tmp_path / "raw")
    out = tmp_path / "out"
    empty = write_lines(tmp_path / "raw" / "empty.inter", ["userID\titemID\trating\tx_label"])
    with pytest.raises(DatasetError, match="no interactions were read"):
        prepare_dataset("mmrec/inter", out, inter=empty)
    dup_text = write_lines(tmp_path / "raw" / "dup.tsv", ["item_idx\ttitle", "0\ta", "0\tb"])
    with pytest.raises(DatasetError, match=r"dup\.tsv:3: item 0 already described on line 2"):
        prepare_dataset(
            "mmrec/inter", out, inter=args["inter"], item_text=dup_text, features=args["features"]
        )
    assert list(tmp_path.iterdir()) == [tmp_path / "raw"]


def test_stores_staged_before_a_failed_write_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmrec.datamodules.converters as converters

    args = fx_mmrec(tmp_path / "raw")
    staged: list[str] = []

    def failing_write(out: Path, *a: Any, media_dirs: list[str], **kw: Any) -> CanonicalDataset:
        staged.extend(sorted(p.name for p in Path(media_dirs[0]).iterdir()))
        raise DatasetError("disk full (simulated)")

    monkeypatch.setattr(converters, "write_dataset", failing_write)
    with pytest.raises(DatasetError, match="simulated"):
        prepare_dataset("mmrec/inter", tmp_path / "out", **args)
    assert staged == ["vggish", "whisper"]
    assert list(tmp_path.iterdir()) == [tmp_path / "raw"]


def test_gzip_detection_encoding_errors_and_truncation(tmp_path: Path) -> None:
    good = write_lines(tmp_path / "users.txt", ["UA\tI1"], gz=True)  # gzip without .gz: detected by content
    ds = prepare_dataset("sequence/tsv", tmp_path / "a", sequences=good)
    assert ds.item_ids == ["I1"]
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"UA\tI1\nUB\tcaf\xe9\n")
    with pytest.raises(DatasetError, match=r"latin\.tsv:2: not valid utf-8 text"):
        prepare_dataset("sequence/tsv", tmp_path / "b", sequences=latin)
    raw = gzip.compress(("\n".join(f"U{i}\tI{i}" for i in range(2000)) + "\n").encode())
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        DatasetError, match=r"cut\.gz: the gzip stream is truncated or corrupt after line \d+"
    ):
        prepare_dataset("sequence/tsv", tmp_path / "c", sequences=tmp_path / "cut.gz")
    with pytest.raises(DatasetError, match=r"sequence file .*missing\.tsv does not exist"):
        prepare_dataset("sequence/tsv", tmp_path / "d", sequences=tmp_path / "missing.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "cut.gz", "latin.tsv", "users.txt"]


def test_convert_reads_without_writing(tmp_path: Path) -> None:
    conv, ctx = convert("amazon/2014", **fx_amazon_2014(tmp_path))
    assert isinstance(conv.items, pd.DataFrame) and len(conv.interactions) == 3
    assert ctx.report.total_skipped == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "meta_Musical_Instruments.json.gz",
        "reviews_Musical_Instruments_5.json.gz",
    ]


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_beauty_s3rec_with_datamaps(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "amazon2014-beauty"
    ds = prepare_dataset(
        "sequence/s3rec",
        tmp_path / "beauty",
        sequences=root / "s3rec" / "Beauty.txt",
        datamaps=root / "p5" / "beauty_datamaps.json",
        item_table=root / "derived" / "Beauty_items.tsv",
    )
    assert ds.counts == {"users": 22363, "items": 12101, "interactions": 198502}
    assert_canonical(ds)
    assert ds.meta["conversion_report"]["skipped"] == {}
    assert ds.meta["repeated_user_item_pairs"] == 0
    assert ds.items["p5_item_id"].tolist() == [str(i) for i in range(1, 12102)]  # P5 id order kept
    assert int(ds.items["title"].isna().sum()) == 7  # seven items have an empty title in the source
    assert not ds.items["title"].dropna().str.contains("&egrave;|&amp;").any()
    # raw ids agree with the independent raw-id copy of the same sequences
    with open(root / "asin" / "Beauty_user_sequence.txt") as f:
        for _ in range(3):
            user, *items = f.readline().split()
            assert user_items(ds, user) == items


@pytest.mark.realdata
def test_real_amazon2014_musical_instruments(shared_data: Path, tmp_path: Path) -> None:
    reviews = shared_data / "amazon2014-musical-instruments" / "reviews_Musical_Instruments_5.json.gz"
    ds = prepare_dataset("amazon/2014", tmp_path / "mi", reviews=reviews)
    assert ds.counts == {"users": 1429, "items": 900, "interactions": 10261}
    assert_canonical(ds)
    inter = ds.interactions
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert int(inter["review"].isna().sum()) == 7  # seven reviews are empty: null, not ""
    assert inter["summary"].notna().all()
    first = inter.loc[(inter["user_id"] == "A2IBPI20UZIR0U") & (inter["item_id"] == "1384719342")]
    assert first["timestamp"].tolist() == [1393545600] and first["summary"].tolist() == ["good"]


@pytest.mark.realdata
def test_real_amazon2018_instruments_sequence_tsv(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "amazon2018-instruments"
    ds = prepare_dataset(
        "sequence/tsv",
        tmp_path / "inst",
        sequences=root / "am_Musical_Instruments_users_10K.tsv",
        titles=root / "Musical_Instruments_items.tsv",
    )
    # items = the whole title catalogue (33,921); 20,618 of them are interacted with
    assert ds.counts == {"users": 10000, "items": 33921, "interactions": 83828}
    assert_canonical(ds)
    assert ds.interactions["item_id"].nunique() == 20618
    assert ds.meta["repeated_user_item_pairs"] == 3377  # re-purchases: kept, at distinct positions
    titles = ds.items["title"]
    assert titles.notna().all()
    assert not titles.str.contains("&quot;|&amp;").any() and (titles == titles.str.strip()).all()


@pytest.mark.realdata
def test_real_movielens_100k(shared_data: Path, tmp_path: Path) -> None:
    ds = prepare_dataset("movielens/100k", tmp_path / "ml", root=shared_data / "ml-100k")
    assert ds.counts == {"users": 943, "items": 1682, "interactions": 100000}
    assert_canonical(ds)
    assert not ds.interactions.duplicated(["user_id", "item_id"]).any()
    items = ds.items.set_index("item_id")
    assert list(items.loc["1", "categories"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc["543", "title"] == "Misérables, Les (1995)"
    assert items["title"].isna().sum() == 1  # item 267, "unknown" in the source


@pytest.mark.realdata
def test_real_movielens_100k_through_recbole_benchmark_files(shared_data: Path, tmp_path: Path) -> None:
    """No RecBole benchmark dataset is in ../shared/data: write MovieLens-100k's leave-one-out split in that
    layout (prefixes cut to 50, as UniSRec does; temporary files only), convert it back and check the given
    split is the original leave-one-out split, user by user, and RecBole's rows exactly."""
    ml = prepare_dataset("movielens/100k", tmp_path / "ml", root=shared_data / "ml-100k")
    loo = SequentialDataModule(str(ml.path), split="leave-one-out")
    loo.setup()
    sequences = {u: [loo.item_ids[i - 1] for i in seq] for u, seq in zip(loo.user_ids, loo.sequences)}
    raw = write_recbole_benchmark(tmp_path / "raw", "ml-100k", sequences, max_prefix=50)["root"]

    ds = prepare_dataset("recbole/benchmark", tmp_path / "rb", root=raw)
    assert ds.counts == {"users": 943, "items": 1682, "interactions": 100000}
    assert ds.meta["recbole_benchmark"]["rows"] == {"train": 100000 - 3 * 943, "valid": 943, "test": 943}
    assert ds.meta["recbole_benchmark"]["longest_prefix"] == {"train": 50, "valid": 50, "test": 50}
    given = SequentialDataModule(str(ds.path), split="given")
    given.setup()
    assert given.user_ids == loo.user_ids

    def named(dm: Any, seqs: list[list[int]]) -> list[list[str]]:
        return [[dm.item_ids[i - 1] for i in s] for s in seqs]

    a, b = loo.splits, given.splits
    assert named(given, b.train) == named(loo, a.train)
    for split in ("valid", "test"):
        ea, eb = getattr(a, split), getattr(b, split)
        assert eb.users == ea.users
        assert named(given, eb.histories) == named(loo, ea.histories)
        assert named(given, eb.targets) == named(loo, ea.targets)
    assert rows_of_given_split(given, max_prefix=50) == read_benchmark_rows(raw, "ml-100k")


@pytest.mark.realdata
def test_real_lastfm_mmrec_with_stores(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "lastfm2k"
    ds = prepare_dataset(
        "mmrec/inter",
        tmp_path / "lfm",
        inter=root / "processed" / "lfm2k.inter",
        item_text=root / "derived" / "item_index_map.tsv",
        features=root / "features_npy",
    )
    assert ds.counts == {"users": 1858, "items": 1425, "interactions": 56345}
    assert_canonical(ds)
    assert ds.interactions["split"].value_counts().sort_index().tolist() == [44327, 4799, 7219]
    assert ds.items["title"].notna().all()
    dims = {}
    for name in ("all-MiniLM-L6-v2", "vggish", "whisper"):
        store = EmbeddingStore.open(ds.path / "stores" / name)
        dims[name] = store.dim
        assert store.item_ids == ds.item_ids
        npy = np.load(root / "features_npy" / f"{name}.npy", mmap_mode="r")
        vecs, mask = store.aligned(["1424", "7"])
        assert mask.all()
        np.testing.assert_allclose(vecs.numpy(), np.asarray(npy[[1424, 7]], dtype=np.float32), rtol=1e-6)
    assert dims == {"all-MiniLM-L6-v2": 384, "vggish": 128, "whisper": 512}


# --------------------------------------------------------------------------------------------- H&M


def test_hm_sample_ids_images_and_merged_purchases(tmp_path: Path) -> None:
    ds = prepare_dataset("hm/sample", tmp_path / "hm", **fx_hm(tmp_path / "raw"))
    items = items_of(ds)
    assert list(items) == ["0108775015", "0108775044", "0110065001"]
    assert items["0108775015"]["image"] == str((tmp_path / "raw" / "images" / "0108775015.jpg").resolve())
    assert pd.isna(items["0110065001"]["image"])  # no photo for it
    assert pd.isna(items["0108775044"]["description"])  # empty text is missing, not ""
    assert ds.counts == {"users": 2, "items": 3, "interactions": 3}
    inter = ds.interactions
    bra = inter[inter["item_id"] == "0110065001"]
    assert bra["quantity"].tolist() == [2]  # two purchases on one day merged
    assert ds.meta["hm"] == {"images": 2, "merged_duplicate_purchases": 1}
    assert int(inter.loc[inter["item_id"] == "0108775015", "timestamp"].iloc[0]) == 1560384000  # 2019-06-13


def test_hm_sample_missing_column_is_named(tmp_path: Path) -> None:
    raw = fx_hm(tmp_path / "raw")["root"]
    pd.read_parquet(raw / "articles_sample.parquet").drop(columns="prod_name").to_parquet(
        raw / "articles_sample.parquet"
    )
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['prod_name'\]"):
        prepare_dataset("hm/sample", tmp_path / "hm", root=raw)
