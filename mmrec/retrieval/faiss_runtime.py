"""faiss at run time: GPU placement, thread count, reading index files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrec.retrieval.index_params import ItemIndexError

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU builds are noise here
import faiss  # noqa: E402  (after the line above, which silences its import-time logging)

log = logging.getLogger("mmrec.retrieval.index")  # one logger for the index modules: `mmrec index` quiets it


def gpu_available() -> bool:
    """True when faiss was built with GPU support (faiss-gpu) and sees at least one GPU."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - exotic builds
        return False


_GPU_RESOURCES: Any = None


def _cpu_only_reason(kind: str, params: Mapping[str, Any]) -> str | None:
    """Why an index of this kind / encoding cannot run on faiss-gpu (None when it can)."""
    if kind == "hnsw":
        return "faiss has no GPU HNSW; the hnsw index runs on CPU."
    if kind == "ivf" and params.get("encoding") == "pq4fs":
        return (
            "faiss has no GPU kernel for 4-bit fast-scan PQ; this ivf index runs on CPU "
            "(build it with --params.encoding=sq8 for a GPU index)."
        )
    return None


def to_gpu(
    index: faiss.Index, kind: str, gpu: bool | None, params: Mapping[str, Any] | None = None
) -> tuple[faiss.Index, bool]:
    """Move ``index`` to GPU 0 when asked (``gpu=True``) or when possible (``gpu=None``).

    HNSW and 4-bit fast-scan IVF stay on CPU (a warning when ``gpu=True`` asked otherwise).
    """
    global _GPU_RESOURCES
    if gpu is False:
        return index, False
    reason = _cpu_only_reason(kind, params or {})
    if reason is not None:
        if gpu:
            log.warning(reason)
        return index, False
    if not gpu_available():
        if gpu:
            raise ItemIndexError(
                "gpu=True but faiss sees no GPU (faiss-cpu installed, or no device): install faiss-gpu "
                "(`pip install mmrec[gpu]`) on a GPU machine, or pass gpu=None / --device cpu."
            )
        return index, False
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index), True


def to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if "Gpu" in type(index).__name__ else index


def read_faiss(path: Path) -> Any:
    """Read ``index.faiss`` memory-mapped when this faiss build can (flat: ``IO_FLAG_MMAP_IFC``)."""
    for flag_name in ("IO_FLAG_MMAP_IFC", "IO_FLAG_MMAP"):
        flag = getattr(faiss, flag_name, None)
        if flag is None:
            continue
        try:
            return faiss.read_index(str(path), flag)
        except RuntimeError:
            continue
    return faiss.read_index(str(path))


def set_threads(threads: int | None) -> None:
    """Set faiss's OpenMP threads (None leaves the default: all cores)."""
    if threads is not None:
        if threads < 1:
            raise ItemIndexError(f"threads must be >= 1; got {threads}.")
        faiss.omp_set_num_threads(int(threads))
