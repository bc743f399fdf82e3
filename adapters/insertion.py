"""Where adapters go in each backbone family, and forward-hook insertion of bottleneck adapters.

Insertion points (:class:`InsertionPoint`) are found by structure, per family:

==============  ==========================================================  =======================
family          sites (module whose output is adapted)                       scope
==============  ==========================================================  =======================
T5 / mT5        ``block.i.layer.0.SelfAttention`` (attn),                    ``encoder`` / ``decoder``
                ``block.i.layer.1.EncDecAttention`` (cross_attn, decoders),
                ``block.i.layer.-1.DenseReluDense`` (ffn)
BERT-like       ``layer.i.attention.output.dense`` (attn),                    ``encoder`` (``decoder``
(BERT, MiniLM,  ``layer.i.crossattention.output.dense`` (cross_attn),          for ``is_decoder``)
RoBERTa...)     ``layer.i.output.dense`` (ffn)
mmrec           ``blocks.i.attn_out`` (attn), ``blocks.i.ffn_out`` (ffn)     ``sequence``
mmrec items     ``items.projectors.<name>`` and ``items`` (the fused output)  ``item``
==============  ==========================================================  =======================

Every site is the sub-layer's output *before* the residual add (and before dropout/LayerNorm where the
backbone applies them), which is where Houlsby and VIP5 put their adapters. A parallel adapter reads the
sub-layer's input instead (T5: the normed hidden states entering the attention/FFN; BERT: the residual
input of ``BertSelfOutput`` / ``BertOutput``; mmrec: the normed input of ``qkv`` / ``ffn_in``; a feature
projector: the raw frozen feature). The item encoder's fused output has no input, so every placement is
serial there, and its padding row 0 stays zero.

Adapters are applied by forward hooks, so backbone ``state_dict`` names never change; the adapter weights
live in the handle's ``nn.ModuleDict`` keyed by the site path (``.`` -> ``-``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from mmrec.adapters.bottleneck import BottleneckAdapter, BottleneckConfig
from mmrec.adapters.handle import AdapterHandle, get_arg, module_dtype, path_key
from mmrec.adapters.registry import ADAPTERS
from mmrec.adapters.routing import DeltaModule, TaskAdapters, TaskRouter
from mmrec.nn.item_encoder import ItemEncoder
from mmrec.nn.sequence_encoder import TransformerBlock

SCOPES: tuple[str, ...] = ("encoder", "decoder", "item", "sequence")
Where = str | Sequence[str] | None


@dataclass(frozen=True)
class InsertionPoint:
    """One place an adapter can be attached.

    Attributes:
        path: dotted path of the module whose output is adapted.
        kind: ``attn``, ``cross_attn``, ``ffn`` or ``item``.
        scope: ``encoder``, ``decoder``, ``sequence`` or ``item``.
        block: path of the enclosing transformer block (or item encoder).
        dim: width of the adapted output.
        input_path: module whose call argument is the sub-layer input (parallel adapters); ``None`` when the
            site has no input (the item encoder output).
        input_arg: ``(position, keyword)`` of that argument.
        input_dim: width of the sub-layer input.
        output_index: index of the hidden states when the module returns a tuple (T5 attention), else None.
        batch_major: the first dimension is the batch (False for per-item tables), needed for routing.
        keep_row0: keep row 0 (padding item) unchanged.
        family: ``t5``, ``bert`` or ``mmrec``.
    """

    path: str
    kind: str
    scope: str
    block: str
    dim: int
    input_path: str | None = None
    input_arg: tuple[int, str] = (0, "hidden_states")
    input_dim: int | None = None
    output_index: int | None = None
    batch_major: bool = True
    keep_row0: bool = False
    family: str = "mmrec"

    @property
    def key(self) -> str:
        """Key of this site's adapter in the handle's ``ModuleDict``."""
        return path_key(self.path)


# ---------------------------------------------------------------------------------------------- discovery
def _is_t5_block(m: nn.Module) -> bool:
    layer = getattr(m, "layer", None)
    return (
        isinstance(layer, nn.ModuleList)
        and len(layer) >= 2
        and hasattr(layer[0], "SelfAttention")
        and hasattr(layer[-1], "DenseReluDense")
    )


def _is_bert_layer(m: nn.Module) -> bool:
    attention = getattr(m, "attention", None)
    output = getattr(m, "output", None)
    return (
        hasattr(m, "intermediate")
        and hasattr(getattr(attention, "output", None), "dense")
        and hasattr(output, "dense")
    )


def _linear_out(m: nn.Module) -> int:
    out = getattr(m, "out_features", None)
    if out is None:  # a wrapped layer (peft) keeps the base layer inside
        out = m.get_base_layer().out_features  # type: ignore[operator]
    return int(out)


def _t5_points(path: str, block: Any) -> list[InsertionPoint]:  # a transformers T5Block, by structure
    scope = "decoder" if getattr(block, "is_decoder", False) else "encoder"
    sa = block.layer[0].SelfAttention
    d = int(getattr(sa, "d_model", _linear_out(sa.o)))
    last = len(block.layer) - 1
    points = [
        InsertionPoint(
            f"{path}.layer.0.SelfAttention",
            "attn",
            scope,
            path,
            d,
            f"{path}.layer.0.SelfAttention",
            (0, "hidden_states"),
            d,
            output_index=0,
            family="t5",
        )
    ]
    if len(block.layer) == 3 and hasattr(block.layer[1], "EncDecAttention"):
        points.append(
            InsertionPoint(
                f"{path}.layer.1.EncDecAttention",
                "cross_attn",
                scope,
                path,
                d,
                f"{path}.layer.1.EncDecAttention",
                (0, "hidden_states"),
                d,
                output_index=0,
                family="t5",
            )
        )
    ffn = f"{path}.layer.{last}.DenseReluDense"
    points.append(InsertionPoint(ffn, "ffn", scope, path, d, ffn, (0, "hidden_states"), d, family="t5"))
    return points


def _bert_points(path: str, layer: Any) -> list[InsertionPoint]:  # a transformers BertLayer, by structure
    scope = "decoder" if getattr(layer, "is_decoder", False) else "encoder"
    d = _linear_out(layer.attention.output.dense)
    points = [
        InsertionPoint(
            f"{path}.attention.output.dense",
            "attn",
            scope,
            path,
            d,
            f"{path}.attention.output",
            (1, "input_tensor"),
            d,
            family="bert",
        )
    ]
    cross = getattr(layer, "crossattention", None)
    if cross is not None and hasattr(getattr(cross, "output", None), "dense"):
        points.append(
            InsertionPoint(
                f"{path}.crossattention.output.dense",
                "cross_attn",
                scope,
                path,
                d,
                f"{path}.crossattention.output",
                (1, "input_tensor"),
                d,
                family="bert",
            )
        )
    points.append(
        InsertionPoint(
            f"{path}.output.dense",
            "ffn",
            scope,
            path,
            _linear_out(layer.output.dense),
            f"{path}.output",
            (1, "input_tensor"),
            d,
            family="bert",
        )
    )
    return points


def _mmrec_block_points(path: str, block: TransformerBlock) -> list[InsertionPoint]:
    d = _linear_out(block.attn_out)
    return [
        InsertionPoint(f"{path}.attn_out", "attn", "sequence", path, d, f"{path}.qkv", (0, "input"), d),
        InsertionPoint(f"{path}.ffn_out", "ffn", "sequence", path, d, f"{path}.ffn_in", (0, "input"), d),
    ]


def _item_points(path: str, enc: ItemEncoder) -> list[InsertionPoint]:
    prefix = f"{path}." if path else ""
    points = []
    for name in enc.feature_names:
        proj: Any = enc.projectors[name]  # a FeatureProjector: its net starts with the input LayerNorm
        in_dim = int(proj.net[0].normalized_shape[0])
        p = f"{prefix}projectors.{name}"
        points.append(
            InsertionPoint(p, "item", "item", path, enc.dim, p, (0, "x"), in_dim, batch_major=False)
        )
    points.append(
        InsertionPoint(path, "item", "item", path, enc.dim, None, batch_major=False, keep_row0=True)
    )
    return points


def find_insertion_points(model: nn.Module, where: Where = None) -> list[InsertionPoint]:
    """Every adapter insertion point of ``model`` (in module order), optionally restricted to scopes.

    Args:
        model: a T5 / BERT-like transformers model, an mmrec model (anything containing mmrec
            ``TransformerBlock`` s or an ``ItemEncoder``), or a module wrapping any of them.
        where: scopes to keep (``"encoder"``, ``"decoder"``, ``"sequence"``, ``"item"``); ``None`` = all.

    Returns:
        the :class:`InsertionPoint` s.

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 5, "num_users": 2}, dim=8, num_layers=1)
        >>> [p.path for p in find_insertion_points(m, where="sequence")]
        ['encoder.blocks.0.attn_out', 'encoder.blocks.0.ffn_out']
    """
    points: list[InsertionPoint] = []
    for path, m in model.named_modules():
        if isinstance(m, TransformerBlock):
            points += _mmrec_block_points(path, m)
        elif isinstance(m, ItemEncoder):
            points += _item_points(path, m)
        elif _is_t5_block(m):
            points += _t5_points(path, m)
        elif _is_bert_layer(m):
            points += _bert_points(path, m)
    return select_scopes(points, where)


def available_scopes(model: nn.Module) -> list[str]:
    """Scopes that have insertion points in ``model`` (e.g. ``['encoder', 'decoder']``)."""
    return _ordered_scopes(find_insertion_points(model))


def _ordered_scopes(points: Sequence[InsertionPoint]) -> list[str]:
    seen: list[str] = []
    for p in points:
        if p.scope not in seen:
            seen.append(p.scope)
    return seen


def normalize_where(where: Where) -> tuple[str, ...] | None:
    """``where`` as a tuple of known scope names (``None`` stays ``None``)."""
    if where is None:
        return None
    scopes = (where,) if isinstance(where, str) else tuple(where)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"where must name scopes among {SCOPES}, got {list(scopes)}.")
    return scopes


def select_scopes(points: list[InsertionPoint], where: Where) -> list[InsertionPoint]:
    """Keep the points whose scope is in ``where`` (every named scope must exist)."""
    scopes = normalize_where(where)
    if scopes is None:
        return points
    have = _ordered_scopes(points)
    missing = [s for s in scopes if s not in have]
    if missing:
        raise ValueError(
            f"the model has no insertion points in scope(s) {missing}; it has {have or 'none'} "
            "(T5: encoder/decoder; BERT-like: encoder; mmrec: item/sequence)."
        )
    return [p for p in points if p.scope in scopes]


def detect_family(model: nn.Module) -> str:
    """``t5``, ``bert`` or ``mmrec``: the family of the first insertion point found in ``model``."""
    points = find_insertion_points(model)
    if not points:
        raise ValueError(
            f"no adapter insertion points found in {type(model).__name__}: supported are T5 / mT5, BERT-like "
            "encoders (BERT, MiniLM, RoBERTa...) and mmrec's CausalTransformer / ItemEncoder."
        )
    return points[0].family


# ---------------------------------------------------------------------------------------------- insertion
def _replace_output(output: Any, index: int | None, value: torch.Tensor) -> Any:
    if index is None:
        return value
    items = list(output)
    items[index] = value
    return tuple(items)


def _make_delta(
    adapter: nn.Module, router: TaskRouter | None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    dtype = module_dtype(adapter)

    def delta(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype)
        if router is None:
            out = cast(DeltaModule, adapter).delta(x)  # a single adapter (BottleneckAdapter)
        else:
            assert isinstance(adapter, TaskAdapters)
            out = adapter.delta(x, router.current(h.shape[0], h.device))
        return out.to(h.dtype)

    return delta


def _register_site(
    handle: AdapterHandle,
    model: nn.Module,
    point: InsertionPoint,
    adapter: nn.Module,
    parallel: bool,
    stash: dict[str, torch.Tensor],
) -> None:
    module = model.get_submodule(point.path)
    delta = _make_delta(adapter, handle.router)
    use_input = parallel and point.input_path is not None
    same_module = use_input and point.input_path == point.path

    if use_input and not same_module:
        assert point.input_path is not None
        source = model.get_submodule(point.input_path)

        def stash_input(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if handle.enabled:
                stash[point.path] = get_arg(args, kwargs, *point.input_arg)

        handle.add_hook(source.register_forward_pre_hook(stash_input, with_kwargs=True))

    def apply(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if not handle.enabled:
            stash.pop(point.path, None)
            return None
        h = output if point.output_index is None else output[point.output_index]
        if not use_input:
            x = h
        elif same_module:
            x = get_arg(args, kwargs, *point.input_arg)
        else:
            x = stash.pop(point.path, None)
        if x is None:
            raise RuntimeError(
                f"parallel adapter at {point.path!r} did not see its sub-layer input "
                f"({point.input_path!r}, argument {point.input_arg}); the backbone's forward differs from "
                "what mmrec.adapters expects: use a serial placement (houlsby/pfeiffer) for this model."
            )
        new = h + delta(x, h)
        if point.keep_row0:
            new = torch.cat([h[:1], new[1:]], dim=0)
        return _replace_output(output, point.output_index, new)

    handle.add_hook(module.register_forward_hook(apply, with_kwargs=True))


def insert_adapters(
    model: nn.Module,
    config: BottleneckConfig | str | None = None,
    *,
    where: Where = None,
    freeze_backbone: bool = True,
    attach_as: str | None = None,
    **overrides: Any,
) -> AdapterHandle:
    """Insert bottleneck adapters into ``model`` with forward hooks and (by default) freeze the rest.

    Args:
        model: T5 / BERT-like / mmrec backbone (see the module docstring for the sites).
        config: a :class:`BottleneckConfig`, or a placement name (``"houlsby"``, ``"pfeiffer"``,
            ``"parallel"``); ``None`` = Houlsby defaults.
        where: scopes to adapt (``("encoder", "decoder")`` for T5, ``("item", "sequence")`` for mmrec...);
            ``None`` = every scope the model has.
        freeze_backbone: set ``requires_grad=False`` on every parameter of ``model`` before inserting
            (including adapters attached to it earlier: combine methods with ``freeze_backbone=False`` or
            re-select afterwards with :func:`~mmrec.adapters.freeze.freeze_all_but`).
        attach_as: also register the adapter modules on ``model`` under this attribute name (so
            ``model.parameters()`` / ``state_dict()`` include them); ``None`` = the caller registers
            ``handle.modules`` itself.
        **overrides: fields of :class:`BottleneckConfig` (``reduction_factor=16``, ``tasks=[...]``...).

    Returns:
        an :class:`AdapterHandle` (``modules``, ``disable()``, ``route()``, ``remove()``).

    Example:
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=2)
        >>> h = insert_adapters(m, "pfeiffer", where="sequence")
        >>> h.sites
        ['encoder.blocks.0.ffn_out', 'encoder.blocks.1.ffn_out']
    """
    if config is None or isinstance(config, str):
        config = BottleneckConfig(**({"placement": config} if config else {}), **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not isinstance(config, BottleneckConfig):
        raise TypeError(
            f"config must be a BottleneckConfig or a placement name, got {type(config).__name__}."
        )
    points = find_insertion_points(model)
    if not points:
        detect_family(model)  # raises the explanatory error
    points = select_scopes(points, where)
    points = [p for p in points if p.kind == "item" or p.kind in config.site_kinds]
    if not points:
        raise ValueError(
            f"no insertion point matches sites={list(config.site_kinds)} in scopes {where}; "
            f"the model has {[p.kind for p in find_insertion_points(model, where)]}."
        )
    if config.tasks is not None:
        per_item = [p.path for p in points if not p.batch_major]
        if per_item:
            raise ValueError(
                f"per-task adapters are routed per sample, but {per_item} adapt per-item tables, not batch "
                "rows; leave 'item' out of where= or use tasks=None (one shared adapter)."
            )
    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
    router = TaskRouter(config.tasks) if config.tasks is not None else None
    modules = nn.ModuleDict()
    handle = AdapterHandle(model, f"bottleneck/{config.placement}", modules, [p.path for p in points], router)
    stash: dict[str, torch.Tensor] = {}
    ref = next(model.parameters(), None)
    for point in points:
        in_dim = point.input_dim if (config.parallel and point.input_path is not None) else None

        def factory(point: InsertionPoint = point, in_dim: int | None = in_dim) -> BottleneckAdapter:
            return BottleneckAdapter(point.dim, config, in_dim=in_dim)

        adapter: nn.Module = TaskAdapters(config.tasks, factory) if config.tasks is not None else factory()
        if ref is not None:
            adapter.to(device=ref.device, dtype=ref.dtype if ref.dtype.is_floating_point else None)
        modules[point.key] = adapter
        _register_site(handle, model, point, adapter, config.parallel, stash)
    handle.add_cleanup(stash.clear)
    if attach_as is not None:
        handle.attach(attach_as)
    return handle


def _placement_builder(placement: str) -> Any:
    def build(model: nn.Module, **options: Any) -> AdapterHandle:
        return insert_adapters(model, placement, **options)

    build.__name__ = f"insert_{placement}_adapters"
    build.__doc__ = f"``insert_adapters(model, {placement!r}, **options)``: {placement} bottleneck adapters."
    return build


for _placement in ("houlsby", "pfeiffer", "parallel"):
    ADAPTERS.register(f"bottleneck/{_placement}", method="bottleneck", label=_placement)(
        _placement_builder(_placement)
    )
