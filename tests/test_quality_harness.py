"""The quality harness (`mmrec bench quality`): recipes, flags, files and resumption.

The sanity gates that run every trainable model's demo recipe through it are in tests/test_sanity_gates.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mmrec.bench.quality import (
    DataConfig,
    ModelEntry,
    QualityConfig,
    QualityConfigError,
    load_quality_config,
    run_quality,
)
from mmrec.bench.quality.report import final_json, summarise
from mmrec.cli import main
from mmrec.datamodules.controls import ShuffledTargets
from mmrec.datamodules.sequential import SequentialDataModule

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "assets" / "demo")


# --------------------------------------------------------------------------------------------- recipes
def test_recipes_load_and_mostpop_is_always_beside(tmp_path: Path) -> None:
    for name in ("demo", "beauty", "ml100k", "instruments2018", "lastfm"):
        cfg = load_quality_config(REPO / "configs" / "bench" / f"{name}.yaml")
        rows = cfg.with_reference()
        assert rows[0].model == "baseline/mostpop" and "protocol" in cfg.data.args, name
    assert load_quality_config(REPO / "configs/bench/lastfm.yaml").data.args["protocol"] == "mmrec"
    cfg = load_quality_config(
        REPO / "configs/bench/demo.yaml", ["seeds=[4]", "models.1.max_epochs=2", "data.args.protocol=masked"]
    )
    assert cfg.seeds == [4] and cfg.models[1].max_epochs == 2 and cfg.data.args["protocol"] == "masked"
    # a recipe without MostPop gets it as the first row
    bare = QualityConfig(
        name="x", out=str(tmp_path), data=_data(), models=[ModelEntry(model="sequential/sasrec")]
    )
    assert [m.display for m in bare.with_reference()] == ["MostPop", "sequential/sasrec"]


def _data(**kw: Any) -> DataConfig:
    return DataConfig(args={"dataset": DEMO, "max_len": 20, **kw})


def test_recipe_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"name": "x", "out": "o", "data": {"args": {"dataset": DEMO}}, "modles": []})
    )
    with pytest.raises(QualityConfigError, match=r"unknown top-level key\(s\) \['modles'\]"):
        load_quality_config(bad)
    bad.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "out": "o",
                "data": {"args": {"dataset": DEMO}},
                "models": [{"model": "a", "lr": 1}],
            }
        )
    )
    with pytest.raises(QualityConfigError, match=r"unknown key\(s\) \['lr'\] in models\[0\]"):
        load_quality_config(bad)
    with pytest.raises(QualityConfigError, match="labels must be unique"):
        QualityConfig(name="x", out="o", data=_data(), models=[ModelEntry(model="a"), ModelEntry(model="a")])
    with pytest.raises(QualityConfigError, match="set per run"):
        QualityConfig(name="x", out="o", data=_data(seed=3), models=[ModelEntry(model="a")])
    with pytest.raises(QualityConfigError, match="does not exist"):
        load_quality_config(tmp_path / "missing.yaml")


def test_jsonargparse_reads_the_recipe_dataclass() -> None:
    from jsonargparse import ArgumentParser

    raw = yaml.safe_load((REPO / "configs/bench/demo.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--quality", type=QualityConfig)
    built = parser.instantiate(parser.parse_object({"quality": raw})).quality
    ours = load_quality_config(REPO / "configs/bench/demo.yaml")
    built.path = ours.path
    assert built == ours and isinstance(built.models[1], ModelEntry)


# --------------------------------------------------------------------------------------------- control
def test_shuffled_targets_keep_frequencies_and_padding_but_break_the_link() -> None:
    dm = SequentialDataModule(DEMO, max_len=20, seed=5, shuffle_train_targets=True)
    plain = SequentialDataModule(DEMO, max_len=20, seed=5)
    shuffled, ds = dm.train_dataloader().dataset, plain.train_dataloader().dataset
    assert isinstance(shuffled, ShuffledTargets) and len(shuffled) == len(ds)
    a = [shuffled[i]["target_ids"] for i in range(len(ds))]
    b = [ds[i]["target_ids"] for i in range(len(ds))]
    assert sorted(t for row in a for t in row) == sorted(t for row in b for t in row)  # item frequencies kept
    assert all([t == 0 for t in x] == [t == 0 for t in y] for x, y in zip(a, b))  # padding in place
    assert all(shuffled[i]["input_ids"] == ds[i]["input_ids"] for i in range(len(ds)))  # inputs untouched
    same = sum(x == y for rx, ry in zip(a, b) for x, y in zip(rx, ry) if y)
    total = sum(1 for row in b for y in row if y)
    assert same / total < 0.05  # the next item no longer follows the history
    again = (
        SequentialDataModule(DEMO, max_len=20, seed=5, shuffle_train_targets=True).train_dataloader().dataset
    )
    assert [again[i]["target_ids"] for i in range(len(ds))] == a  # seeded


# --------------------------------------------------------------------------------------------- report
def _payload(label: str, model: str, ndcg: np.ndarray, *, val: float, share: float, seed: int = 0) -> dict:
    test = {"ndcg@10": float(ndcg.mean()), "hr@10": float((ndcg > 0).mean()), "same_top10_share": share}
    return {
        "label": label,
        "model": model,
        "seed": seed,
        "requires_training": model != "baseline/mostpop",
        "trainable": 10,
        "epochs": 3,
        "best_epoch": 2,
        "seconds_per_epoch": 1.0,
        "memory": {"total": 5.0},
        "val": {"ndcg@10": val},
        "test": test,
        "per_user": {"user_ids": [f"u{i}" for i in range(len(ndcg))], "ndcg@10": ndcg.tolist()},
    }


def test_summary_flags_broken_models_and_picks_the_best_baseline_on_validation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.3, size=200)
    records = [
        _payload("MostPop", "baseline/mostpop", base, val=0.10, share=1.0),
        # higher on test but lower on validation than "Strong baseline": must not be chosen as the best baseline
        _payload("Lucky baseline", "x/lucky", base + 0.05, val=0.11, share=0.02),
        _payload("Strong baseline", "x/strong", base + 0.04, val=0.14, share=0.02),
        _payload("Working", "x/working", base + 0.10, val=0.20, share=0.01),
        _payload("Working", "x/working", base + 0.12, val=0.21, share=0.03, seed=1),
        _payload("Collapsed", "x/collapsed", base + 0.10, val=0.20, share=0.85),
        _payload("Popularity copy", "x/copy", base + rng.normal(0, 0.01, size=200), val=0.10, share=0.05),
    ]
    cfg = QualityConfig(
        name="t",
        out=str(tmp_path),
        data=_data(),
        models=[
            ModelEntry(model="baseline/mostpop", label="MostPop", baseline=True),
            ModelEntry(model="x/lucky", label="Lucky baseline", baseline=True),
            ModelEntry(model="x/strong", label="Strong baseline", baseline=True),
            ModelEntry(model="x/working", label="Working"),
            ModelEntry(model="x/collapsed", label="Collapsed"),
            ModelEntry(model="x/copy", label="Popularity copy"),
        ],
    )
    s = summarise(records, cfg, {"recipe": "t", "dataset": "d", "protocol": {"name": "recbole"}})
    rows = {r["label"]: r for r in s["rows"]}
    assert s["reference"] == "MostPop" and s["best_baseline"] == "Strong baseline"
    assert rows["MostPop"]["warning"] == "reference" and not rows["MostPop"]["flagged"]
    assert not rows["Working"]["flagged"] and rows["Working"]["seeds"] == 2
    assert rows["Working"]["ndcg@10_mean"] == pytest.approx(float(base.mean()) + 0.11)
    assert rows["Working"]["p_vs_best_baseline_holm"] < 1e-6
    assert rows["Collapsed"]["flagged"] and "COLLAPSED: 85%" in rows["Collapsed"]["warning"]
    assert rows["Popularity copy"]["flagged"] and "NOT ABOVE MostPop" in rows["Popularity copy"]["warning"]
    assert math.isnan(rows["Strong baseline"]["p_vs_best_baseline"])
    # Holm: the adjusted p-value is never below the raw one
    for r in s["rows"]:
        if not math.isnan(r["p_vs_mostpop"]):
            assert r["p_vs_mostpop_holm"] >= r["p_vs_mostpop"]
    line = final_json(s)
    assert line["results"]["Working"]["flagged"] is False and line["results"]["Collapsed"]["flagged"] is True
    assert "| Collapsed |" in s["markdown"] and "### Tail items" in s["markdown"]


# --------------------------------------------------------------------------------------------- end to end
def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_harness_on_a_tiny_demo_recipe_writes_everything_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "out": str(tmp_path / "out"),
                "seeds": [0],
                "data": {"args": {"dataset": DEMO, "max_len": 20, "batch_size": 256, "protocol": "recbole"}},
                "trainer": {"max_epochs": 1, "patience": 1, "threads": 1},
                "models": [
                    {"model": "sequential/sasrec", "label": "SASRec", "args": {"dim": 16, "num_layers": 1}}
                ],
            }
        )
    )
    assert main(["bench", "quality", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    line = _last_json(out)
    assert line["dataset"] == "demo-clothing" and line["protocol"]["name"] == "recbole"
    assert set(line["results"]) == {"MostPop", "SASRec"}  # MostPop added beside the model
    assert line["results"]["MostPop"]["same_top10_share"] == 1.0
    assert {"ndcg@10", "hr@10", "mrr", "coverage@10", "tail/ndcg@10", "cold/hr@10"} <= set(
        line["results"]["SASRec"]
    )
    folder = tmp_path / "out"
    md = (folder / "results.md").read_text()
    assert "| MostPop (baseline) |" in md and "| SASRec |" in md and "protocol: **recbole" in md
    rows = (folder / "results.csv").read_text().splitlines()
    assert rows[0].startswith("label,model,") and len(rows) == 3
    assert (folder / "results.png").stat().st_size > 10_000
    runs = sorted(p.name for p in (folder / "runs").glob("*.json"))
    assert runs == ["MostPop__seed0.json", "SASRec__seed0.json"]
    payload = json.loads((folder / "runs" / "SASRec__seed0.json").read_text())
    assert len(payload["per_user"]["ndcg@10"]) == 1200 and payload["protocol"]["name"] == "recbole"
    # a second call reuses the finished runs and reports the same figures
    again = run_quality(load_quality_config(recipe))
    assert "reusing SASRec__seed0.json" in capsys.readouterr().out
    assert again["final"] == line


def test_masked_demo_recipe_has_the_demo_models_with_history_masked() -> None:
    # CF models (BPR-MF, LightGCN, VBPR, FREEDOM) rank the user's own training items first: under the
    # sequential protocol (history not masked) they sat at MostPop level on the demo, under `masked` (how
    # RecBole scores general recommenders) they double it. The masked recipe must keep every row of the demo
    # recipe, with the same arguments, so that the two tables stay comparable row by row.
    demo = load_quality_config(REPO / "configs/bench/demo.yaml")
    masked = load_quality_config(REPO / "configs/bench/demo_masked.yaml")
    assert demo.data.args["protocol"] == "recbole" and masked.data.args["protocol"] == "masked"
    assert masked.out != demo.out
    assert [(m.display, m.model, m.args, m.data) for m in masked.models] == [
        (m.display, m.model, m.args, m.data) for m in demo.models
    ]
    assert {"cf/bpr", "cf/lightgcn", "multimodal/vbpr", "multimodal/freedom"} <= {m.model for m in masked.models}
    assert "demo_masked.yaml" in (REPO / "configs/bench/demo.yaml").read_text()  # the pointer for CF readers
