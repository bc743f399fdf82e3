"""Pieces shared by the generative VIP5 (T5) and the encoder-only ranking head.

- :class:`PromptFeatures`: whole-word embeddings and visual tokens written into the prompt's input
  embeddings (one batched gather + ``torch.where``, no per-sample loop);
- :func:`insert_vip5_adapters`: bottleneck adapters (Houlsby / Pfeiffer / parallel, shared or one per task
  family) or LoRA through ``mmrec.adapters``, then the layer norms unfrozen;
- :class:`TrainedWeightsCheckpoint`: checkpoints keep only trained weights (+ hyper-parameters), and
  loading one restores them into a freshly loaded backbone after checking it is the same backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmrec.adapters.freeze import layer_norm_params
from mmrec.adapters.projector import VisualProjector, VisualProjectorConfig
from mmrec.adapters.registry import ADAPTERS, create_adapter
from mmrec.models.vip5_backbone import BackboneKind, backbone_identity, load_backbone
from mmrec.models.vip5_config import VIP5_ADAPTERS, AdapterConfig, BackboneConfig
from mmrec.prompts import TASKS, tokenizer_fingerprint

if TYPE_CHECKING:  # transformers is imported when a backbone is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def check_catalog_tokens(catalog: Mapping[str, Any], tokenizer_fp: str, backbone: str) -> None:
    """Fail when the datamodule's prompts were tokenised with another tokenizer than the backbone's."""
    fp = catalog.get("tokenizer_fingerprint")
    if fp is None:
        raise ValueError(
            "catalog lacks tokenizer_fingerprint: VIP5 models need the VIP5DataModule "
            "(mmrec.datamodules.vip5.VIP5DataModule) to build their prompts."
        )
    if fp != tokenizer_fp:
        raise ValueError(
            f"the datamodule tokenizes prompts with {catalog.get('tokenizer')!r} but the model's backbone "
            f"{backbone!r} has a different tokenizer; set data.init_args.tokenizer to the same hub id / "
            "directory as model.init_args.backbone."
        )


def load_checked_backbone(
    catalog: Mapping[str, Any], config: BackboneConfig, kind: BackboneKind
) -> tuple[PreTrainedModel, Any, str]:
    """Load a VIP5 backbone in train mode and check it tokenizes as the datamodule's prompts did.

    Args:
        catalog: the VIP5DataModule's catalogue (holds the prompts' tokenizer fingerprint).
        config: which backbone (:class:`~mmrec.models.vip5_config.BackboneConfig`).
        kind: ``seq2seq`` (T5 family) or ``encoder`` (BERT-like).

    Returns:
        ``(model, tokenizer, identity)``; ``identity`` names the frozen weights for checkpoints.
    """
    name = config.name
    loaded = load_backbone(name, kind, config.config, config.tokenizer, config.init_seed)
    loaded.model.train()  # from_pretrained returns eval mode; dropout follows the module's mode
    identity = backbone_identity(loaded.model, loaded.source, loaded.random_init, config.init_seed)
    check_catalog_tokens(catalog, tokenizer_fingerprint(loaded.tokenizer), str(loaded.source))
    return loaded.model, loaded.tokenizer, identity


def standardized(table: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Centre a feature table on its valid rows' mean and scale the rows to unit mean norm.

    Args:
        table: ``(N+1, D)`` features (row 0 padding).
        valid: ``(N+1,)`` bool, rows with a real vector.

    Returns:
        ``(N+1, D)`` float32; invalid rows (and row 0) stay zero.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [3.0, 1.0], [5.0, 1.0]])
        >>> standardized(x, torch.tensor([False, True, True]))
        tensor([[ 0.,  0.],
                [-1.,  0.],
                [ 1.,  0.]])
    """
    x = table.float()
    v = valid.bool()
    if not bool(v.any()):
        return torch.zeros_like(x)
    centred = torch.where(v.unsqueeze(1), x - x[v].mean(dim=0), torch.zeros_like(x))
    scale = centred[v].norm(dim=1).mean().clamp(min=1e-8)
    return centred / scale


def choose_features(catalog: Mapping[str, Any], features: Sequence[str] | None) -> list[str]:
    """Feature stores feeding the visual tokens: ``features``, else ``image`` when present, else the only one."""
    available = dict(catalog.get("feature_dims") or {})
    if features is not None:
        chosen = list(features)
    elif "image" in available:
        chosen = ["image"]
    elif len(available) == 1:
        chosen = list(available)
    else:
        chosen = []
    unknown = [f for f in chosen if f not in available]
    if unknown:
        raise ValueError(
            f"features {unknown} are not among the datamodule's stores {sorted(available) or 'none'}; add "
            "them to data.init_args.stores (name: store path) or fix model.init_args.features."
        )
    if int(catalog.get("visual_tokens", 0)) > 0 and not chosen:
        raise ValueError(
            "the prompts have visual placeholders (data.init_args.visual_tokens > 0) but no feature store "
            f"feeds them (stores: {sorted(available) or 'none'}); set model.init_args.features, add an image "
            "store to data.init_args.stores, or set visual_tokens: 0."
        )
    return chosen


def make_projector(in_dim: int, dim: int, num_tokens: int, hidden: int | None) -> nn.Module:
    """The visual projector of ``mmrec.adapters``: ``(..., in_dim) -> (..., num_tokens, dim)``."""
    return VisualProjector(dim, VisualProjectorConfig(in_dim=in_dim, k_tokens=num_tokens, hidden=hidden))


class PromptFeatures(nn.Module):
    """Adds whole-word embeddings to prompt embeddings and writes visual tokens at placeholders.

    Args:
        hidden: backbone width ``d``.
        feature_dims: name -> dim of the feature stores feeding the visual tokens (concatenated).
        visual_tokens: ``k`` tokens per item mention (0 = none).
        max_whole_words: whole-word table size (0 = no whole-word embeddings).
        projector_hidden: hidden width of the projector MLP (default ``d``).
        standardize: centre and scale each feature table when attached (:func:`standardized`).

    Shapes:
        ``forward(embeds (B, L, d), whole_word_ids (B, L), feature_items (B, L), feature_slots (B, L))
        -> (B, L, d)``.

    Example:
        >>> pf = PromptFeatures(8, {"image": 4}, visual_tokens=2, max_whole_words=16)  # doctest: +SKIP
        >>> pf.attach({"image": (torch.randn(3, 4), torch.ones(3, dtype=torch.bool))})  # doctest: +SKIP
    """

    features: torch.Tensor  # buffer (register_buffer in __init__)

    def __init__(
        self,
        hidden: int,
        feature_dims: Mapping[str, int],
        visual_tokens: int,
        max_whole_words: int,
        projector_hidden: int | None = None,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.standardize = bool(standardize)
        self.feature_names = list(feature_dims)
        self.in_dim = int(sum(feature_dims.values()))
        self.visual_tokens = int(visual_tokens)
        self.hidden = hidden
        self.whole_word: nn.Embedding | None = None
        if max_whole_words > 0:
            self.whole_word = nn.Embedding(max_whole_words, hidden)
            nn.init.zeros_(self.whole_word.weight)  # starts as the backbone's own embeddings, exactly
        self.projector: nn.Module | None = None
        if self.feature_names and self.in_dim > 0:
            self.projector = make_projector(self.in_dim, hidden, max(self.visual_tokens, 1), projector_hidden)
        self.register_buffer("features", torch.zeros(1, max(self.in_dim, 1)), persistent=False)
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached or not self.feature_names

    def attach(self, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Attach frozen feature tables ``name -> (features (N+1, D), valid (N+1,))`` (row 0 padding)."""
        missing = [n for n in self.feature_names if n not in tables]
        if missing:
            raise ValueError(
                f"feature tables {missing} are missing; the datamodule provides {sorted(tables)}."
            )
        parts = []
        for n in self.feature_names:
            vecs, valid = tables[n]
            if self.standardize:
                parts.append(standardized(vecs, valid))
            else:
                parts.append(vecs.float() * valid.unsqueeze(1).float())
        table = torch.cat(parts, dim=1)
        if table.shape[1] != self.in_dim:
            raise ValueError(
                f"feature tables have {table.shape[1]} columns, the projector expects {self.in_dim}."
            )
        self.features = table.to(self.features.device)
        self._attached = True

    def item_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens of item indices ``(...,)`` -> ``(..., k, d)``."""
        if self.projector is None:
            raise RuntimeError("this model has no visual projector (no feature stores).")
        if not self._attached:
            raise RuntimeError(
                "item features are not attached: run inside a Trainer with the VIP5DataModule, or call "
                "model.attach_data(datamodule.model_inputs())."
            )
        return self.projector(self.features[items])

    def forward(
        self,
        embeds: torch.Tensor,
        whole_word_ids: torch.Tensor,
        feature_items: torch.Tensor,
        feature_slots: torch.Tensor,
    ) -> torch.Tensor:
        if self.whole_word is not None:
            embeds = embeds + self.whole_word(whole_word_ids.clamp(0, self.whole_word.num_embeddings - 1))
        if self.projector is None or self.visual_tokens == 0:
            return embeds
        mask = feature_items > 0
        if not bool(mask.any()):
            return embeds
        uniq, inv = torch.unique(feature_items, return_inverse=True)  # project each item once
        tokens = self.item_tokens(uniq).to(embeds.dtype)  # (U, k, d)
        visual = tokens[inv, feature_slots.clamp(0, self.visual_tokens - 1)]  # (B, L, d)
        return torch.where(mask.unsqueeze(-1), visual, embeds)


def layer_norm_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every normalisation layer (LayerNorm, T5LayerNorm, RMSNorm...)."""
    params = dict(model.named_parameters())
    return [(n, params[n]) for n in layer_norm_params(model)]


def insert_vip5_adapters(
    backbone: nn.Module, config: AdapterConfig, *, train_layer_norms: bool, tasks: Sequence[str] = TASKS
) -> tuple[Any, nn.Module]:
    """Freeze ``backbone``, insert the adapter ``config.name`` through :func:`mmrec.adapters.create_adapter`,
    and unfreeze the backbone's layer norms when asked.

    Args:
        backbone: the loaded backbone.
        config: the adapter group (registry key and its options).
        train_layer_norms: train the backbone's normalisation layers.
        tasks: task families (one bottleneck adapter each when ``config.per_task``).

    Returns:
        ``(handle, modules)``: the adapter handle (``None`` for ``none``) and the module holding the
        hook-based adapter weights (register it on the LightningModule; empty for LoRA, whose weights
        live inside the backbone).
    """
    for p in backbone.parameters():
        p.requires_grad_(False)
    handle: Any = None
    modules: nn.Module = nn.ModuleDict()
    name = config.name
    if name == "none":
        pass
    elif ADAPTERS.meta(name).get("method") == "bottleneck":
        handle = create_adapter(
            name,
            backbone,
            reduction_factor=config.reduction_factor,
            dropout=config.dropout,
            tasks=list(tasks) if config.per_task else None,
        )
        modules = handle.modules
    elif name == "lora/peft":
        handle = create_adapter(
            name, backbone, r=config.lora_rank, alpha=config.lora_alpha, dropout=config.dropout
        )
    else:
        raise ValueError(f"VIP5 takes adapter {', '.join(map(repr, VIP5_ADAPTERS))} or 'none', got {name!r}.")
    if train_layer_norms:
        for _, p in layer_norm_parameters(backbone):
            p.requires_grad_(True)
    return handle, modules


@contextmanager
def routed(handle: Any, task_ids: torch.Tensor | str | None) -> Iterator[None]:
    """Route samples to their task's adapters when the adapters are per task; no-op otherwise."""
    router = getattr(handle, "router", None) if handle is not None else None
    ctx = handle.route(task_ids) if (router is not None and task_ids is not None) else nullcontext()
    with ctx:
        yield


class TrainedWeightsCheckpoint:
    """Mixin for LightningModules with a frozen ``self.backbone``: slim checkpoints, safe restores.

    ``on_save_checkpoint`` drops every frozen backbone weight (they come from ``backbone`` again) and
    records the backbone identity; ``on_load_checkpoint`` checks the identity and fills the dropped
    entries from the freshly loaded backbone, so Lightning's strict loading restores the trained weights
    exactly. The class needs ``self.backbone`` and ``self.backbone_identity``.
    """

    backbone: nn.Module
    backbone_identity: str

    def _frozen_backbone_keys(self, keys: Sequence[str]) -> list[str]:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}  # type: ignore[attr-defined]
        return [k for k in keys if k.startswith("backbone.") and k not in trainable]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint.get("state_dict")
        if sd is None:
            return
        dropped = self._frozen_backbone_keys(list(sd))
        for k in dropped:
            del sd[k]
        checkpoint["mmrec_frozen_backbone"] = {"identity": self.backbone_identity, "dropped": len(dropped)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("mmrec_frozen_backbone")
        sd = checkpoint.get("state_dict")
        if info is None or sd is None:
            return
        if info.get("identity") != self.backbone_identity:
            raise ValueError(
                f"this checkpoint was trained on backbone {info.get('identity')!r} but the model loaded "
                f"{self.backbone_identity!r}; load it with the same backbone (hub id / directory) it was "
                "trained with."
            )
        own = self.state_dict()  # type: ignore[attr-defined]
        for k in self._frozen_backbone_keys(list(own)):
            sd.setdefault(k, own[k])

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameter counts (printed by ``mmrec fit``)."""
        params = list(self.parameters())  # type: ignore[attr-defined]
        return {
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params),
        }


def trainable_summary(module: nn.Module) -> str:
    """Trainable parameters grouped by top-level component, e.g. for the log."""
    groups: dict[str, list[int]] = {}
    for name, p in module.named_parameters():
        top = name.split(".")[0]
        g = groups.setdefault(top, [0, 0])
        g[1] += p.numel()
        if p.requires_grad:
            g[0] += p.numel()
    total_t = sum(g[0] for g in groups.values())
    total = sum(g[1] for g in groups.values())
    parts = ", ".join(f"{k} {t:,}/{n:,}" for k, (t, n) in groups.items())
    return f"trainable {total_t:,} of {total:,} ({100.0 * total_t / max(total, 1):.2f}%): {parts}"
