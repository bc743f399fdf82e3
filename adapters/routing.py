"""Per-task adapters routed per sample (VIP5's one adapter per task family, in a mixed batch).

The caller says which task each sample belongs to for the next forward (``with handle.route(task_ids):``);
every insertion point then computes each task's adapter on that task's rows only (a loop over tasks, not
over samples, with ``index_select`` / ``index_put``), so a batch mixing tasks costs one forward and each
row gets exactly the output it would get alone with its task's adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, cast

import torch
from torch import nn

TaskIds = torch.Tensor | Sequence[str] | Sequence[int] | str


def check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate a list of task names (non-empty, unique, usable as module names)."""
    if tasks is None:
        return None
    if isinstance(tasks, str):
        raise TypeError(f"tasks must be a list of names, got the string {tasks!r}; write tasks=[{tasks!r}].")
    out = tuple(str(t) for t in tasks)
    if not out:
        raise ValueError("tasks is empty: give at least one task name, or tasks=None for one shared adapter.")
    if len(set(out)) != len(out):
        raise ValueError(f"task names must be unique, got {list(out)}.")
    bad = [t for t in out if not t or "." in t]
    if bad:
        raise ValueError(f"task names must be non-empty and contain no '.', got {bad}.")
    return out


class TaskRouter:
    """Holds the ``(B,)`` task index of each sample for the forward being computed.

    Args:
        tasks: task names; a sample's index refers to this order.

    Example:
        >>> r = TaskRouter(["sequential", "direct"])
        >>> with r.route(["direct", "sequential"]):
        ...     r.current(2, torch.device("cpu")).tolist()
        [1, 0]
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        checked = check_tasks(tasks)
        assert checked is not None
        self.tasks: tuple[str, ...] = checked
        self._current: torch.Tensor | str | None = None

    def index(self, task: str | int) -> int:
        """Index of a task name (ints are checked and returned)."""
        if isinstance(task, int):
            if not 0 <= task < len(self.tasks):
                raise IndexError(f"task index {task} out of range for tasks {list(self.tasks)}.")
            return task
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(
                f"unknown task {task!r}; the adapters were built for {list(self.tasks)}."
            ) from None

    def to_tensor(self, task_ids: TaskIds) -> torch.Tensor | str:
        """Normalise ``task_ids`` to a ``(B,)`` long tensor (or keep one task name for a whole batch)."""
        if isinstance(task_ids, str):
            self.index(task_ids)
            return task_ids
        if isinstance(task_ids, torch.Tensor):
            if task_ids.dim() != 1 or task_ids.dtype in (torch.float16, torch.float32, torch.float64):
                raise ValueError(
                    f"task_ids must be a (B,) integer tensor, got shape {tuple(task_ids.shape)} "
                    f"dtype {task_ids.dtype}."
                )
            ids = task_ids.long()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.tasks)):
                raise IndexError(f"task_ids must lie in [0, {len(self.tasks)}) for tasks {list(self.tasks)}.")
            return ids
        return torch.tensor([self.index(t) for t in task_ids], dtype=torch.long)

    @contextmanager
    def route(self, task_ids: TaskIds) -> Iterator[None]:
        """Set the routing for the enclosed forward(s); nests (the previous routing comes back after)."""
        previous = self._current
        self._current = self.to_tensor(task_ids)
        try:
            yield
        finally:
            self._current = previous

    def current(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The ``(batch_size,)`` task indices for the tensor being adapted.

        A batch expanded by an integer factor (beam search repeats each sample ``num_beams`` times in a row)
        gets each sample's task repeated accordingly.
        """
        cur = self._current
        if cur is None:
            raise RuntimeError(
                f"per-task adapters {list(self.tasks)} need a routing: run the forward inside "
                "`with handle.route(task_ids):` (a (B,) tensor of task indices, a list of task names, or "
                "one task name for the whole batch)."
            )
        if isinstance(cur, str):
            return torch.full((batch_size,), self.tasks.index(cur), dtype=torch.long, device=device)
        ids = cur.to(device)
        n = ids.shape[0]
        if n == batch_size:
            return ids
        if n and batch_size % n == 0:
            return ids.repeat_interleave(batch_size // n)
        raise ValueError(
            f"the routing has {n} task ids but the adapted tensor has batch size {batch_size}; "
            "give one task id per sample of the batch."
        )


class DeltaModule(Protocol):
    """What :class:`TaskAdapters` needs of each task's adapter (e.g. a ``BottleneckAdapter``)."""

    def delta(self, x: torch.Tensor) -> torch.Tensor: ...


class TaskAdapters(nn.Module):
    """One adapter per task; :meth:`delta` applies each sample's own task adapter.

    Args:
        tasks: task names (the keys of :attr:`per_task`).
        factory: builds one adapter (a module with ``delta(x) -> (..., out_dim)``).

    Example:
        >>> from mmrec.adapters.bottleneck import BottleneckAdapter
        >>> ta = TaskAdapters(["a", "b"], lambda: BottleneckAdapter(8))
        >>> ta.delta(torch.randn(3, 5, 8), torch.tensor([0, 1, 0])).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, tasks: Sequence[str], factory: Callable[[], nn.Module]) -> None:
        super().__init__()
        checked = check_tasks(tasks)
        assert checked is not None
        self.tasks = checked
        self.per_task = nn.ModuleDict({t: factory() for t in checked})

    def _adapter(self, name: str) -> DeltaModule:
        return cast(DeltaModule, self.per_task[name])  # built by `factory`: modules with delta(x)

    def delta(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Per-sample adapter deltas.

        Args:
            x: ``(B, ..., in_dim)`` adapter input.
            task_ids: ``(B,)`` task index of each row.

        Returns:
            ``(B, ..., out_dim)``: row ``b`` is ``adapter[task_ids[b]].delta(x[b])``.
        """
        if task_ids.shape[0] != x.shape[0]:
            raise ValueError(f"task_ids has {task_ids.shape[0]} entries for a batch of {x.shape[0]}.")
        out: torch.Tensor | None = None
        for t, name in enumerate(self.tasks):
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            adapter = self._adapter(name)
            if rows.numel() == x.shape[0]:  # the whole batch is one task
                return adapter.delta(x)
            part = adapter.delta(x.index_select(0, rows))
            if out is None:
                out = part.new_zeros((x.shape[0], *part.shape[1:]))
            out = out.index_put((rows,), part)
        if out is None:  # empty batch
            return self._adapter(self.tasks[0]).delta(x)
        return out
