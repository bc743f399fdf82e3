"""``mmrec store``: info, ls, import-npy; the reader helpers ``mmrec embed`` shares with ``write_store``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.cli import main as mmrec_main
from mmrec.store import EmbeddingStore, StoreError, resolve_store_path, write_store
from mmrec.store.importing import import_npy


def main(args: list[str]) -> int:
    return mmrec_main(["store", *args])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    from mmrec.data.canonical import write_dataset

    items = pd.DataFrame({"item_id": ["2", "0", "1"], "title": ["c", "a", "b"]})
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["0", "1", "2"], "timestamp": [1, 2, 3]})
    write_dataset(tmp_path / "ds", items, inter, name="toy", source_format="python")
    return tmp_path / "ds"


def test_write_store_layout_and_manifest_last(tmp_path: Path) -> None:
    s = write_store(
        tmp_path / "s",
        ["a", "b"],
        np.array([[1.0, np.nan], [1.0, 2.0]]),
        encoder="toy/x",
        dtype="float16",
        fingerprint="f",
    )
    assert sorted(p.name for p in s.path.iterdir()) == [
        "embeddings.npy",
        "keys.parquet",
        "manifest.json",
        "mask.npy",
    ]
    assert s.mask.tolist() == [False, True] and s.manifest["failures"] == {
        "a": "non-finite values in the vector"
    }
    assert s.manifest["format"] == "mmrec-embedding-store" and s.manifest["fingerprint"] == "f"
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(StoreError, match="already exists"):
        write_store(tmp_path / "s", ["a"], np.ones((1, 2)), encoder="toy/x")


def test_info_and_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_store(
        tmp_path / "cache" / "image" / "fp1",
        ["a", "b"],
        np.ones((2, 3)),
        np.array([True, False]),
        encoder="toy/x",
        weights="random-init:0",
        fingerprint="fp1",
        failures={"b": "corrupt image"},
        failure_counts={"corrupt image": 1},
        random_init=True,
    )
    write_store(
        tmp_path / "cache" / "image" / "fp0", ["a", "b"], np.ones((2, 3)), encoder="toy/x", fingerprint="fp0"
    )
    (tmp_path / "cache" / "image" / "CURRENT").write_text("fp1\n")
    (tmp_path / "cache" / "image" / "fp2.partial").mkdir()
    assert main(["info", str(tmp_path / "cache" / "image")]) == 0
    out = capsys.readouterr().out
    assert "fingerprint fp1" in out and "2 x 3 float32, 1 valid" in out and "corrupt image: 1" in out
    assert "RANDOM-INIT" in out and "other builds fp0" in out
    assert main(["info", str(tmp_path / "cache" / "image"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprint"] == "fp1"
    assert main(["ls", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "fp1" in out and "fp0" in out and "in progress" in out
    assert main(["info", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_import_npy(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "m.npy", m)
    # dataset order: row k = k-th item of items.parquet
    assert (
        main(
            [
                "import-npy",
                "--npy",
                str(tmp_path / "m.npy"),
                "--dataset",
                str(dataset),
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    s = EmbeddingStore.open(tmp_path / "a")
    assert s.item_ids == ["2", "0", "1"] and np.array_equal(np.asarray(s.vectors), m)
    assert s.manifest["encoder"] == "import/npy" and s.manifest["weights"].startswith("sha256:")
    # row-index: row k = item "k"; aligned() gives the dataset's order back
    s2 = import_npy(tmp_path / "m.npy", dataset, tmp_path / "cache", keys="row-index", name="feat")
    assert s2.item_ids == ["0", "1", "2"]
    assert resolve_store_path(tmp_path / "cache" / "feat") == s2.path
    vecs, mask = EmbeddingStore.open(tmp_path / "cache" / "feat").aligned(["2", "0", "1"])
    assert np.array_equal(vecs.numpy(), m[[2, 0, 1]]) and mask.all()
    # wrong row count and ids that are not 0..N-1 are refused with the fix
    np.save(tmp_path / "bad.npy", np.ones((4, 2), np.float32))
    assert (
        main(
            [
                "import-npy",
                "--npy",
                str(tmp_path / "bad.npy"),
                "--dataset",
                str(dataset),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 1
    )
    assert "4 rows but dataset" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    from mmrec.data.canonical import write_dataset

    write_dataset(
        tmp_path / "ds2",
        pd.DataFrame({"item_id": ["x", "y", "z"]}),
        pd.DataFrame({"user_id": ["u"], "item_id": ["x"], "timestamp": [1]}),
        name="t",
        source_format="python",
    )
    with pytest.raises(StoreError, match="dataset-order"):
        import_npy(tmp_path / "m.npy", tmp_path / "ds2", tmp_path / "c", keys="row-index")


def test_repr_is_one_short_line(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", [f"i{k}" for k in range(5000)], np.ones((5000, 4)), encoder="toy/x")
    text = repr(store)
    assert "\n" not in text and len(text) < 300 and "5000 x 4" in text and "5000 valid" in text
    assert str(store) == text


def test_import_npy_options_round_trip_through_print_config(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "m.npy", np.ones((3, 2), np.float32))
    args = ["import-npy", "--npy", str(tmp_path / "m.npy"), "--dataset", str(dataset), "--out", str(tmp_path / "a")]
    assert main([*args, "--keys", "row-index", "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "keys: row-index" in printed
    (tmp_path / "imp.yaml").write_text(printed)
    assert main(["import-npy", "--config", str(tmp_path / "imp.yaml"), "--print_config"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["import-npy", "--config", str(tmp_path / "imp.yaml"), "--keys", "rowindex"]) == 2
    assert "expected one of 'dataset-order', 'row-index'" in capsys.readouterr().err


# ============================================================================ the store lock
def test_store_lock_excludes_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    import os
    import threading
    import time

    from mmrec.store.lock import StoreLock, StoreLockedError, read_holder

    path = tmp_path / "name" / "abc.lock"
    first = StoreLock(path).acquire()
    holder = read_holder(path)
    assert holder.pid == os.getpid() and holder.host and holder.started
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} on host .* and --lock_timeout is 0"):
        StoreLock(path, timeout=0, what="store 'x'").acquire()
    t0 = time.monotonic()
    with pytest.raises(StoreLockedError, match=r"after waiting 0\.3 s"):
        StoreLock(path, timeout=0.3, poll=0.05).acquire()
    assert time.monotonic() - t0 >= 0.3
    # a waiter says who it waits for, and gets the lock once the holder releases it
    said: list[str] = []
    threading.Timer(0.4, first.release).start()
    with StoreLock(path, echo=said.append, poll=0.05) as second:
        assert second.held and second.waited_s >= 0.3
    assert len(said) == 1 and "waiting for" in said[0] and f"pid {os.getpid()}" in said[0]
    assert not path.exists(), "the holder removes the lock file on release"


def test_store_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from mmrec.store.lock import StoreLock, StoreLockedError, read_holder

    path = tmp_path / "abc.lock"
    script = (
        "import sys, time\n"
        "from mmrec.store.lock import StoreLock\n"
        f"StoreLock({str(path)!r}).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid} on host"):
            StoreLock(path, timeout=0).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.exists() and read_holder(path).pid == proc.pid  # the file stays, the lock does not
    t0 = time.monotonic()
    with StoreLock(path, timeout=5):
        assert time.monotonic() - t0 < 2
