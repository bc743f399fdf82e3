"""Small helpers shared by the benchmark scripts in ``bench/``.

Every bench script measures the variants it compares side by side in one run, prints a human-readable
table, and prints exactly one JSON object as its **last** line (:func:`emit_json`) so that CI and the
docs can parse results with ``tail -n 1``.

Import it from a script in this folder as ``from common import ...`` (the script's folder is on
``sys.path`` when run as ``python bench/x.py``) or as ``from bench.common import ...`` (``python -m
bench.x`` from the repository root); the bench scripts try both.

Example:
    >>> from common import Timer, peak_rss_mb
    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.seconds >= 0 and peak_rss_mb() > 0
    True
"""

from __future__ import annotations

import json
import math
import random
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

import torch

__all__ = [
    "Timer",
    "cuda_peak_mb",
    "emit_json",
    "peak_rss_mb",
    "print_table",
    "resolve_device",
    "seed_everything",
    "synchronize",
]


def resolve_device(name: str) -> torch.device:
    """Turn a ``--device`` flag into a device, falling back to CPU (with a warning) when CUDA is absent.

    Args:
        name: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device to run on; callers should report it (e.g. in the JSON line), since it may differ.
    """
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"warning: --device {name} requested but CUDA is not available; running on CPU.", file=sys.stderr
        )
        return torch.device("cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda[:N]'; got {name!r}.")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, torch (CPU and CUDA) and return a CPU ``torch.Generator`` seeded with ``seed``.

    Args:
        seed: the seed.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def synchronize(device: torch.device | None) -> None:
    """Wait for queued CUDA work on ``device`` (no-op on CPU) so that wall-clock timings are honest."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall-clock timer context manager; synchronizes CUDA on entry and exit when given a device.

    Args:
        device: the device whose queued work must be finished before reading the clock.

    Example:
        >>> with Timer() as t:
        ...     pass
        >>> t.seconds >= 0.0
        True
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.seconds = math.nan
        self._start = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cuda_peak_mb(device: torch.device | None) -> float | None:
    """Peak CUDA memory allocated by torch on ``device`` in MiB, or ``None`` when not on CUDA."""
    if device is None or device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / (1024 * 1024)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` (dicts) as an aligned plain-text table.

    Args:
        rows: one mapping per row.
        columns: column order; defaults to the keys of the first row.

    Example:
        >>> print_table([{"variant": "batched", "users/s": 1234.5}])
        variant  users/s
        -------  -------
        batched  1,234
    """
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def emit_json(result: Mapping[str, object]) -> None:
    """Print ``result`` as one compact JSON line; call it last so that ``tail -n 1`` reads the result.

    Floats are rounded to 6 significant digits; NaN/inf become ``null`` (valid JSON).
    """

    def clean(v: object) -> object:
        if isinstance(v, float):
            return None if not math.isfinite(v) else float(f"{v:.6g}")
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    sys.stdout.flush()
    print(json.dumps(clean(dict(result))), flush=True)
