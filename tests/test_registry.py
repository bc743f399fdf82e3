"""Registries discover self-registering entries: package modules and third-party entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

import pytest

from mmrec.registry import Registry


def _package(tmp_path: Path, name: str, modules: dict[str, str]) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(body)


@pytest.fixture
def isolated_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("regpkg", "plugin_mod"))]:
        del sys.modules[name]


REG = Registry("toy", packages=("regpkg",), entry_point_group="mmrec.test-toys")


def test_entries_in_package_modules_register_themselves(isolated_path: Path) -> None:
    body = "from tests_registry_target import REG\n@REG.register('toy/{n}')\ndef build():\n    return '{n}'\n"
    sys.modules["tests_registry_target"] = sys.modules[__name__]
    _package(isolated_path, "regpkg", {"a": body.format(n="a"), "b": body.format(n="b")})
    assert "regpkg.a" not in sys.modules  # nothing imported before the first lookup
    assert REG.list() == ["toy/a", "toy/b"]
    assert REG.create("toy/b") == "b"
    assert REG.key_of(REG.get("toy/a")) == "toy/a"


def test_entry_points_load_third_party_modules(isolated_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry("plug", entry_point_group="mmrec.test-plugins")
    sys.modules["tests_registry_plug"] = type(sys)("tests_registry_plug")
    sys.modules["tests_registry_plug"].REG = reg  # type: ignore[attr-defined]
    (isolated_path / "plugin_mod.py").write_text(
        "from tests_registry_plug import REG\nREG.register('ext/thing')(lambda: 42)\n"
    )
    ep = importlib.metadata.EntryPoint(name="thing", value="plugin_mod", group="mmrec.test-plugins")

    def fake_entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        return [ep] if group == "mmrec.test-plugins" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    assert reg.create("ext/thing") == 42


def test_a_broken_plugin_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry("plug", entry_point_group="mmrec.test-broken")
    ep = importlib.metadata.EntryPoint(name="bad", value="no_such_module_xyz", group="mmrec.test-broken")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [ep])
    assert reg.list() == []
    assert "failed to load" in caplog.text and "no_such_module_xyz" in caplog.text


def test_unknown_key_suggests_close_names() -> None:
    reg: Registry[int] = Registry("shape")
    reg.register("toy/square")(lambda: 4)
    with pytest.raises(KeyError, match="Did you mean 'toy/square'"):
        reg.get("toy/sqare")


@pytest.mark.parametrize(
    ("module", "registry", "expected"),
    [
        ("mmrec.models", "MODELS", {"sequential/sasrec", "vip5/ranking"}),
        ("mmrec.datamodules", "DATAMODULES", {"data/sequential", "data/vip5", "data/multidomain"}),
        ("mmrec.adapters", "ADAPTERS", {"bottleneck/houlsby", "lora/peft", "side/iisan"}),
        ("mmrec.encoders", "ENCODERS", {"text/minilm"}),
        ("mmrec.datamodules.converters", "CONVERTERS", {"amazon/2014", "movielens/100k"}),
    ],
)
def test_project_registries_find_their_entries_without_hand_kept_lists(
    module: str, registry: str, expected: set[str]
) -> None:
    reg = getattr(importlib.import_module(module), registry)
    assert expected <= set(reg.list())
