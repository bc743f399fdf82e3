"""What ``mmrec embed`` reports per store: :class:`StoreResult` and its one-line summary.

Example:
    >>> r = StoreResult("image", Path("/c/image/ab12"), "ab12", True, {"count": 3, "valid": 3, "dim": 8})
    >>> r.summary().startswith("[image] 3 items, 3 valid, 0 failed; dim 8")
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrec.embedding.config import EmbedError
from mmrec.store.reader import STORE_FORMAT


@dataclass
class StoreResult:
    """Outcome of one recipe entry.

    Attributes:
        name: store name.
        path: the complete store folder ``<cache>/<name>/<fingerprint>``.
        fingerprint: its content address.
        cache_hit: True when the store existed and nothing was computed.
        manifest: the store's manifest.
        seconds: wall time of this entry in this run.
    """

    name: str
    path: Path
    fingerprint: str
    cache_hit: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One human-readable line: items, valid, missing, failures by reason, time, items/s, path."""
        m = self.manifest
        fails = m.get("failure_counts") or {}
        nfail = sum(fails.values())
        parts = [f"{m.get('count', '?')} items", f"{m.get('valid', '?')} valid"]
        if m.get("missing_count"):
            parts.append(f"{m['missing_count']} missing value")
        parts.append(
            f"{nfail} failed" + (f" ({', '.join(f'{r}: {c}' for r, c in fails.items())})" if nfail else "")
        )
        t = m.get("timings", {}).get("total_s")
        rate = m.get("throughput_items_per_s")
        timing = (
            f"built in {t:.1f} s"
            if self.cache_hit and t is not None
            else (f"{t:.1f} s" if t is not None else "")
        )
        if rate:
            timing += f", {rate:.1f} items/s"
        if self.cache_hit:
            timing += f"; this run {self.seconds * 1000:.0f} ms"
        dim = m.get("dim")
        warn = " [RANDOM-INIT weights]" if m.get("random_init") else ""
        return f"[{self.name}] {', '.join(parts)}; dim {dim}{warn}; {timing} -> {self.path}"


def read_manifest(store_dir: Path) -> dict[str, Any]:
    """A complete store's manifest (checks that it is one)."""
    with open(store_dir / "manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != STORE_FORMAT:
        raise EmbedError(f"{store_dir}/manifest.json is not an mmrec store manifest; delete {store_dir}.")
    return manifest
