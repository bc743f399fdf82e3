"""Grouped, typed settings of the VIP5 models (read from YAML by jsonargparse / LightningCLI).

Each group is a frozen dataclass that checks its values when built and says how to fix a wrong one:

- :class:`BackboneConfig` (``backbone:``): which frozen language model, how to load it;
- :class:`AdapterConfig` (``adapter:``): the parameter-efficient method, by its ``mmrec.adapters`` registry
  key (``bottleneck/houlsby``, ``bottleneck/pfeiffer``, ``bottleneck/parallel``, ``lora/peft``) or ``none``;
- :class:`PromptFeatureConfig` (``features:``): which feature stores become the prompt's visual tokens;
- :class:`OptimConfig` (``optim:``): AdamW and its warm-up;
- :class:`RankingHeadConfig` (``head:``) and :class:`RankingEvalConfig` (``metrics:``): the
  encoder-only ranking head (:class:`~mmrec.models.vip5_ranking.VIP5Ranking`);
- :class:`GenerationEvalConfig` (``decoding:``): decoding and metrics of the generative VIP5
  (:class:`~mmrec.models.vip5.VIP5`).

(The datamodule's groups -- ``prompts``, ``training``, ``direct``, ``explanation``, ``evaluation`` -- live in
:mod:`mmrec.datamodules.vip5_config`; no group name is shared, so Lightning can log both sets of
hyper-parameters.)

In YAML::

    model:
      class_path: mmrec.models.VIP5Ranking
      init_args:
        backbone: {name: minilm}
        adapter: {name: bottleneck/houlsby, reduction_factor: 8}
        features: {stores: [image, text]}
        head: {temperature: 0.1}
        optim: {lr: 0.002}

and on the command line ``--model.init_args.adapter.name lora/peft``.

Example:
    >>> AdapterConfig(name="lora/peft", lora_rank=4).lora_rank
    4
    >>> AdapterConfig(name="houlsby")
    Traceback (most recent call last):
    ...
    ValueError: adapter.name 'houlsby' is not a VIP5 adapter; use one of 'bottleneck/houlsby', 'bottleneck/pfeiffer', 'bottleneck/parallel', 'lora/peft' or 'none' (the mmrec.adapters registry keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mmrec.config_groups import as_config, plain

VIP5_ADAPTERS: tuple[str, ...] = ("bottleneck/houlsby", "bottleneck/pfeiffer", "bottleneck/parallel", "lora/peft")
"""Adapter registry keys (:data:`mmrec.adapters.ADAPTERS`) a VIP5 backbone takes (besides ``none``)."""


def _positive(group: str, name: str, value: float, hint: str) -> None:
    if not value > 0:
        raise ValueError(f"{group}.{name} must be > 0, got {value!r}; {hint}.")


def _ks(group: str, ks: tuple[int, ...]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"{group}.eval_ks must be positive cut-offs such as [1, 5, 10], got {list(ks)}.")
    return ks



@dataclass(frozen=True)
class BackboneConfig:
    """The frozen language backbone.

    Args:
        name: hub id, local ``save_pretrained`` directory, or ``minilm`` (the bundled all-MiniLM-L6-v2,
            encoder-only) -- T5-family for :class:`~mmrec.models.vip5.VIP5`, BERT-like for the ranking head.
        config: tests only: config fields (with ``model_type``) for a random init instead of weights.
        tokenizer: tokenizer source when it differs from ``name`` (required with ``config``).
        init_seed: seeds the random init of ``config``.
        train_layer_norms: train the backbone's layer norms (VIP5 does).
    """

    name: str = "minilm"
    config: dict[str, Any] | None = None
    tokenizer: str | None = None
    init_seed: int = 0
    train_layer_norms: bool = True

    def __post_init__(self) -> None:
        if not str(self.name).strip() and self.config is None:
            raise ValueError(
                "backbone.name is empty: give a hub id (t5-small), a local directory, or minilm."
            )
        if self.config is not None and "model_type" not in self.config:
            raise ValueError(
                "backbone.config needs a model_type (t5 for VIP5, bert for the ranking head), e.g. "
                "{model_type: t5, d_model: 32, num_layers: 2}."
            )


@dataclass(frozen=True)
class AdapterConfig:
    """The parameter-efficient method inserted into the frozen backbone.

    Args:
        name: ``mmrec.adapters`` registry key: ``bottleneck/houlsby`` (VIP5's default), ``bottleneck/pfeiffer``,
            ``bottleneck/parallel``, ``lora/peft``; or ``none`` (full fine-tuning of nothing but the
            heads, layer norms and whole-word embeddings).
        reduction_factor: bottleneck hidden size = backbone width / ``reduction_factor``.
        dropout: dropout inside the adapters / on the LoRA branch.
        per_task: one bottleneck adapter per task family, routed per sample (generative VIP5 only).
        lora_rank: LoRA rank.
        lora_alpha: LoRA scaling alpha.
    """

    name: str = "bottleneck/houlsby"
    reduction_factor: float = 8
    dropout: float = 0.0
    per_task: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16

    def __post_init__(self) -> None:
        if self.name not in (*VIP5_ADAPTERS, "none"):
            raise ValueError(
                f"adapter.name {self.name!r} is not a VIP5 adapter; use one of "
                f"{', '.join(map(repr, VIP5_ADAPTERS))} or 'none' (the mmrec.adapters registry keys)."
            )
        _positive("adapter", "reduction_factor", self.reduction_factor, "8 is VIP5's")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"adapter.dropout must be in [0, 1), got {self.dropout}.")
        if self.lora_rank < 1:
            raise ValueError(f"adapter.lora_rank must be >= 1, got {self.lora_rank}; 8 is common.")
        _positive("adapter", "lora_alpha", self.lora_alpha, "16 is common")
        if self.per_task and self.name == "lora/peft":
            raise ValueError("LoRA adapters are shared by every task; set adapter.per_task: false.")


@dataclass(frozen=True)
class PromptFeatureConfig:
    """Which item features become the prompt's visual tokens, and how.

    Args:
        stores: the datamodule's feature stores concatenated and projected to the ``k`` tokens after every
            item mention (default: ``image`` when the datamodule has it, else its only store).
        projector_hidden: hidden width of the visual projector MLP (default: ``k * d / 2``, as VIP5).
        whole_word_embeddings: add P5's whole-word embeddings (trained, zero-initialised).
        standardize: centre every store on its catalogue mean and scale its rows to unit mean norm before
            projecting. Raw CNN / sentence features share a large common component (about half their
            energy on the demo) that otherwise makes every item's tokens nearly the same.
    """

    stores: list[str] | None = None
    projector_hidden: int | None = None
    whole_word_embeddings: bool = True
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.projector_hidden is not None and self.projector_hidden < 1:
            raise ValueError(f"features.projector_hidden must be >= 1 or null, got {self.projector_hidden}.")
        if self.stores is not None and len(set(self.stores)) != len(self.stores):
            raise ValueError(f"features.stores lists a store twice: {self.stores}.")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW over the trained parameters, with an optional linear warm-up.

    Args:
        lr: learning rate.
        weight_decay: decoupled weight decay.
        warmup_steps: linear warm-up steps (0 = none).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _positive("optim", "lr", self.lr, "1e-3 is a good start")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"optim.weight_decay and optim.warmup_steps must be >= 0, got {self.weight_decay}, "
                f"{self.warmup_steps}."
            )


@dataclass(frozen=True)
class GenerationEvalConfig:
    """Evaluation of the generative VIP5.

    Args:
        eval_ks: cut-offs of HR@k / NDCG@k (sequential: each <= ``num_beams``; direct: on candidates).
        num_beams: beams of constrained sequential decoding = items ranked; MRR is ``mrr@<num_beams>``.
        length_penalty: beam-search length penalty (0 = rank identifiers by total log-likelihood).
        explanation_beams: beams for explanation generation.
        explanation_max_tokens: longest generated explanation.
        candidate_chunk: candidates scored per decoder pass in direct evaluation (memory bound).
    """

    eval_ks: tuple[int, ...] = (1, 5, 10)
    num_beams: int = 20
    length_penalty: float = 0.0
    explanation_beams: int = 1
    explanation_max_tokens: int = 40
    candidate_chunk: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_ks", _ks("decoding", self.eval_ks))
        for name in ("num_beams", "explanation_beams", "explanation_max_tokens", "candidate_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoding.{name} must be >= 1, got {getattr(self, name)}.")
        if max(self.eval_ks) > self.num_beams:
            raise ValueError(
                f"decoding.eval_ks {list(self.eval_ks)} go beyond the {self.num_beams} decoded items; raise "
                f"decoding.num_beams to >= {max(self.eval_ks)} or lower the cut-offs."
            )


@dataclass(frozen=True)
class RankingHeadConfig:
    """The query and item towers of the encoder-only ranking head (see
    :class:`~mmrec.models.vip5_ranking.VIP5Ranking` for the formulas).

    Args:
        item_stores: feature stores of the item tower (default: every store of the datamodule).
        id_embedding: add a learned item ID embedding to the item tower.
        user_embedding: add a learned user embedding to the query (the user's identity).
        history_residual: add the mean of the history items' vectors to the query.
        popularity_prior: a learned item bias, initialised at the log training popularity.
        pooling: ``items`` (mean over the history items' identifier and visual-token positions), ``mean``
            (every prompt token) or ``cls``.
        dim: width of the query / item vectors (default: the backbone width).
        temperature: softmax temperature of the cosine scores.
        future_weight: weight of the loss on the training items that follow the target (the batches'
            ``future_items``; the datamodule's ``training.future_targets`` sets how many); 0 = next item only.
        mask_history_in_training: leave the prompt's history items out of the training softmax (they are
            masked at evaluation too), unless the target repeats one.
    """

    item_stores: list[str] | None = None
    id_embedding: bool = True
    user_embedding: bool = True
    history_residual: bool = True
    popularity_prior: bool = True
    pooling: Literal["items", "mean", "cls"] = "items"
    dim: int | None = None
    temperature: float = 0.1
    future_weight: float = 1.0
    mask_history_in_training: bool = True

    def __post_init__(self) -> None:
        if self.pooling not in ("items", "mean", "cls"):
            raise ValueError(f"head.pooling must be 'items', 'mean' or 'cls', got {self.pooling!r}.")
        _positive("head", "temperature", self.temperature, "0.05-0.2 works for cosine scores")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"head.dim must be >= 1 or null (the backbone width), got {self.dim}.")
        if self.future_weight < 0:
            raise ValueError(f"head.future_weight must be >= 0 (0 = next item only), got {self.future_weight}.")


@dataclass(frozen=True)
class RankingEvalConfig:
    """Evaluation of the ranking head (exact full ranking).

    Args:
        eval_ks: cut-offs of HR@k / NDCG@k.
        predict_k: items returned per user by ``predict``.
    """

    eval_ks: tuple[int, ...] = (1, 5, 10, 20)
    predict_k: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_ks", _ks("metrics", self.eval_ks))
        if self.predict_k < 1:
            raise ValueError(f"metrics.predict_k must be >= 1, got {self.predict_k}.")


__all__ = [
    "VIP5_ADAPTERS",
    "AdapterConfig",
    "BackboneConfig",
    "GenerationEvalConfig",
    "OptimConfig",
    "PromptFeatureConfig",
    "RankingEvalConfig",
    "RankingHeadConfig",
    "as_config",
    "plain",
]
