"""The one config dialect of every ``mmrec`` command, its errors, threads and start-up.

Every command takes ``--config FILE``, ``--print_config`` (whose output, fed back with ``--config``, prints
the same config) and dotted overrides; errors are one line with a "did you mean", a traceback only with
``--debug``. The LightningCLI verbs are covered in tests/test_cli_fit.py, the cross-domain benchmark in
tests/test_crossdomain_bench.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import toy_dataset, toy_store

from mmrec.cli import bench as bench_cli
from mmrec.cli import main
from mmrec.cli.common import choose_threads, shorten
from mmrec.cli.dialect import explain


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ds = toy_dataset(tmp_path, num_items=12, num_users=6)
    store = toy_store(tmp_path, ds.item_ids, dim=4)
    np.save(tmp_path / "m.npy", np.ones((12, 3), np.float32))
    return {"dataset": ds.path, "store": store.path, "npy": tmp_path / "m.npy", "root": tmp_path}


def _commands(f: dict[str, Path]) -> dict[str, list[str]]:
    """One invocation per command (and sub-command), with what it needs besides defaults."""
    root = f["root"]
    return {
        "data prepare movielens/100k": [
            "data",
            "prepare",
            "movielens/100k",
            str(root / "raw"),
            "--out",
            str(root / "o"),
        ],
        "data synth": ["data", "synth", "--out", str(root / "demo"), "--num_items", "24"],
        "data info": ["data", "info", str(f["dataset"])],
        "embed": ["embed", "--config", "configs/embed/demo.yaml", "--shard_size", "32"],
        "shard": ["shard", "--dataset", str(f["dataset"]), "--out", str(root / "sh"), "--columns", "[image]"],
        "export": ["export", "--store", str(f["store"]), "--format", "npy", "--out", str(root / "e.npy")],
        "store info": ["store", "info", str(f["store"]), "--json"],
        "store ls": ["store", "ls", str(root)],
        "store import-npy": [
            "store",
            "import-npy",
            "--npy",
            str(f["npy"]),
            "--dataset",
            str(f["dataset"]),
            "--out",
            str(root / "imp"),
            "--keys",
            "dataset-order",
        ],
        "encoders list": ["encoders", "list", "text/*", "--tiny"],
        "encoders describe": ["encoders", "describe", "timm/tiny", "--no_build"],
        "index": [
            "index",
            "--store",
            str(f["store"]),
            "--out",
            str(root / "idx"),
            "--kind",
            "hnsw",
            "--params.M=8",
            "--metric",
            "cosine",
        ],
        "recommend": [
            "recommend",
            "--ckpt",
            str(root / "x.ckpt"),
            "--user",
            "u1,u2",
            "--params.nprobe=3",
            "--index",
            str(root / "idx"),
        ],
    }


COMMAND_NAMES = list(_commands({k: Path("/x") for k in ("dataset", "store", "npy", "root")}))


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_print_config_round_trips_for_every_command(
    name: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(repo_root)
    args = _commands(files)[name]
    assert main([*args, "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() and isinstance(yaml.safe_load(printed), dict)
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    # the command words, then the printed file alone: the same config again
    assert main([*name.split(), "--config", str(saved), "--print_config"]) == 0
    assert capsys.readouterr().out == printed


def test_dotted_overrides_reach_nested_keys(capsys: pytest.CaptureFixture[str], repo_root: Path) -> None:
    recipe = str(repo_root / "configs/embed/demo.yaml")
    assert (
        main(
            [
                "embed",
                "--config",
                recipe,
                "--trainer.devices=2",
                "--encoders.1.batch_size=7",
                "--print_config",
            ]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"] == {"accelerator": "auto", "devices": 2}
    assert printed["encoders"][1]["batch_size"] == 7 and printed["encoders"][0]["batch_size"] == 64
    index = ["index", "--store", "s", "--out", "o", "--config", str(repo_root / "configs/index/fast.yaml")]
    assert main([*index, "--params.nlist=64", "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["params"] == {"target_recall": 0.95, "nlist": 64}


def test_misspelt_keys_suggest_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_root: Path
) -> None:
    recipe = str(repo_root / "configs/embed/demo.yaml")
    assert main(["embed", "--config", recipe, "--shard_siz", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown option '--shard_siz'. Did you mean '--shard_size'") and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: assets/demo\nnum_worker: 2\nencoders: []\n")
    assert main(["embed", "--config", str(bad)]) == 2
    assert "unknown key 'num_worker'. Did you mean 'num_workers'" in capsys.readouterr().err
    assert main(["embed", "--config", recipe, "--store_dtype", "float8"]) == 2
    assert (
        capsys.readouterr().err == "error: store_dtype: expected one of 'float16', 'float32'; got 'float8'.\n"
    )
    assert main(["embd"]) == 2
    assert "unknown command 'embd'. Did you mean 'embed'" in capsys.readouterr().err
    assert main(["encoders", "lst"]) == 1  # `mmrec encoders <pattern>`: nothing matches
    assert main(["store", "inf", "x"]) == 2
    assert "Did you mean 'info'" in capsys.readouterr().err


def test_errors_are_one_line_and_tracebacks_need_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["store", "info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: embedding store") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert main(["--debug", "store", "info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: ")
    assert main(["store", "info", "x" * 100_000]) == 1
    err = capsys.readouterr().err
    assert len(err) < 1_000 and "characters)…" in err  # a long value is never echoed in full


def test_explain_drops_union_noise() -> None:
    noisy = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [A, NoneType]\n'
        "  Errors:\n    - Problem with given class_path 'mmrec.models.sequential.SASRec':\n"
        "        Option 'dimm' is not accepted\n    - Expected a <class 'NoneType'>\n"
        f"  Given value type: <class 'dict'>\n  Given value: {{'x': '{'y' * 5000}'}}"
    )
    text = explain(noisy)
    assert text.startswith(
        "unknown key 'dimm' in model.init_args (SASRec, sequential/sasrec). Did you mean 'dim'?"
    )
    assert "Union" not in text and "NoneType" not in text and len(text) < 400
    assert len(shorten("z" * 10_000)) < 150


def test_help_does_not_import_torch(repo_root: Path) -> None:
    probe = (
        "import sys, io, contextlib\nfrom mmrec.cli import main\n"
        "for args in (['--help'], ['data', '--help'], ['embed', '--help'], ['store', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(args) == 0, args\n"
        "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=repo_root, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_bare_encoders_and_bench_list_their_subjects(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 0
    assert "crossdomain" in capsys.readouterr().out
    assert main(["bench", "crossdomian"]) == 2
    assert "Did you mean 'crossdomain'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- threads
def test_thread_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))
    assert choose_threads(None)[0] is None  # idle machine: torch's default
    monkeypatch.setattr("os.getloadavg", lambda: (1.2, 0.0, 0.0))
    assert choose_threads(None)[0] == 3  # one core busy: the three others
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 0.0, 0.0))
    threads, why = choose_threads(None)
    assert threads == 1 and "other jobs" in why  # cores all busy: one thread per process
    assert choose_threads(2) == (2, "requested")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None) == (3, "OMP_NUM_THREADS")
    from mmrec.cli.common import UsageError

    with pytest.raises(UsageError):
        choose_threads(0)


def test_threads_option_is_applied_and_printed_once(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert (
            main(["index", "--store", str(files["store"]), "--out", str(tmp_path / "i"), "--threads", "2"])
            == 0
        )
        assert capsys.readouterr().err.count("[mmrec] threads: 2 (requested)") == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- bench plug-in
@dataclasses.dataclass
class ToyPart:
    """Args:
    size: a size.
    """

    size: int = 3


@dataclasses.dataclass
class ToyConfig:
    """A toy benchmark config.

    Args:
        name: table title.
        part: a nested part.
        seeds: seeds.
    """

    name: str
    part: ToyPart = dataclasses.field(default_factory=ToyPart)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if self.part.size < 1:
            raise ValueError("part.size must be positive")


def run_toy(config: ToyConfig) -> dict[str, object]:
    return {"dataset": config.name, "results": {"toy": {"size": config.part.size, "seeds": config.seeds}}}


def test_a_benchmark_plugs_in_with_one_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = bench_cli.Benchmark(
        config=f"{__name__}:ToyConfig", run=f"{__name__}:run_toy", help="a toy benchmark"
    )
    monkeypatch.setitem(bench_cli.BENCHMARKS, "toy", entry)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: demo\npart: {size: 5}\n")
    assert main(["bench", "toy", "--config", str(cfg), "--seeds=[1, 2]"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {"dataset": "demo", "results": {"toy": {"size": 5, "seeds": [1, 2]}}}
    assert main(["bench", "toy", "--config", str(cfg), "--part.size=7", "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == {"name": "demo", "part": {"size": 7}, "seeds": [0], "threads": None}
    assert main(["bench", "toy", "--config", str(cfg), "--part.sise=7"]) == 2
    assert "Did you mean '--part.size'" in capsys.readouterr().err
    assert main(["bench", "toy", "--config", str(cfg), "--part.size=0"]) == 1
    assert "part.size must be positive" in capsys.readouterr().err
    assert main(["bench", "--help"]) == 0
    assert "toy" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- hub names
def test_a_misspelt_backbone_fails_at_once_with_a_suggestion() -> None:
    from mmrec.prompts.pretrained import MissingBackboneError, resolve_pretrained

    # not a folder, not in the local hub cache, hub offline (tests run with HF_HUB_OFFLINE=1): no download
    # attempt, and the closest offline name
    with pytest.raises(MissingBackboneError, match=r"did you mean 'minilm'.*hub is offline"):
        resolve_pretrained("minilmx")
