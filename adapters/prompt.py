"""Soft prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021).

- mmrec's ``CausalTransformer``: our own, with hooks. *Soft prompt*: ``n`` learnable vectors are prepended
  to the input of the first block (after position embeddings, so the real items keep their positions) and
  stripped after the last block; every real item attends to all prompt vectors plus its own causal past
  (causality among real items is unchanged) and padded rows still attend to themselves (no NaN).
  *Prefix*: per block, ``n`` learnable key and value vectors are prepended to the block's keys and values
  (``TransformerBlock.forward(..., prefix_kv=...)``); every query may attend to them.
- transformers models (T5, BERT-like): peft's ``PromptTuningConfig`` / ``PrefixTuningConfig`` through
  ``get_peft_model``; the handle's :attr:`~PeftPromptHandle.model` is the ``PeftModel`` to call (with
  ``input_ids`` / ``attention_mask``: peft extends the mask), and for encoder-only models its
  ``last_hidden_state`` starts with the ``n`` prompt positions.

Neither is an identity at start (the prompts are attended to); ``handle.disable()`` gives the base output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mmrec.adapters.handle import AdapterHandle, get_arg, path_key, set_arg
from mmrec.adapters.insertion import Where, detect_family, normalize_where
from mmrec.adapters.registry import ADAPTERS
from mmrec.nn.sequence_encoder import CausalTransformer


@dataclass
class PromptConfig:
    """Settings of soft prompts and prefixes.

    Args:
        n_tokens: number of prompt (or prefix) vectors.
        init_std: standard deviation of their normal initialisation (mmrec backbones).
        task_type: peft task type for transformers backbones (``SEQ_2_SEQ_LM``, ``FEATURE_EXTRACTION``,
            ``SEQ_CLS``...); ``None`` = ``SEQ_2_SEQ_LM`` for encoder-decoders, else ``FEATURE_EXTRACTION``.

    Example:
        >>> PromptConfig(n_tokens=4).n_tokens
        4
    """

    n_tokens: int = 8
    init_std: float = 0.02
    task_type: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.n_tokens, int) and self.n_tokens >= 1):
            raise ValueError(f"n_tokens must be a positive integer, got {self.n_tokens!r}.")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}.")


class SoftPrompt(nn.Module):
    """``n`` learnable vectors prepended to a sequence.

    Args:
        n_tokens: number of vectors.
        dim: width.
        init_std: normal initialisation scale.

    Example:
        >>> SoftPrompt(3, 8)(batch_size=2).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, n_tokens: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_tokens, dim) * init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        """``(batch_size, n_tokens, dim)``."""
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)


class PrefixKV(nn.Module):
    """Per-block learnable key / value prefixes.

    Args:
        num_layers: blocks.
        n_tokens: prefix length per block.
        dim: model width (keys and values before the head split).
        init_std: normal initialisation scale.

    Example:
        >>> k, v = PrefixKV(2, 3, 8)(layer=1, batch_size=4)
        >>> k.shape
        torch.Size([4, 3, 8])
    """

    def __init__(self, num_layers: int, n_tokens: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(num_layers, n_tokens, dim) * init_std)
        self.values = nn.Parameter(torch.randn(num_layers, n_tokens, dim) * init_std)

    def forward(self, layer: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keys, values)`` of block ``layer``, each ``(batch_size, n_tokens, dim)``."""
        return (
            self.keys[layer].unsqueeze(0).expand(batch_size, -1, -1),
            self.values[layer].unsqueeze(0).expand(batch_size, -1, -1),
        )


def extend_causal_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Mask for ``n`` prompt positions placed before the sequence.

    Args:
        mask: ``(B, 1, L, L)`` bool (True = may attend).
        n: prompt length.

    Returns:
        ``(B, 1, n+L, n+L)``: prompts attend causally among themselves and never to the sequence; every
        sequence row attends to all prompts plus what ``mask`` allows.
    """
    b, h, length, _ = mask.shape
    pp = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril().expand(b, h, n, n)
    top = torch.cat([pp.to(mask.dtype), mask.new_zeros(b, h, n, length)], dim=-1)
    bottom = torch.cat([mask.new_ones(b, h, length, n), mask], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _causal_transformers(model: nn.Module) -> list[tuple[str, CausalTransformer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CausalTransformer)]


def _ref_param(module: nn.Module) -> torch.Tensor:
    p = next(module.parameters(), None)
    return p if p is not None else torch.zeros(())


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _hook_soft_prompt(handle: AdapterHandle, enc: CausalTransformer, prompt: SoftPrompt, n: int) -> None:
    last = len(enc.blocks) - 1

    def pre(i: int, args: tuple, kwargs: dict) -> Any:
        if not handle.enabled:
            return None
        x = get_arg(args, kwargs, 0, "x")
        mask = get_arg(args, kwargs, 1, "mask")
        if i == 0:
            x = torch.cat([prompt(x.shape[0]).to(x.dtype), x], dim=1)
            args, kwargs = set_arg(args, kwargs, 0, "x", x)
        args, kwargs = set_arg(args, kwargs, 1, "mask", extend_causal_mask(mask, n))
        return args, kwargs

    def post(mod: nn.Module, args: tuple, output: torch.Tensor) -> Any:
        return output[:, n:] if handle.enabled else None

    for i, block in enumerate(enc.blocks):
        handle.add_hook(
            block.register_forward_pre_hook(
                lambda mod, args, kwargs, i=i: pre(i, args, kwargs), with_kwargs=True
            )
        )
        if i == last:
            handle.add_hook(block.register_forward_hook(post))


def _mmrec_soft_prompt(
    model: nn.Module, encoders: list[tuple[str, CausalTransformer]], config: PromptConfig
) -> AdapterHandle:
    modules = nn.ModuleDict()
    handle = AdapterHandle(model, "prompt/soft", modules, [n for n, _ in encoders])
    for path, enc in encoders:
        dim = enc.positions.embedding_dim
        ref = _ref_param(enc)
        prompt = SoftPrompt(config.n_tokens, dim, config.init_std).to(ref.device, ref.dtype)
        modules[path_key(path)] = prompt
        _hook_soft_prompt(handle, enc, prompt, config.n_tokens)
    return handle


def _mmrec_prefix(
    model: nn.Module, encoders: list[tuple[str, CausalTransformer]], config: PromptConfig
) -> AdapterHandle:
    modules = nn.ModuleDict()
    handle = AdapterHandle(model, "prompt/prefix", modules, [n for n, _ in encoders])
    for path, enc in encoders:
        dim = enc.positions.embedding_dim
        ref = _ref_param(enc)
        prefix = PrefixKV(len(enc.blocks), config.n_tokens, dim, config.init_std).to(ref.device, ref.dtype)
        modules[path_key(path)] = prefix
        for i, block in enumerate(enc.blocks):

            def pre(mod: nn.Module, args: tuple, kwargs: dict, i: int = i, prefix: PrefixKV = prefix) -> Any:
                if not handle.enabled:
                    return None
                x = get_arg(args, kwargs, 0, "x")
                k, v = prefix(i, x.shape[0])
                return args, {**kwargs, "prefix_kv": (k.to(x.dtype), v.to(x.dtype))}

            handle.add_hook(block.register_forward_pre_hook(pre, with_kwargs=True))
    return handle


class PeftPromptHandle(AdapterHandle):
    """Handle of a peft prompt-learning wrapper: call :attr:`model` (the ``PeftModel``); :attr:`base_model`
    is the unchanged backbone; :attr:`modules` is peft's ``prompt_encoder``."""

    def __init__(self, peft_model: nn.Module, base_model: nn.Module, method: str) -> None:
        super().__init__(peft_model, method, peft_model.prompt_encoder, ["prompt_encoder"])
        self.base_model = base_model

    @contextmanager
    def disable(self) -> Iterator[None]:
        # What ``PeftModel.disable_adapter`` does for prompt learning, without its failure on models that
        # have no ``prepare_inputs_for_generation`` (encoder-only feature extraction, peft 0.21).
        with super().disable():  # checks the handle is alive; `enabled` is False inside
            pm: Any = self.model  # the PeftModel: its forward is swapped for the base model's
            names = ("forward", "prepare_inputs_for_generation")
            saved = {k: pm.__dict__[k] for k in names if k in pm.__dict__}
            was_disabled = getattr(pm, "_adapters_disabled", False)
            pm.forward = pm.base_model.forward
            if hasattr(pm.base_model, "prepare_inputs_for_generation"):
                pm.prepare_inputs_for_generation = pm.base_model.prepare_inputs_for_generation
            pm._adapters_disabled = True
            try:
                yield
            finally:
                for k in names:
                    pm.__dict__.pop(k, None)
                pm.__dict__.update(saved)
                pm._adapters_disabled = was_disabled

    def set_enabled(self, enabled: bool) -> None:
        raise NotImplementedError("peft prompt wrappers switch off only inside `with handle.disable():`.")

    def remove(self) -> None:
        """Give the unwrapped backbone back in :attr:`model` (peft prompt learning never modified it)."""
        if self._removed:
            return
        self.model = self.base_model
        super().remove()


def _peft_prompt(model: nn.Module, config: PromptConfig, kind: Literal["soft", "prefix"]) -> PeftPromptHandle:
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    task_type = config.task_type
    if task_type is None:
        enc_dec = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        task_type = "SEQ_2_SEQ_LM" if enc_dec else "FEATURE_EXTRACTION"
    cls = PromptTuningConfig if kind == "soft" else PrefixTuningConfig
    peft_config = cls(task_type=task_type, num_virtual_tokens=config.n_tokens)
    peft_model = get_peft_model(model, peft_config, adapter_name="mmrec")
    return PeftPromptHandle(peft_model, model, f"prompt/{kind}")


def _insert(
    kind: Literal["soft", "prefix"],
    model: nn.Module,
    config: PromptConfig | None,
    where: Where,
    freeze_backbone: bool,
    attach_as: str | None,
    overrides: dict[str, Any],
) -> AdapterHandle:
    config = config or PromptConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    encoders = _causal_transformers(model)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    if encoders:
        scopes = normalize_where(where)
        if scopes is not None and set(scopes) != {"sequence"}:
            raise ValueError(
                f"prompt / prefix tuning applies to the sequence encoder only; got where={list(scopes)}: "
                "use where=('sequence',) (or None)."
            )
        if freeze_backbone:
            _freeze(model)
        build = _mmrec_soft_prompt if kind == "soft" else _mmrec_prefix
        handle = build(model, encoders, config)
        if attach_as is not None:
            handle.attach(attach_as)
        return handle
    family = detect_family(model)  # raises for unsupported models
    if where is not None:
        raise ValueError(
            f"where= is not used for {family} backbones: peft prepends the prompt to the encoder input; "
            "leave where=None."
        )
    if attach_as is not None:
        raise ValueError("attach_as is not supported for peft prompt wrappers: call handle.model instead.")
    handle = _peft_prompt(model, config, kind)
    for p in model.parameters():
        p.requires_grad_(False if freeze_backbone else flags.get(id(p), p.requires_grad))
    for p in handle.modules.parameters():
        p.requires_grad_(True)
    return handle


@ADAPTERS.register("prompt/soft", method="prompt", label="prompt", default_where=("sequence",))
def insert_soft_prompt(
    model: nn.Module,
    config: PromptConfig | None = None,
    *,
    where: Where = None,
    freeze_backbone: bool = True,
    attach_as: str | None = None,
    **overrides: Any,
) -> AdapterHandle:
    """Prepend ``n_tokens`` learnable vectors to the backbone's input sequence.

    Args:
        model: an mmrec model containing a ``CausalTransformer`` (own implementation, hooks), or a T5 /
            BERT-like transformers model (peft ``PromptTuningConfig``; call ``handle.model``).
        config: :class:`PromptConfig`.
        where: ``None`` or ``("sequence",)`` for mmrec; ``None`` for transformers models.
        freeze_backbone: freeze every backbone parameter.
        attach_as: register the prompt module on the (mmrec) model under this name.
        **overrides: fields of :class:`PromptConfig`.

    Returns:
        an :class:`AdapterHandle` (:class:`PeftPromptHandle` for transformers models).

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2, "max_len": 4}, dim=16, num_layers=1)
        >>> h = insert_soft_prompt(m, n_tokens=2)
        >>> m.query_vectors({"input_ids": torch.tensor([[0, 1, 2, 3]])}).shape
        torch.Size([1, 16])
    """
    return _insert("soft", model, config, where, freeze_backbone, attach_as, overrides)


@ADAPTERS.register("prompt/prefix", method="prompt", label="prefix", default_where=("sequence",))
def insert_prefix(
    model: nn.Module,
    config: PromptConfig | None = None,
    *,
    where: Where = None,
    freeze_backbone: bool = True,
    attach_as: str | None = None,
    **overrides: Any,
) -> AdapterHandle:
    """Prepend ``n_tokens`` learnable key/value vectors to every attention block.

    Args: as :func:`insert_soft_prompt` (peft ``PrefixTuningConfig`` for transformers models).

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=2)
        >>> h = insert_prefix(m, n_tokens=3)
        >>> [n for n, _ in h.modules.named_parameters()]
        ['encoder.keys', 'encoder.values']
    """
    return _insert("prefix", model, config, where, freeze_backbone, attach_as, overrides)
