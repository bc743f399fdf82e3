"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Hub clients read these once, at import time (during collection): set them before anything imports them,
# so a test that would reach for a model hub fails fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Lightning gives its loggers their own stderr handler when it is first imported (mmrec's CLI leaves the root
# logger alone so that each line prints once). Import it here, while sys.stderr is pytest's session-wide
# stream, not inside a test whose captured stream is closed when the test ends.
import lightning.pytorch  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _offline_hubs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: make every hub client fail fast instead of hanging on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def shared_data() -> Path:
    """The research datasets folder (``../shared/data``); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not available at {SHARED_DATA} (set MMREC_SHARED_DATA to point at them)")
    return SHARED_DATA


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
