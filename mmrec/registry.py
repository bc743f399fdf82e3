"""Registries: one per kind of extension (encoders, adapters, models, converters, ...).

Entries are keyed ``family/name`` with an optional ``.tag`` (``open_clip/ViT-B-32.openai``). A registry
is an ordinary object owned by the module that defines the kind of thing, never a process-wide global
dict shared across kinds, and each registry has one ``create`` factory.

Entries register themselves: the module that defines an entry decorates it with ``@REG.register(key)``.
Nothing keeps a list of those modules. The first lookup (``get`` / ``create`` / ``list`` / ``in`` /
iteration) *discovers* the entries: it imports every module of the registry's ``packages`` and every module
named by the Python entry points of its ``entry_point_group``, so a third-party package adds an encoder or
a model by declaring, in its own ``pyproject.toml``::

    [project.entry-points."mmrec.encoders"]
    my_encoders = "my_package.my_encoders"      # a module that registers into mmrec.encoders.ENCODERS

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
import importlib
import importlib.metadata
import logging
import pkgutil
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_KEY = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-.@]+$")


class Registry(Generic[T]):
    """A named mapping ``family/name[.tag]`` -> builder, with wildcard listing.

    Args:
        kind: what the registry holds, used in error messages (``"encoder"``, ``"adapter"``...).
        packages: packages whose modules (recursively) are imported on the first lookup, so that the
            entries they define register themselves.
        entry_point_group: Python entry-point group whose modules are imported on the first lookup
            (third-party extensions), e.g. ``"mmrec.encoders"``.
    """

    def __init__(
        self, kind: str, *, packages: Sequence[str] = (), entry_point_group: str | None = None
    ) -> None:
        self.kind = kind
        self.packages = tuple(packages)
        self.entry_point_group = entry_point_group
        self._builders: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict] = {}
        self._discovered = not self.packages and entry_point_group is None
        self._discovering = False

    # ------------------------------------------------------------------ discovery
    def discover(self) -> None:
        """Import the modules that define entries (idempotent; runs once, on the first lookup).

        A module whose import fails because an *optional third-party* dependency is missing is skipped
        (logged at debug level); any other import error propagates.
        """
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            for package in self.packages:
                pkg = importlib.import_module(package)
                prefix = pkg.__name__ + "."
                for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix):
                    _import_optional(info.name)
            if self.entry_point_group:
                for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                    try:
                        ep.load()
                    except Exception as e:  # a broken plug-in must not break the toolkit
                        log.warning("%s plug-in %r (%s) failed to load: %s", self.kind, ep.name, ep.value, e)
            self._discovered = True
        finally:
            self._discovering = False

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
        self.discover()
        return key in self._builders

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        self.discover()
        return len(self._builders)

    def meta(self, key: str) -> dict:
        """Metadata given at registration."""
        self._check(key)
        return dict(self._meta[key])

    def list(self, pattern: str = "*", **meta_filter: object) -> list[str]:
        """Sorted keys matching a shell-style ``pattern`` and, optionally, metadata values."""
        self.discover()
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

    def key_of(self, builder: object) -> str | None:
        """The key ``builder`` is registered under (``None`` when it is not registered)."""
        self.discover()
        for key, b in self._builders.items():
            if b is builder:
                return key
        return None

    def _check(self, key: str) -> None:
        self.discover()
        if key not in self._builders:
            close = difflib.get_close_matches(key, list(self._builders), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            available = ", ".join(sorted(self._builders)) or "(none)"
            raise KeyError(f"unknown {self.kind} {key!r}.{hint} Registered: {available}.")


def _import_optional(module: str) -> None:
    """Import ``module``; skip it when a third-party dependency it needs is not installed."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if not missing or missing == "mmrec" or module.startswith(missing):
            raise
        log.debug("skipping %s: optional dependency %r is not installed", module, missing)
