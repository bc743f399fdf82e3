"""The handle every adapter insertion returns: owns the adapter modules, the hooks, and the on/off switch.

Adapters are inserted with forward hooks (or, for LoRA, by peft's layer replacement), so the backbone's own
``state_dict`` names do not change. The trainable adapter weights live in :attr:`AdapterHandle.modules`,
an ``nn.Module`` the caller registers on its LightningModule (or that ``attach_as=`` registers on the
backbone) so that they train, move between devices and are saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mmrec.adapters.routing import TaskIds, TaskRouter


class AdapterHandle:
    """Owner of the adapters inserted into one backbone.

    Args:
        model: the backbone the adapters were inserted into (what to call).
        method: registry key of the adapter method (``bottleneck/houlsby``...), for reports.
        modules: the trainable adapter modules (an ``nn.ModuleDict``); register it on your LightningModule.
        sites: names of the insertion points (module paths in ``model``).
        router: per-task routing state (``None`` for a single shared adapter).

    Example:
        >>> from mmrec.adapters import insert_adapters
        >>> from mmrec.models import SASRec
        >>> m = SASRec(catalog={"num_items": 9, "num_users": 2}, dim=16, num_layers=1).eval()
        >>> handle = insert_adapters(m, "houlsby", where=("sequence",))
        >>> len(handle.sites)
        2
        >>> with handle.disable():
        ...     _ = m.item_vectors()
        >>> handle.remove()
    """

    _enabled: bool
    _removed: bool

    def __init__(
        self,
        model: nn.Module,
        method: str,
        modules: nn.Module | None = None,
        sites: Sequence[str] = (),
        router: TaskRouter | None = None,
    ) -> None:
        self.model = model
        self.method = method
        self.modules: nn.Module = modules if modules is not None else nn.ModuleDict()
        self.sites: list[str] = list(sites)
        self.router = router
        self._enabled = True
        self._removed = False
        self._hooks: list[RemovableHandle] = []
        self._cleanups: list[Callable[[], None]] = []
        self._attached_as: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """Whether the adapters currently act (hooks check it on every call)."""
        return self._enabled and not self._removed

    def set_enabled(self, enabled: bool) -> None:
        """Switch the adapters on or off (off = the base model's output, exactly)."""
        self._check_alive()
        self._enabled = bool(enabled)

    @contextmanager
    def disable(self) -> Iterator[None]:
        """Context manager in which the backbone computes exactly its base output.

        Example:
            >>> with handle.disable():  # doctest: +SKIP
            ...     base_logits = model(**batch).logits
        """
        self._check_alive()
        previous = self._enabled
        self._enabled = False
        try:
            yield
        finally:
            self._enabled = previous

    @contextmanager
    def route(self, task_ids: TaskIds) -> Iterator[None]:
        """Route each sample of the next forward(s) to its task's adapters.

        Args:
            task_ids: ``(B,)`` long tensor of task indices (order of ``config.tasks``), a list of task names
                (one per sample), or one task name for the whole batch.

        With activation (gradient) checkpointing the forward is re-run during ``backward()``: call
        ``backward()`` inside the same ``with`` block. Under DDP, a batch may leave some task's adapters
        unused: set ``find_unused_parameters=True``.

        Example:
            >>> with handle.route(["sequential", "direct", "sequential"]):  # doctest: +SKIP
            ...     out = model(**batch)
        """
        self._check_alive()
        if self.router is None:
            raise RuntimeError(
                f"{self.method} adapters were inserted with one shared adapter (config.tasks is None); "
                "pass tasks=[...] to the insertion function to get per-task adapters and routing."
            )
        with self.router.route(task_ids):
            yield

    # ------------------------------------------------------------------ bookkeeping (used by inserters)
    def add_hook(self, hook: RemovableHandle) -> None:
        """Keep a hook handle so :meth:`remove` can take it out."""
        self._hooks.append(hook)

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Register an undo action run (in reverse order) by :meth:`remove`."""
        self._cleanups.append(fn)

    def attach(self, name: str) -> None:
        """Register :attr:`modules` on the backbone as submodule ``name`` (so ``model.parameters()``
        and ``model.state_dict()`` include the adapters); :meth:`remove` detaches it again."""
        self._check_alive()
        if hasattr(self.model, name):
            raise ValueError(f"the model already has an attribute {name!r}; pass another attach_as= name.")
        self.model.add_module(name, self.modules)
        self._attached_as = name

    @property
    def attached_as(self) -> str | None:
        """Attribute name under which :attr:`modules` is registered on the backbone, if any."""
        return self._attached_as

    # ------------------------------------------------------------------ queries
    def parameters(self) -> Iterator[nn.Parameter]:
        """The adapter parameters (those of :attr:`modules`)."""
        return self.modules.parameters()

    def num_parameters(self) -> int:
        """Number of adapter parameters."""
        return sum(p.numel() for p in self.parameters())

    def parameter_names(self) -> list[str]:
        """Adapter parameter names relative to :attr:`modules`."""
        return [n for n, _ in self.modules.named_parameters()]

    # ------------------------------------------------------------------ teardown
    def remove(self) -> None:
        """Take every hook out, undo module changes and detach :attr:`modules`; the backbone is as before
        insertion (its ``requires_grad`` flags excepted: use :func:`mmrec.adapters.freeze.freeze_all_but`)."""
        if self._removed:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for fn in reversed(self._cleanups):
            fn()
        self._cleanups.clear()
        if self._attached_as is not None and self._attached_as in self.model._modules:
            del self.model._modules[self._attached_as]
        self._attached_as = None
        self._removed = True

    def _check_alive(self) -> None:
        if self._removed:
            raise RuntimeError(f"this {self.method} handle was removed; insert the adapters again.")

    def __repr__(self) -> str:
        state = "removed" if self._removed else ("enabled" if self._enabled else "disabled")
        tasks = f", tasks={list(self.router.tasks)}" if self.router is not None else ""
        return (
            f"{type(self).__name__}(method={self.method!r}, sites={len(self.sites)}, "
            f"params={self.num_parameters():,}{tasks}, {state})"
        )


def get_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """The call argument at position ``index`` or keyword ``name`` (``None`` when absent)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def set_arg(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, value: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` with the argument at ``index`` / ``name`` replaced by ``value``."""
    if len(args) > index:
        args = (*args[:index], value, *args[index + 1 :])
    else:
        kwargs = {**kwargs, name: value}
    return args, kwargs


def module_dtype(module: nn.Module) -> torch.dtype:
    """dtype of the first parameter of ``module`` (float32 when it has none)."""
    for p in module.parameters():
        return p.dtype
    return torch.float32


def path_key(path: str) -> str:
    """A module path as an ``nn.ModuleDict`` key (dots are not allowed there): ``a.b.0`` -> ``a-b-0``;
    a key that would shadow a ``ModuleDict`` attribute (``items``, ``keys``...) gets ``-site`` appended."""
    key = path.replace(".", "-") if path else "root"
    return f"{key}-site" if hasattr(nn.ModuleDict, key) else key
