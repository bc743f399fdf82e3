"""Every `mmrec ...` command written in README.md code blocks and in the shipped configs' comments parses
(through `--print_config`: the command's own parser, nothing trained or built), so a renamed option, key or
config file breaks the suite instead of the documentation."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmrec.cli import main

REPO = Path(__file__).resolve().parents[1]


def readme_commands(text: str) -> list[str]:
    """The ``mmrec ...`` lines of the fenced code blocks of a markdown text (continuations joined)."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("mmrec "):
                commands.append(line.strip())
    return commands


def config_commands() -> list[str]:
    """The ``#   mmrec ...`` lines of the shipped configs' comments."""
    commands: list[str] = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        going_on = False  # the previous comment line ended with a backslash
        for line in path.read_text().splitlines():
            body = line[1:].strip() if line.startswith("#") else ""
            if going_on and body:
                commands[-1] = commands[-1][:-1].rstrip() + " " + body
            elif body.startswith("mmrec "):
                commands.append(body)
            else:
                going_on = False
                continue
            going_on = commands[-1].endswith("\\")
    return commands


def as_args(command: str) -> list[str]:
    """argv of a documented command: comments dropped, ``$VAR`` placeholders kept as plain words."""
    args = shlex.split(command, comments=True)[1:]
    return [re.sub(r"\$\{?(\w+)\}?", r"\1", a) for a in args]


README = readme_commands((REPO / "README.md").read_text())
CONFIGS = config_commands()


def test_the_documentation_has_commands() -> None:
    verbs = {as_args(c)[0] for c in README}
    assert {"embed", "fit", "index", "recommend", "bench", "data"} <= verbs, verbs
    assert any(as_args(c)[:2] == ["bench", "crossdomain"] for c in CONFIGS)


@pytest.mark.parametrize("command", sorted(set(README) | set(CONFIGS)))
def test_documented_command_parses(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)  # the documented paths are relative to the repository root
    args = as_args(command)
    code = main([*args, "--print_config"])
    captured = capsys.readouterr()
    assert code == 0, f"`{command}` does not parse: {captured.err.strip()[-600:]}"
    assert captured.out.strip(), f"`{command}` printed no config"
    if args[0] in ("fit", "validate", "test", "predict"):
        config = yaml.safe_load(captured.out)
        assert {"trainer", "model", "data"} <= set(config)


def test_a_renamed_option_would_fail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parse check above can fail: a misspelt option of a README command is a usage error."""
    monkeypatch.chdir(REPO)
    index = next(as_args(c) for c in README if as_args(c)[0] == "index")
    renamed = [a.replace("--out", "--output") for a in index]
    assert main([*renamed, "--print_config"]) == 2
    assert "unknown option '--output'" in capsys.readouterr().err
    fit = next(as_args(c) for c in README if as_args(c)[0] == "fit")
    assert main([*fit, "--trainer.max_epoch=1", "--print_config"]) == 2
    capsys.readouterr()
    assert main(["fit", "--config", "configs/no_such_recipe.yaml", "--print_config"]) != 0


def _logged_run(config: str) -> Path:
    """The run folder `mmrec fit --config <config>` writes (its CSVLogger's save_dir / name)."""
    logger = yaml.safe_load((REPO / config).read_text())["trainer"]["logger"]["init_args"]
    return Path(logger["save_dir"]) / logger["name"]


def test_faiss_example_points_at_a_run_and_users_of_the_readme_demo() -> None:
    doc = (REPO / "examples" / "faiss_from_checkpoint.py").read_text()
    line = next(x.strip() for x in doc.splitlines() if x.strip().startswith("python examples/faiss_from"))
    args = shlex.split(line)[2:]
    ckpt = Path(args[args.index("--ckpt") + 1])
    users = args[args.index("--users") + 1].split(",")
    assert "mmrec fit --config configs/sasrec_demo.yaml" in (REPO / "README.md").read_text()
    assert ckpt == _logged_run("configs/sasrec_demo.yaml") / "version_0" / "checkpoints" / "last.ckpt"
    callbacks = yaml.safe_load((REPO / "configs/sasrec_demo.yaml").read_text())["trainer"]["callbacks"]
    assert any(c["init_args"].get("save_last") for c in callbacks)  # so last.ckpt exists
    known = set(pd.read_parquet(REPO / "assets/demo/interactions.parquet", columns=["user_id"])["user_id"])
    assert users and set(users) <= known


def test_make_demo_ends_beside_mostpop_on_the_run_fit_writes() -> None:
    make = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo: .*\n((?:\t.*\n)+)", make, flags=re.M)
    assert recipe is not None
    steps = [s.strip() for s in recipe.group(1).splitlines()]
    assert steps[-2] == "$(MMREC) fit --config configs/vip5_demo.yaml"
    assert steps[-1] == "$(PY) bench/beside_mostpop.py --run $(DEMO_RUN)"
    demo_run = re.search(r"^DEMO_RUN \?= (\S+)$", make, flags=re.M)
    assert demo_run is not None and Path(demo_run.group(1)) == _logged_run("configs/vip5_demo.yaml")
