"""Paths given by the user (configs, command line), resolved the same way by every datamodule."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_user_path(path: str | os.PathLike[str], *, base: Path | None = None) -> Path:
    """Resolve a path given by the user (config or command line).

    Absolute paths and ``~`` are used as they are. A relative path is looked up first inside ``base`` (e.g.
    a dataset folder, for stores that converters write into it) when it exists there, otherwise against
    the current directory, as every command-line tool does.
    """
    p = Path(os.path.expandvars(str(path))).expanduser()
    if p.is_absolute():
        return p
    if base is not None and (base / p).exists():
        return (base / p).resolve()
    return p.resolve()
