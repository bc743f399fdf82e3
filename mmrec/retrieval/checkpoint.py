"""Reading a checkpoint for serving: class paths it may name, its metadata, and the fingerprint of a model.

:func:`load_checkpoint_meta` opens a Lightning checkpoint with ``weights_only=True`` and checks that
``mmrec fit`` wrote it; :func:`resolve_class` imports the model / datamodule class it names (trusted
packages only); :func:`model_fingerprint` identifies what determines a model's item vectors, so an index
built from one checkpoint is accepted for another with the same weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmrec.retrieval.errors import RecommenderError

#: Packages whose classes a checkpoint may name without being imported first (Lightning's rule for the rest).
TRUSTED_PREFIXES: tuple[str, ...] = ("mmrec.",)


def resolve_class(class_path: str, base: type) -> type:
    """Import ``module.Class`` named by a checkpoint and check it subclasses ``base``.

    Only classes under :data:`TRUSTED_PREFIXES` or in already-imported modules are accepted (the same
    rule Lightning applies to checkpoint class paths), so a checkpoint cannot make us import arbitrary
    code.
    """
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        raise RecommenderError(
            f"the checkpoint names class {class_path!r}, which is not a 'module.Class' path."
        )
    if module_name not in sys.modules and not class_path.startswith(TRUSTED_PREFIXES):
        raise RecommenderError(
            f"the checkpoint names class {class_path!r} from a module that is not imported; if you trust the "
            f"checkpoint, `import {module_name}` before loading it."
        )
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise RecommenderError(f"cannot import {class_path!r} named by the checkpoint: {e}.") from e
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise RecommenderError(f"{class_path!r} named by the checkpoint is not a {base.__name__}.")
    return cls


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def model_fingerprint(
    class_path: str,
    state_dict: Mapping[str, torch.Tensor],
    *,
    catalog_fingerprint: str = "",
    feature_fingerprints: Mapping[str, str] | None = None,
) -> str:
    """sha256 of what determines a model's item vectors: class, trained weights, catalogue and features.

    Two checkpoints with the same weights (e.g. ``last.ckpt`` and the best one after the last epoch) give
    the same fingerprint although their files (optimizer state, loops) differ.

    Args:
        class_path: the model class (``module.Class``).
        state_dict: trained weights (persistent tensors).
        catalog_fingerprint: the dataset fingerprint the model was trained on.
        feature_fingerprints: feature name -> embedding store fingerprint (frozen inputs of the items).
    """
    h = hashlib.sha256()
    head = {
        "class": class_path,
        "catalog": catalog_fingerprint,
        "features": dict(sorted((feature_fingerprints or {}).items())),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def describe_source(src: Mapping[str, Any]) -> str:
    """One line naming where an index's vectors came from (a checkpoint or an embedding store)."""
    if src.get("type") == "checkpoint":
        return (
            f"checkpoint {src.get('path')} (sha256 {str(src.get('sha256'))[:12]}, model {src.get('model_class')}, "
            f"fingerprint {str(src.get('model_fingerprint'))[:12]}, dim {src.get('dim')}, {src.get('num_items')} items)"
        )
    if src.get("type") == "store":
        return (
            f"embedding store {src.get('path')} (fingerprint {src.get('fingerprint')}, dim {src.get('dim')})"
        )
    return "an index without a recorded source" if not src else f"an unknown source {dict(src)!r}"


def load_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict (``weights_only=True``, memory-mapped), with clear errors for missing / foreign files."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RecommenderError(
            f"checkpoint {p} does not exist; `mmrec fit` writes them under runs/<name>/version_<n>/checkpoints/."
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # unpickling errors, truncated files, non-zip files
        raise RecommenderError(f"cannot read checkpoint {p} with weights_only=True: {e}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RecommenderError(f"{p} is not a Lightning checkpoint (no state_dict).")
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if "_class_path" not in (ckpt.get(key) or {}):
            raise RecommenderError(
                f"{p} has no {key}['_class_path']: it was not written by `mmrec fit` (LightningCLI with "
                "class_path configs), so the model / datamodule cannot be rebuilt from it."
            )
    return ckpt
