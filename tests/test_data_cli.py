"""``mmrec data`` command group, exercised through ``mmrec.cli.main(["data", ...])`` as the console script."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.cli import main as mmrec_main
from mmrec.cli.data import build_parser
from mmrec.cli.dialect import parse
from mmrec.data.canonical import CanonicalDataset, write_dataset
from mmrec.datamodules.converters import CONVERTERS


def main(args: list[str]) -> int:
    return mmrec_main(["data", *args])


def write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    """A tiny MovieLens 1M release folder (``::``-separated, latin-1)."""
    root = tmp_path / "ml-1m"
    write(
        root / "movies.dat",
        [
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "29::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
        ],
        encoding="latin-1",
    )
    write(root / "ratings.dat", ["1::1::5::978824268", "1::29::3::978302109", "2::1::4::978300760"])
    return root


@pytest.fixture
def mmrec_raw(tmp_path: Path) -> dict[str, Path]:
    inter = write(
        tmp_path / "raw" / "toy.inter",
        ["userID\titemID\trating\tx_label", "0\t0\t1\t0", "0\t1\t1\t2", "1\t1\t1\t0", "1\t0\t1\t1"],
    )
    feats = tmp_path / "raw" / "features_npy"
    feats.mkdir()
    np.save(feats / "minilm.npy", np.eye(2, 4, dtype=np.float32))
    return {"inter": inter, "features": feats}


def test_help_lists_every_format_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "prepare" in capsys.readouterr().out
    assert main(["prepare", "--help"]) == 0
    out = capsys.readouterr().out
    for key in CONVERTERS:
        assert key in out
        assert CONVERTERS.meta(key)["description"].split()[0] in out
    assert "amazon2014" in out and "s3rec" in out and "movielens" in out


def test_format_help_is_generated_from_the_converter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "amazon/2014", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "reviews",
        "--meta",
        "--items {all,interacted}",
        "--out",
        "--overwrite",
        "--skip_bad",
        "--name",
    ):
        assert flag in out
    assert "literal" in out and "``" not in out


def test_parser_maps_aliases_and_options() -> None:
    from mmrec.cli.data import _normalise_format

    argv = _normalise_format(["prepare", "s3rec", "B.txt", "--item_table", "i.tsv", "--out", "o"])
    ns = parse(build_parser(), argv).prepare
    assert ns.format == "sequence/s3rec"
    args = ns["sequence/s3rec"]
    assert (args.sequences, args.item_table, args.datamaps, args["items"]) == ("B.txt", "i.tsv", None, "all")
    argv = _normalise_format(["prepare", "mmrec", "x.inter", "--categories_sep", "|", "--out", "o"])
    args = parse(build_parser(), argv).prepare["mmrec/inter"]
    assert args.categories_sep == "|" and args.user_field == "userID"


def test_prepare_options_round_trip_through_print_config(
    ml1m: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ml"
    assert main(["prepare", "ml-1m", str(ml1m), "--out", str(out), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert f"root: {ml1m}" in printed and "skip_bad: false" in printed
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(printed)
    assert main(["prepare", "ml-1m", "--config", str(cfg), "--print_config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["prepare", "ml-1m", "--config", str(cfg), "--name", "from-yaml"]) == 0
    assert CanonicalDataset.load(out).name == "from-yaml"


def test_prepare_prints_a_summary(ml1m: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data" / "ml"
    assert main(["prepare", "ml-1m", str(ml1m), "--out", str(out), "--name", "tiny-ml"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text
    assert "2 users, 2 items, 3 interactions" in text
    assert "source:       movielens/1m" in text
    assert "skipped:      nothing" in text
    ds = CanonicalDataset.load(out)
    assert ds.name == "tiny-ml" and ds.counts == {"users": 2, "items": 2, "interactions": 3}


def test_prepare_errors_exit_1_without_traceback(
    ml1m: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(ml1m / "ratings.dat", "a") as f:
        f.write("2::29::4\n")
    out = tmp_path / "ml"
    assert main(["prepare", "movielens/1m", str(ml1m), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ratings.dat:4: expected 4 '::'-separated fields" in err
    assert "Traceback" not in err and "skip_bad" in err and len(err.splitlines()) == 1
    assert not out.exists()

    assert main(["prepare", "movielens/1m", str(ml1m), "--out", str(out), "--skip_bad"]) == 0
    text = capsys.readouterr().out
    assert "skipped:      1 record(s)" in text
    assert "1 malformed lines in ratings.dat" in text and "e.g. ratings.dat:4:" in text
    report = json.loads((out / "dataset.json").read_text())["conversion_report"]
    assert report["skipped"] == {"malformed lines in ratings.dat": 1}


def test_prepare_refuses_to_overwrite_without_the_flag(
    ml1m: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ml"
    assert main(["prepare", "movielens", str(ml1m), "--out", str(out)]) == 0
    before = (out / "dataset.json").read_text()
    capsys.readouterr()
    assert main(["prepare", "movielens", str(ml1m), "--out", str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == before
    assert main(["prepare", "movielens", str(ml1m), "--out", str(out), "--overwrite"]) == 0


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "amazon2013", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'amazon2013'. Did you mean" in err and "'amazon2014'" in err
    assert main(["prepare", "amazon2014", "--out", str(tmp_path / "o")]) == 2  # REVIEWS missing
    assert "reviews" in capsys.readouterr().err
    assert main(["prepare", "amazon2014", "r.json", "--out", str(tmp_path / "o"), "--skip_bda"]) == 2
    assert "Did you mean '--skip_bad'" in capsys.readouterr().err
    # a missing input file is not a usage error: the command ran and could not do its job
    assert main(["prepare", "amazon2014", str(tmp_path / "nope.json.gz"), "--out", str(tmp_path / "o")]) == 1
    assert "error: reviews file" in capsys.readouterr().err
    assert main([]) == 2


def test_info_prints_counts_split_and_stores(
    mmrec_raw: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "toy"
    args = [
        "prepare",
        "mmrec",
        str(mmrec_raw["inter"]),
        "--features",
        str(mmrec_raw["features"]),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "store:        minilm: 4-d, 2 rows at stores/minilm" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 users, 2 items, 4 interactions" in text
    assert "interaction columns: user_id, item_id, timestamp, rating, split" in text
    assert "split:        given" in text and "split sizes:  train 2, valid 1, test 1" in text
    assert "timestamps:   file-order" in text
    assert "fingerprint:" in text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["interactions"] == 4
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_synth_calls_the_generator_with_its_own_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []

    def generate_demo_catalogue(
        out: str | Path,
        *,
        seed: int = 0,
        num_items: int = 240,
        num_users: int = 1200,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> CanonicalDataset:
        """Fake generator with the real signature (the command's options come from it).

        Args:
            out: destination.
            seed: seed.
            num_items: items.
            num_users: users.
            overwrite: replace.
            show_progress: bars.
        """
        calls.append((str(out), seed, num_items, num_users, overwrite))
        if num_items < 20:
            raise ValueError("num_items must be at least 20")
        items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
        inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]})
        return write_dataset(out, items, inter, name="demo", source_format="synth", overwrite=overwrite)

    fake = types.ModuleType("mmrec.datamodules.synth")
    fake.generate_demo_catalogue = generate_demo_catalogue  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mmrec.datamodules.synth", fake)
    out = tmp_path / "demo"
    assert main(["synth", "--out", str(out), "--seed", "3"]) == 0
    assert calls == [(str(out), 3, 240, 1200, False)]
    assert "1 users, 2 items, 2 interactions" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--overwrite", "--num_users", "7"]) == 0
    assert calls[-1] == (str(out), 0, 240, 7, True)
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "x"), "--num_items", "3"]) == 1
    assert capsys.readouterr().err == "error: num_items must be at least 20\n"


@pytest.mark.realdata
def test_real_ml100k_through_the_cli(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ml-100k"
    assert main(["prepare", "ml-100k", str(shared_data / "ml-100k"), "--out", str(out)]) == 0
    assert "943 users, 1,682 items, 100,000 interactions" in capsys.readouterr().out


def test_the_mmrec_command_dispatches_to_data(
    ml1m: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmrec.cli import main as mmrec_main

    out = tmp_path / "ml"
    assert mmrec_main(["data", "prepare", "ml-1m", str(ml1m), "--out", str(out)]) == 0
    assert mmrec_main(["data", "info", str(out)]) == 0
    assert "2 users, 2 items, 3 interactions" in capsys.readouterr().out


def test_output_piped_into_a_reader_that_leaves_early_is_not_an_error(repo_root: Path) -> None:
    """`mmrec data info ... | head -1`: the closed pipe ends the command quietly with exit code 0."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrec.cli", "data", "info", str(repo_root / "assets" / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader has left before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Broken pipe" not in err and "BrokenPipeError" not in err and "error" not in err
