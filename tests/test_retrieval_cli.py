"""Serving a trained checkpoint: the Recommender API, `mmrec index --ckpt` and `mmrec recommend`.

One tiny multimodal model is trained once per session through the real CLI (`mmrec fit`) and shared by
these tests and tests/test_plugin_examples.py (see :func:`train_tiny_checkpoint`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import toy_dataset, toy_store

from mmrec.cli import main
from mmrec.retrieval.index import ItemIndex, build_index
from mmrec.retrieval.recommender import (
    EmptyHistoryError,
    IndexMismatchError,
    Recommender,
    RecommenderError,
    UnknownItemsError,
    UnknownUserError,
)

NUM_ITEMS, NUM_USERS = 60, 40


def train_tiny_checkpoint(root: Path) -> Path:
    """Train (once: reused when ``root`` already holds it) a tiny MultimodalSequential with one feature store
    through ``mmrec fit``; returns the best checkpoint."""
    done = root / "best.txt"
    if done.is_file():
        return Path(done.read_text().strip())
    root.mkdir(parents=True, exist_ok=True)
    ds = toy_dataset(root, num_items=NUM_ITEMS, num_users=NUM_USERS, min_len=3, max_len=9)
    store = toy_store(root, ds.item_ids, dim=6)
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(root / "runs"), "name": "toy"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True},
                }
            ],
        },
        "model": {
            "class_path": "mmrec.models.MultimodalSequential",
            "init_args": {"dim": 16, "num_layers": 1},
        },
        "data": {
            "class_path": "mmrec.datamodules.sequential.SequentialDataModule",
            "init_args": {
                "dataset": str(ds.path),
                "max_len": 6,
                "batch_size": 16,
                "stores": {"img": str(store.path)},
            },
        },
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(root / "cfg.yaml")]) == 0
    ckpts = sorted((root / "runs" / "toy" / "version_0" / "checkpoints").glob("epoch=*.ckpt"))
    assert ckpts
    done.write_text(str(ckpts[-1]))
    return ckpts[-1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.getbasetemp() / "retrieval-model")


@pytest.fixture(scope="module")
def rec(ckpt: Path) -> Recommender:
    return Recommender.from_checkpoint(ckpt)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict], list[dict], str]:
    """Run `mmrec ...`; returns (exit code, stdout JSON lines, stderr JSON lines, stderr text)."""
    code = main(args)
    cap = capsys.readouterr()
    out = [json.loads(x) for x in cap.out.splitlines() if x.startswith("{")]
    err = [json.loads(x) for x in cap.err.splitlines() if x.startswith("{")]
    return code, out, err, cap.err


def as_lines(recs: list[list[tuple[str, float]]], user_ids: list) -> list[dict]:
    return [
        {"user_id": u, "items": [i for i, _ in r], "scores": [s for _, s in r]}
        for u, r in zip(user_ids, recs)
    ]


def assert_same_recs(a: list[tuple[str, float]], b: list[tuple[str, float]], tol: float = 1e-5) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=tol, atol=tol)


def assert_same_lists(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["user_id"] == y["user_id"] and x["items"] == y["items"]
        np.testing.assert_allclose(x["scores"], y["scores"], rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------- Python API
def test_api_matches_lightning_predict(ckpt: Path, rec: Recommender, tmp_path: Path) -> None:
    """Recommender.recommend_many == `mmrec predict` (the training code's own ranking) for every user."""
    preds = tmp_path / "preds.jsonl"
    cfg = ckpt.parents[4] / "cfg.yaml"
    args = [
        "predict",
        "--config",
        str(cfg),
        "--ckpt_path",
        str(ckpt),
        "--trainer.callbacks+=mmrec.callbacks.JsonlPredictionWriter",
        f"--trainer.callbacks.output={preds}",
    ]
    assert main(args) == 0
    lightning = [json.loads(x) for x in preds.read_text().splitlines()]
    ours = as_lines(rec.recommend_many(users=rec.user_ids, k=10), rec.user_ids)
    assert_same_lists(ours, lightning, tol=1e-4)  # predict rounds scores to 6 decimals


def test_api_basics(rec: Recommender) -> None:
    table = rec.item_vectors()
    assert table.shape == (NUM_ITEMS, 16) and rec.num_items == NUM_ITEMS
    assert torch.equal(table, rec.model.item_vectors()[1:].detach())
    top = rec.recommend_user("u000", k=7)
    assert len(top) == 7 and not {i for i, _ in top} & set(rec.user_history("u000"))
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    # a new user with the same history gets the same list
    assert_same_recs(rec.recommend_history(rec.user_history("u000"), k=7), top)
    # k larger than what is left: everything not in the history, no padding
    assert len(rec.recommend_user("u000", k=1000)) == NUM_ITEMS - len(set(rec.user_history("u000")))
    vecs = rec.user_vectors(["u000", "u001"])
    assert vecs.shape == (2, 16)


def test_request_errors(rec: Recommender) -> None:
    with pytest.raises(UnknownUserError, match=r"unknown user id 'u0001'\. Did you mean 'u000'") as e:
        rec.recommend_user("u0001")
    assert "u000" in e.value.suggestions
    with pytest.raises(EmptyHistoryError, match="history is empty"):
        rec.recommend_history([])
    with pytest.raises(UnknownItemsError, match=r"'nope', 'i0005'") as e2:
        rec.recommend_history(["i001", "nope", "i0005"])
    assert e2.value.unknown == ["nope", "i0005"]
    with pytest.raises(RecommenderError, match="k must be a positive integer"):
        rec.recommend_user("u000", k=0)


# --------------------------------------------------------------------------------------------- index + manifest
def test_index_from_checkpoint_records_its_source(
    ckpt: Path, rec: Recommender, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"
    code, *_ = run_cli(["index", "--ckpt", str(ckpt), "--out", str(out)], capsys)
    assert code == 0
    m = ItemIndex.read_manifest(out)
    assert m["kind"] == "flat" and m["count"] == NUM_ITEMS and m["dim"] == 16
    src = m["source"]
    assert src["type"] == "checkpoint" and src["path"] == str(ckpt.resolve())
    assert src["sha256"] == rec.source["sha256"] and len(src["sha256"]) == 64
    assert src["model_class"].endswith("MultimodalSequential") and src["catalog_fingerprint"]
    assert src["model_fingerprint"] == rec.source["model_fingerprint"]
    np.testing.assert_allclose(np.load(out / "vectors.npy"), rec.item_vectors().numpy())


@pytest.mark.parametrize(
    ("kind", "params"),
    [("flat", []), ("ivf", ["--params.nlist=4", "--params.nprobe=4"]), ("hnsw", ["--params.M=4"])],
)
def test_recommend_cli_with_index_equals_exact_and_api(
    ckpt: Path,
    rec: Recommender,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    params: list[str],
) -> None:
    out = tmp_path / kind
    assert run_cli(["index", "--ckpt", str(ckpt), "--out", str(out), "--kind", kind, *params], capsys)[0] == 0
    users = ["u000", "u005", "u017"]
    args = ["recommend", "--ckpt", str(ckpt), "--k", "10", "--user", ",".join(users)]
    code, exact, _, _ = run_cli(args, capsys)
    code2, indexed, _, err = run_cli([*args, "--index", str(out)], capsys)
    assert code == code2 == 0 and f"with index {out.resolve()}" in err
    # a tiny catalogue searched exhaustively (all 4 cells / a graph wider than the catalogue): re-ranked
    # into exactly the exact answer, scores included
    assert_same_lists(indexed, exact)
    assert_same_lists(exact, as_lines(rec.recommend_many(users=users, k=10), users))


def test_index_mismatch_is_refused_naming_both(
    ckpt: Path, rec: Recommender, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = rec.item_vectors().numpy()
    # 1. other weights: a doctored source with another sha256 and fingerprint
    other = {**rec.source, "sha256": "0" * 64, "model_fingerprint": "f" * 64, "path": "/elsewhere/other.ckpt"}
    build_index(items, rec.item_ids, source=other).save(tmp_path / "other")
    with pytest.raises(
        IndexMismatchError, match=r"/elsewhere/other\.ckpt.*but this model is checkpoint .*different weights"
    ):
        Recommender.from_checkpoint(ckpt, index_dir=tmp_path / "other")
    code, _, _, err = run_cli(
        ["recommend", "--ckpt", str(ckpt), "--index", str(tmp_path / "other"), "--user", "u000"], capsys
    )
    assert code == 1 and "other.ckpt" in err and str(ckpt.resolve()) in err and "Traceback" not in err
    # 2. an index over a store (another space)
    build_index(
        np.ones((NUM_ITEMS, 6), np.float32),
        rec.item_ids,
        source={"type": "store", "path": "/s", "fingerprint": "ab", "dim": 6},
    ).save(tmp_path / "store")
    with pytest.raises(IndexMismatchError, match="embedding store /s"):
        Recommender.from_checkpoint(ckpt, index_dir=tmp_path / "store")
    # 3. same weights in another file (a copy re-saved elsewhere): accepted through the model fingerprint
    copy = tmp_path / "copy.ckpt"
    sd = torch.load(ckpt, weights_only=True)
    sd["epoch"] = 99  # the file differs, the weights do not
    torch.save(sd, copy)
    build_index(items, rec.item_ids, source=Recommender.from_checkpoint(copy).source).save(tmp_path / "copy")
    assert_same_recs(
        Recommender.from_checkpoint(ckpt, index_dir=tmp_path / "copy").recommend_user("u000"),
        rec.recommend_user("u000"),
    )
    # 4. same model, other dimension (cannot happen by accident, but the check names it)
    dim_src = {**rec.source, "dim": 8}
    build_index(np.ones((NUM_ITEMS, 8), np.float32), rec.item_ids, source=dim_src).save(tmp_path / "dim")
    with pytest.raises(
        IndexMismatchError, match=f"holds {NUM_ITEMS} x 8 vectors, the model {NUM_ITEMS} x 16"
    ):
        Recommender.from_checkpoint(ckpt, index_dir=tmp_path / "dim")


# --------------------------------------------------------------------------------------------- recommend CLI
def test_recommend_known_and_new_user(
    ckpt: Path, rec: Recommender, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, _ = run_cli(["recommend", "--ckpt", str(ckpt), "--user", "u003", "--k", "5"], capsys)
    assert code == 0 and not err
    assert_same_lists(out, as_lines([rec.recommend_user("u003", k=5)], ["u003"]))
    code, out, _, _ = run_cli(["recommend", "--ckpt", str(ckpt), "--items", "i001,i002,i003"], capsys)
    assert code == 0 and out[0]["user_id"] is None and len(out[0]["items"]) == 10
    assert not {"i001", "i002", "i003"} & set(out[0]["items"])
    assert_same_lists(out, as_lines([rec.recommend_history(["i001", "i002", "i003"])], [None]))


def test_recommend_unknown_user_suggests_and_exits_1(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err, text = run_cli(
        ["recommend", "--ckpt", str(ckpt), "--user", "u00l,u001"], capsys
    )
    assert code == 1 and [o["user_id"] for o in out] == ["u001"]
    assert (
        err == [{"line": 1, "error": err[0]["error"], "user_id": "u00l"}]
        and "Did you mean 'u00" in err[0]["error"]
    )
    assert "'u001'" in err[0]["error"]
    assert "served 1 of 2 requests (1 failed)" in text


def test_users_file_with_bad_lines(
    ckpt: Path, rec: Recommender, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        "u000",  # 1 known user
        "",  # 2 blank: skipped, not an error
        '{"items": ["i010", "i011"]}',  # 3 new user
        "ghost",  # 4 unknown user
        '{"user_id": "u002"}',  # 5 known user, JSON form
        "{not json",  # 6 invalid JSON
        '{"items": []}',  # 7 empty history
        '{"items": ["i001", "x"], "user_id": "n1"}',  # 8 unknown item
        '{"what": 1}',  # 9 unknown key
        '{"items": ["i012"], "user_id": "n2"}',  # 10 new user with a label
    ]
    users = tmp_path / "users.txt"
    users.write_text("\n".join(lines) + "\n")
    out_file = tmp_path / "recs" / "out.jsonl"
    code, stdout, err, text = run_cli(
        [
            "recommend",
            "--ckpt",
            str(ckpt),
            "--users_file",
            str(users),
            "--out",
            str(out_file),
            "--batch_size",
            "2",
        ],
        capsys,
    )
    assert code == 1 and not stdout
    assert [e["line"] for e in err] == [4, 6, 7, 8, 9]
    assert "unknown user id 'ghost'" in err[0]["error"] and "invalid JSON" in err[1]["error"]
    assert "empty" in err[2]["error"] and "'x'" in err[3]["error"] and "unknown key" in err[4]["error"]
    served = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [s["user_id"] for s in served] == ["u000", None, "u002", "n2"]
    expected = as_lines(rec.recommend_many(users=["u000"]), ["u000"]) + as_lines(
        rec.recommend_many(histories=[["i010", "i011"]]), [None]
    )
    expected += as_lines(rec.recommend_many(users=["u002"]), ["u002"]) + as_lines(
        rec.recommend_many(histories=[["i012"]]), ["n2"]
    )
    assert_same_lists(served, expected)
    assert "served 4 of 9 requests (5 failed)" in text
    assert not [p for p in out_file.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_recommend_usage_errors_exit_2(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", "--ckpt", str(ckpt)]) == 2  # no request
    assert main(["recommend", "--ckpt", str(ckpt), "--user", "u000", "--items", "i001"]) == 2
    assert main(["recommend", "--ckpt", str(ckpt), "--user", "u000", "--k", "0"]) == 2
    assert main(["recommend", "--ckpt", str(ckpt), "--user", "u000", "--kk", "3"]) == 2
    assert "Did you mean '--k'" in capsys.readouterr().err
    # missing files: the command cannot do its job (exit 1), one line each
    assert main(["recommend", "--ckpt", str(tmp_path / "missing.ckpt"), "--user", "u000"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["recommend", "--ckpt", str(ckpt), "--users_file", str(tmp_path / "none.txt")]) == 1
    assert main(["recommend", "--help"]) == 0


def test_a_plain_pickle_is_not_taken_for_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    fake = tmp_path / "model.pkl"
    fake.write_bytes(pickle.dumps({"state_dict": {}}))
    assert main(["recommend", "--ckpt", str(fake), "--user", "u000"]) == 1
    err = capsys.readouterr().err
    assert "is not a Lightning checkpoint (a plain pickle)" in err and len(err.splitlines()) == 1
    assert main(["index", "--ckpt", str(fake), "--out", str(tmp_path / "idx")]) == 1
    assert "not a Lightning checkpoint" in capsys.readouterr().err


def test_a_huge_unknown_id_is_not_echoed_in_full(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = "u" * 100_000
    code, _, err, text = run_cli(["recommend", "--ckpt", str(ckpt), "--user", huge], capsys)
    assert code == 1 and len(text) < 2_000
    assert "characters)…" in err[0]["error"] and "(100000 characters)" in err[0]["user_id"]


def test_moved_dataset_is_explained(ckpt: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.ckpt"
    sd = torch.load(ckpt, weights_only=True)
    sd["datamodule_hyper_parameters"]["dataset"] = str(tmp_path / "gone")
    torch.save(sd, moved)
    with pytest.raises(
        RecommenderError, match=r"data_overrides=\{'dataset': NEW_PATH\} \(CLI: --dataset NEW_PATH\)"
    ):
        Recommender.from_checkpoint(moved)
    real = Path(torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]["dataset"])
    shutil.copytree(real, tmp_path / "here")
    assert (
        Recommender.from_checkpoint(moved, data_overrides={"dataset": str(tmp_path / "here")}).num_items
        == NUM_ITEMS
    )
