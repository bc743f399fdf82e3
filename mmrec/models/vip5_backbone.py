"""Loading frozen transformers backbones for VIP5 models (DESIGN §5 weights policy).

``backbone`` is a hub id (``t5-small``), a local ``save_pretrained`` directory, or ``minilm`` (the bundled
all-MiniLM-L6-v2, the offline default of the encoder-only ranking head). When it cannot be loaded the
error names the three ways to supply weights. ``backbone_config`` (a dict of config fields with
``model_type``) builds a randomly initialised backbone **for tests only**; it is logged loudly and recorded
in the backbone identity (``random-init:<seed>``) saved with checkpoints.

Example:
    >>> lb = load_backbone("minilm", kind="encoder")  # doctest: +SKIP
    >>> lb.model.config.hidden_size, lb.tokenizer.is_fast  # doctest: +SKIP
    (384, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from mmrec.prompts.pretrained import (
    MissingBackboneError,
    load_tokenizer,
    missing_backbone_message,
    resolve_pretrained,
)

if TYPE_CHECKING:  # transformers is imported when a backbone is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

BackboneKind = Literal["seq2seq", "encoder"]


@dataclass
class LoadedBackbone:
    """A loaded backbone and its tokenizer.

    Attributes:
        model: the transformers model (eval mode, float32).
        tokenizer: its fast tokenizer.
        source: what was loaded (folder, hub id or ``backbone_config``).
        random_init: whether the weights are a random initialisation.
    """

    model: PreTrainedModel
    tokenizer: Any
    source: str
    random_init: bool


def load_backbone(
    backbone: str | None,
    kind: BackboneKind,
    backbone_config: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    seed: int = 0,
) -> LoadedBackbone:
    """Load a seq2seq (T5-family) or encoder-only (BERT-like) backbone and its tokenizer.

    Args:
        backbone: hub id, local directory or ``minilm``; ignored when ``backbone_config`` is given.
        kind: ``seq2seq`` (``AutoModelForSeq2SeqLM``) or ``encoder`` (``AutoModel``).
        backbone_config: config fields (with ``model_type``) for a random init -- tests only.
        tokenizer: tokenizer source (default: the backbone's own folder / hub id); required with
            ``backbone_config``.
        seed: seeds the random init.

    Raises:
        MissingBackboneError: nothing loadable; the message names the three ways to supply weights.
        ValueError: the model is not of the requested kind.
    """
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModel
    if backbone_config is not None:
        cfg_fields = dict(backbone_config)
        model_type = cfg_fields.pop("model_type", None)
        if not model_type:
            raise ValueError("backbone.config needs a model_type (e.g. 't5' or 'bert').")
        if tokenizer is None:
            raise ValueError(
                "backbone.config (random init) needs backbone.tokenizer: a hub id or local directory whose vocabulary "
                "fits the config's vocab_size."
            )
        config = AutoConfig.for_model(model_type, **cfg_fields)
        log.warning(
            "!!! RANDOM-INIT BACKBONE: building %s from backbone_config with seed %d. Its outputs are "
            "meaningless; use this for tests only (set backbone.name: <hub id | local dir> for real weights). !!!",
            model_type,
            seed,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = auto.from_config(config)
        source, random_init = f"backbone_config:{model_type}", True
    else:
        if not backbone:
            raise MissingBackboneError(missing_backbone_message("<none>", detail="backbone is empty"))
        source = resolve_pretrained(backbone)
        prev = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # "weights not used" noise from AutoModel on task heads
        try:
            model = auto.from_pretrained(source, dtype=torch.float32)
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if isinstance(e, ValueError) and "Unrecognized configuration" in str(e):
                raise ValueError(
                    f"{backbone!r} is not a {kind} model ({first}); the generative VIP5 needs a T5-family "
                    "encoder-decoder, the ranking head an encoder-only (BERT-like) model."
                ) from e
            raise MissingBackboneError(missing_backbone_message(str(backbone), detail=first)) from e
        finally:
            transformers.logging.set_verbosity(prev)
        random_init = False
    is_ed = bool(getattr(model.config, "is_encoder_decoder", False))
    if kind == "seq2seq" and not is_ed:
        raise ValueError(
            f"{source}: VIP5 (vip5/t5) needs an encoder-decoder backbone, got {model.config.model_type}."
        )
    if kind == "encoder" and is_ed:
        raise ValueError(
            f"{source}: the ranking head (vip5/ranking) needs an encoder-only backbone (BERT-like), got "
            f"the encoder-decoder {model.config.model_type}."
        )
    tok = load_tokenizer(tokenizer if tokenizer is not None else source)
    vocab = model.get_input_embeddings().num_embeddings
    if len(tok) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tok)} tokens but the backbone's embedding table only {vocab}; use the "
            "backbone's own tokenizer."
        )
    model.eval()
    return LoadedBackbone(model=model, tokenizer=tok, source=source, random_init=random_init)


def backbone_identity(model: PreTrainedModel, source: str, random_init: bool, seed: int = 0) -> str:
    """A cheap identity of a loaded backbone (config + a checksum of its frozen weights).

    Stored in checkpoints (which omit the frozen weights) and checked when they are loaded again, so a
    checkpoint is never silently applied to a different backbone.
    """
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        cfg.pop(k, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            if p.is_floating_point() and p.numel():
                flat = p.detach().reshape(-1).to(torch.float64)
                stride = max(1, flat.numel() // 1024)
                h.update(name.encode())
                h.update(f"{float(flat[::stride].sum()):.10e}".encode())
    prefix = f"random-init:{seed}:" if random_init else ""
    return prefix + h.hexdigest()[:20]
