"""What the guides name exists: every registry key, file path and ``mmrec.*`` name in the docs below.

Inline code spans (and ``class_path:`` / ``encoder:`` values of code blocks) are read from the Markdown.
A span is a *path* when it starts with a top-level folder of the repository or ends with a file
extension; a *registry key* when it looks like ``family/name`` (a ``*`` wildcard must match at least one
key); a *name* when it starts with ``mmrec.`` (a module, or an attribute of one). Spans with placeholders
(``<name>``, ``myfamily/...``, ``family/name``) are examples, not references, and are skipped.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from mmrec.adapters import ADAPTERS, TRANSFER_STRATEGIES
from mmrec.datamodules import DATAMODULES
from mmrec.datamodules.converters import CONVERTERS
from mmrec.encoders import ENCODERS
from mmrec.models import MODELS
from mmrec.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["docs/CONTRIBUTING.md", "docs/ARCHITECTURE.md"]
REGISTRIES: list[Registry] = [MODELS, ENCODERS, ADAPTERS, TRANSFER_STRATEGIES, CONVERTERS, DATAMODULES]
TOP_FOLDERS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
# entry-point groups are names in package metadata, not modules
ENTRY_POINT_GROUPS = {r.entry_point_group for r in REGISTRIES} | {"mmrec.strategies"}
PLACEHOLDER = re.compile(r"<|>|\bmy[a-z]*\b|^family/|\.\.\.|\{")
KEY = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.*-]+$")
EXTENSION = re.compile(r"\.(py|md|yaml|yml|toml|json|lock|cfg|txt)$")


def _keys() -> set[str]:
    return {k for r in REGISTRIES for k in r.list()}


def _spans(text: str) -> list[str]:
    fenced = re.findall(r"```.*?```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    values = [v for block in fenced for v in re.findall(r"(?:class_path|encoder):\s*([\w./-]+)", block)]
    return [s.strip() for s in inline + values]


def _classify(span: str) -> tuple[str, str] | None:
    token = span.split("::", 1)[0].split("(", 1)[0].strip()
    if not token or " " in token or PLACEHOLDER.search(token):
        return None
    first = token.split("/", 1)[0]
    if KEY.match(token) and token in _keys():  # a registry key, even where a folder of that name exists (data/)
        return "key", token
    if first in TOP_FOLDERS and ("/" in token or token.endswith("/")):
        return "path", token
    if EXTENSION.search(token) and "/" in token:
        return "path", token
    if KEY.match(token) and first not in TOP_FOLDERS:
        return "key", token
    if re.match(r"^mmrec(\.\w+)+$", token):
        return "name", token
    return None


def _references() -> list[tuple[str, str, str]]:
    refs = []
    for doc in DOCS:
        for span in _spans((ROOT / doc).read_text(encoding="utf-8")):
            found = _classify(span)
            if found is not None:
                refs.append((doc, *found))
    return sorted(set(refs))


REFS = _references()


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_the_docs_are_read() -> None:
    kinds = {kind for _, kind, _ in REFS}
    assert kinds == {"path", "key", "name"}, REFS
    assert ("docs/CONTRIBUTING.md", "key", "sequential/sasrec") in REFS
    assert ("docs/ARCHITECTURE.md", "path", "tests/test_architecture.py") in REFS
    # the classifier itself: placeholders are skipped, wildcards are keys
    assert _classify("myfamily/base") is None and _classify("configs/<name>_demo.yaml") is None
    assert _classify("sequential/*") == ("key", "sequential/*")


@pytest.mark.parametrize(("doc", "kind", "ref"), REFS, ids=[f"{d.split('/')[-1]}:{r}" for d, _, r in REFS])
def test_every_reference_exists(doc: str, kind: str, ref: str) -> None:
    if kind == "path":
        assert (ROOT / ref).exists(), f"{doc} names {ref}, which is not in the repository"
    elif kind == "key":
        keys = _keys()
        if "*" in ref:
            pattern = re.compile("^" + re.escape(ref).replace(r"\*", ".*") + "$")
            assert any(pattern.match(k) for k in keys), f"{doc}: no registry key matches {ref}"
        else:
            assert ref in keys, f"{doc} names registry key {ref!r}, which is not registered"
    else:
        assert ref in ENTRY_POINT_GROUPS or _resolves(ref), f"{doc} names {ref}, which does not exist"
