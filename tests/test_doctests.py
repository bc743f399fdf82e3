"""Docstring examples are tests: every ``>>>`` example in the library runs here.

One test per library module that has examples (found by reading the source, so collection imports
nothing). Each module is imported under its installed name (``mmrec.encoders.media``, never the bare
folder name ``encoders.media``, which would load a second copy of every registry) and run with
:mod:`doctest`. Examples that need files, the network or a long run carry ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# source folder -> import package (encoders/, adapters/, datamodules/ install as mmrec sub-packages)
PACKAGES = {
    "mmrec": "mmrec",
    "encoders": "mmrec.encoders",
    "adapters": "mmrec.adapters",
    "datamodules": "mmrec.datamodules",
}
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join([package, *parts]))
    return names


MODULES = _modules_with_examples()


def test_the_library_has_examples() -> None:
    """The walk finds the examples (a wrong ROOT or PACKAGES would make every other test vanish)."""
    assert len(MODULES) > 50, MODULES
    assert "mmrec.encoders.media" in MODULES and "mmrec.registry" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    # examples that write files write them into a fresh folder
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    tests = [t for t in finder.find(module, name) if t.examples]
    # a module's examples are collected from its docstrings (not from objects it merely imports)
    assert tests, f"{name} has '>>>' in its source but doctest found no examples in it"
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed in {name}:\n{report.getvalue()}"
    )
