"""The layer rules of docs/ARCHITECTURE.md, checked on the source: a forbidden import fails the suite.

Each library module is parsed (not imported) and every ``import`` / ``from ... import`` naming an mmrec
module is checked against the rules below. Imports inside functions are allowed only for optional
third-party dependencies, so every mmrec-internal edge is visible at the top of its module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> import package (encoders/, adapters/, datamodules/ install as mmrec sub-packages)
PACKAGES = {
    "mmrec": "mmrec",
    "encoders": "mmrec.encoders",
    "adapters": "mmrec.adapters",
    "datamodules": "mmrec.datamodules",
}

# layer -> mmrec packages it must not import (prefix match)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # bottom layer: torch-only building blocks, the data schema, the store, registry, protocols
    "mmrec.nn": (
        "mmrec.models",
        "mmrec.datamodules",
        "mmrec.adapters",
        "mmrec.encoders",
        "mmrec.cli",
        "mmrec.embedding",
        "mmrec.retrieval",
        "mmrec.bench",
        "mmrec.store",
        "mmrec.data",
    ),
    "mmrec.data": (
        "mmrec.models",
        "mmrec.datamodules",
        "mmrec.adapters",
        "mmrec.encoders",
        "mmrec.cli",
        "mmrec.embedding",
        "mmrec.retrieval",
        "mmrec.bench",
        "mmrec.store",
        "mmrec.nn",
    ),
    "mmrec.store": (
        "mmrec.models",
        "mmrec.datamodules",
        "mmrec.adapters",
        "mmrec.encoders",
        "mmrec.cli",
        "mmrec.embedding",
        "mmrec.retrieval",
        "mmrec.bench",
    ),
    "mmrec.registry": ("mmrec.",),
    "mmrec.catalog": ("mmrec.",),
    "mmrec.protocols": ("mmrec.",),
    "mmrec.metrics": ("mmrec.models", "mmrec.datamodules", "mmrec.cli", "mmrec.bench", "mmrec.retrieval"),
    "mmrec.rank_metrics": ("mmrec.models", "mmrec.datamodules", "mmrec.cli", "mmrec.bench", "mmrec.retrieval"),
    "mmrec.list_metrics": ("mmrec.models", "mmrec.datamodules", "mmrec.cli", "mmrec.bench", "mmrec.retrieval"),
    # encoders and adapters know no models, datamodules or CLI (adapters find sites by structure)
    "mmrec.encoders": (
        "mmrec.models",
        "mmrec.datamodules",
        "mmrec.adapters",
        "mmrec.cli",
        "mmrec.embedding",
        "mmrec.retrieval",
        "mmrec.bench",
        "mmrec.prompts",
    ),
    "mmrec.adapters": (
        "mmrec.models",
        "mmrec.datamodules",
        "mmrec.encoders",
        "mmrec.cli",
        "mmrec.embedding",
        "mmrec.retrieval",
        "mmrec.bench",
    ),
    # datamodules know no models; models know no datamodules
    "mmrec.datamodules": ("mmrec.models", "mmrec.adapters", "mmrec.cli", "mmrec.retrieval", "mmrec.bench"),
    "mmrec.models": ("mmrec.datamodules", "mmrec.cli", "mmrec.embedding", "mmrec.retrieval", "mmrec.bench"),
    "mmrec.prompts": ("mmrec.models", "mmrec.datamodules", "mmrec.cli", "mmrec.retrieval", "mmrec.bench"),
    "mmrec.embedding": ("mmrec.models", "mmrec.cli", "mmrec.retrieval", "mmrec.bench", "mmrec.adapters"),
    # serving and benchmarks use capabilities; nothing below the CLI imports it
    "mmrec.retrieval": ("mmrec.cli", "mmrec.bench"),
    "mmrec.bench": ("mmrec.cli",),
}
COMMAND_LINE = ("argparse", "mmrec.cli")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    base = PACKAGES[parts[0]]
    rest = [p for p in parts[1:] if p != "__init__"]
    return ".".join([base, *rest])


def library_modules() -> Iterator[tuple[str, Path]]:
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield _module_name(path), path


def _imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, list[str], bool]]:
    """``(node, imported names, inside a function)`` for every import statement."""
    nested: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], id(node) in nested
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, [node.module, *(f"{node.module}.{a.name}" for a in node.names)], id(node) in nested


def _layer(module: str) -> str | None:
    best = None
    for layer in FORBIDDEN:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def violations() -> list[str]:
    out = []
    for module, path in library_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        layer = _layer(module)
        in_cli = module == "mmrec.cli" or module.startswith("mmrec.cli.")
        where = path.relative_to(ROOT)
        for node, names, inside_function in _imports(tree):
            for name in names:
                if layer and any(
                    name == b.rstrip(".") or name.startswith(b if b.endswith(".") else b + ".") or name == b
                    for b in FORBIDDEN[layer]
                ):
                    out.append(f"{where}:{node.lineno} {module} -> {name} (layer {layer})")
                if not in_cli and any(name == c or name.startswith(c + ".") for c in COMMAND_LINE):
                    out.append(
                        f"{where}:{node.lineno} {module} -> {name} (command-line code outside mmrec/cli/)"
                    )
            if inside_function and any(n == "mmrec" or n.startswith("mmrec.") for n in names):
                out.append(
                    f"{where}:{node.lineno} {module}: in-function import of {names[0]} (import at the top)"
                )
    return sorted(set(out))


def test_no_forbidden_import_edges() -> None:
    found = violations()
    assert not found, "layer rules broken (docs/ARCHITECTURE.md):\n" + "\n".join(found)


def test_the_checker_catches_a_forbidden_edge(tmp_path: Path) -> None:
    tree = ast.parse("import argparse\nfrom mmrec.models import SASRec\ndef f():\n    import mmrec.cli\n")
    names = [(names, inside) for _, names, inside in _imports(tree)]
    assert names[0] == (["argparse"], False)
    assert names[1][0][0] == "mmrec.models" and names[2] == (["mmrec.cli"], True)
    assert _layer("mmrec.encoders.timm_encoders") == "mmrec.encoders"
    assert _layer("mmrec.models.sequential") == "mmrec.models"


@pytest.mark.parametrize("module", ["mmrec.nn.item_encoder", "mmrec.nn.sequence_encoder"])
def test_building_blocks_import_only_torch(module: str) -> None:
    path = next(p for m, p in library_modules() if m == module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    third_party = {n.split(".")[0] for _, names, _ in _imports(tree) for n in names}
    assert third_party <= {"__future__", "torch", "collections", "typing", "math", "dataclasses", "mmrec"}
