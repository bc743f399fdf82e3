"""Registries: one per kind of extension (encoders, adapters, models, converters, ...).

Entries are keyed ``family/name`` with an optional ``.tag`` (``open_clip/ViT-B-32.openai``). A registry
is an ordinary object owned by the module that defines the kind of thing, never a process-wide global
dict shared across kinds, and each registry has one ``create`` factory.

Example:
    >>> from mmrec.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("toy/square")
    ... def square(side: int = 2) -> int:
    ...     return side * side
    >>> shapes.create("toy/square", side=3)
    9
    >>> shapes.list("toy/*")
    ['toy/square']
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_KEY = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-.@]+$")


class Registry(Generic[T]):
    """A named mapping ``family/name[.tag]`` -> builder, with wildcard listing.

    Args:
        kind: what the registry holds, used in error messages (``"encoder"``, ``"adapter"``...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict] = {}

    def register(self, key: str, **meta: object) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``builder`` under ``key`` (``family/name``).

        Args:
            key: ``family/name`` or ``family/name.tag``.
            **meta: free-form metadata (e.g. ``tiny=True`` for test-sized variants).
        """
        if not _KEY.match(key):
            raise ValueError(
                f"{self.kind} key {key!r} is not of the form 'family/name[.tag]' "
                "(letters, digits, '-', '_'; one '/')."
            )

        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            if key in self._builders and self._builders[key] is not builder:
                raise KeyError(f"{self.kind} {key!r} is already registered; pick another name.")
            self._builders[key] = builder
            self._meta[key] = dict(meta)
            return builder

        return deco

    def __contains__(self, key: str) -> bool:
        return key in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def meta(self, key: str) -> dict:
        """Metadata given at registration."""
        self._check(key)
        return dict(self._meta[key])

    def list(self, pattern: str = "*", **meta_filter: object) -> list[str]:
        """Sorted keys matching a shell-style ``pattern`` and, optionally, metadata values."""
        keys = [k for k in sorted(self._builders) if fnmatch.fnmatchcase(k, pattern)]
        if meta_filter:
            keys = [k for k in keys if all(self._meta[k].get(a) == v for a, v in meta_filter.items())]
        return keys

    def get(self, key: str) -> Callable[..., T]:
        """The builder registered under ``key``."""
        self._check(key)
        return self._builders[key]

    def create(self, key: str, /, **kwargs: object) -> T:
        """Build the entry registered under ``key`` with ``kwargs``."""
        return self.get(key)(**kwargs)

    def _check(self, key: str) -> None:
        if key not in self._builders:
            close = difflib.get_close_matches(key, list(self._builders), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            available = ", ".join(sorted(self._builders)) or "(none)"
            raise KeyError(f"unknown {self.kind} {key!r}.{hint} Registered: {available}.")
