"""Prompt templates as data: loading and checking a VIP5 / P5 template file (YAML or JSON).

A template file holds, per task family (``sequential``, ``direct``, ``explanation``), a list of templates
with an ``id``, a ``split`` (``seen``: trained on and evaluated; ``unseen``: held out, evaluated only), a
``source`` text with ``{field}`` slots and a ``target`` text. The packaged default is
``mmrec/prompts/vip5_templates.yaml`` (:data:`DEFAULT_TEMPLATES`); its header documents the fields.

Example:
    >>> ts = load_templates()
    >>> [t.id for t in ts.group("sequential", "unseen")]
    ['A-9']
    >>> ts.get("B-6").kind, ts.get("B-6").fields
    ('choose', ('user', 'candidates'))
    >>> ts.get("C-7").target_fields
    ('rating', 'explanation')
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

TASKS: tuple[str, ...] = ("sequential", "direct", "explanation")
TEMPLATE_SPLITS: tuple[str, ...] = ("seen", "unseen")
DIRECT_KINDS: tuple[str, ...] = ("yes_no", "choose")
#: the kinds each task family takes ("" = the family's plain kind)
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "sequential": ("", "yes_no"),
    "direct": DIRECT_KINDS,
    "explanation": ("",),
}
#: fields that name the item of a single-item prompt (one of them is required where an item is)
ITEM_FIELDS: frozenset[str] = frozenset({"item", "item_title"})

#: per template key: (allowed source fields, required fields, fields of which at least one is required)
SOURCE_FIELDS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "sequential": ({"user", "history"}, {"history"}, set()),
    "sequential:yes_no": ({"user", "history", "item", "item_title"}, {"history"}, set(ITEM_FIELDS)),
    "direct:yes_no": ({"user", "item", "item_title"}, set(), set(ITEM_FIELDS)),
    "direct:choose": ({"user", "candidates"}, {"candidates"}, set()),
    "explanation": (
        {"user", "item", "item_title", "rating", "headline", "feature"},
        set(),
        set(ITEM_FIELDS),
    ),
}
#: per template key: the allowed target texts
TARGETS: dict[str, tuple[str, ...]] = {
    "sequential": ("{target}",),
    "sequential:yes_no": ("{answer}",),
    "direct:yes_no": ("{answer}",),
    "direct:choose": ("{target}",),
    "explanation": ("{explanation}", "{rating} , {explanation}"),
}
#: source fields whose values come from the dataset's columns (templates needing absent ones are dropped)
DATA_FIELDS: dict[str, str] = {"headline": "a review headline / summary column", "item_title": "item titles"}


class TemplateError(ValueError):
    """A template file is malformed; the message names the template and the fix."""


def default_templates_path() -> Path:
    """The packaged template file (``mmrec/prompts/vip5_templates.yaml``)."""
    return Path(str(resources.files("mmrec.prompts") / "vip5_templates.yaml"))


DEFAULT_TEMPLATES = "vip5_templates.yaml"


def _fields(text: str, where: str) -> tuple[str, ...]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise TemplateError(f"{where}: cannot parse {text!r} ({e}); write slots as {{name}}.") from None
    out = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name or spec or conv:
            raise TemplateError(f"{where}: slot {{{name}}} must be a bare name such as {{user}}.")
        out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class Template:
    """One prompt template.

    Attributes:
        id: unique id (e.g. ``"A-1"``).
        task: ``sequential`` / ``direct`` / ``explanation``.
        split: ``seen`` (trained on) or ``unseen`` (held out for zero-shot evaluation).
        source: input text with ``{field}`` slots.
        target: the output: ``{target}`` (an item identifier), ``{answer}`` (yes / no), ``{explanation}`` or
            ``{rating} , {explanation}``.
        kind: direct templates: ``yes_no`` or ``choose``; sequential: empty (next item) or ``yes_no`` (is
            this item next?); explanation: empty.
        index: position in :attr:`TemplateSet.templates` (the integer id carried by batches).
    """

    id: str
    task: str
    split: str
    source: str
    target: str
    kind: str = ""
    index: int = 0

    @property
    def fields(self) -> tuple[str, ...]:
        """The source slots in order of appearance."""
        return _fields(self.source, self.id)

    @property
    def key(self) -> str:
        """``task`` or ``task:<kind>``: selects the allowed fields and targets."""
        return f"{self.task}:{self.kind}" if self.kind else self.task

    @property
    def target_fields(self) -> tuple[str, ...]:
        """The target slots in order (``("rating", "explanation")`` for C-7)."""
        return _fields(self.target, self.id)


@dataclass(frozen=True)
class TemplateSet:
    """All templates of a file plus its formatting options.

    Attributes:
        templates: every template, ``templates[t.index] is t``.
        user_format: how a user identifier is written, ``{id}`` = the user's number.
        item_format: how an item identifier is written, ``{id}`` = the item's identifier number.
        list_separator: between the items of ``{history}`` / ``{candidates}``.
        answers: ``{"positive": "yes", "negative": "no"}`` for yes/no templates.
        source_file: where the set was read from.
    """

    templates: tuple[Template, ...]
    user_format: str = "user_{id}"
    item_format: str = "{id}"
    list_separator: str = " , "
    answers: Mapping[str, str] = field(default_factory=lambda: {"positive": "yes", "negative": "no"})
    source_file: str = ""

    def get(self, template_id: str) -> Template:
        """The template with this id."""
        for t in self.templates:
            if t.id == template_id:
                return t
        raise KeyError(f"no template {template_id!r}; known: {[t.id for t in self.templates]}")

    def group(self, task: str, split: str | None = None, kind: str | None = None) -> list[Template]:
        """Templates of one task (optionally one split and one kind; ``kind=""`` = the plain kind), in
        file order."""
        return [
            t
            for t in self.templates
            if t.task == task and (split is None or t.split == split) and (kind is None or t.kind == kind)
        ]

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (ids per task and split), e.g. for the model's hyper-parameters."""
        return {task: {s: [t.id for t in self.group(task, s)] for s in TEMPLATE_SPLITS} for task in TASKS}

    def kinds(self) -> dict[str, str]:
        """Template id -> kind (``""`` for a family's plain kind)."""
        return {t.id: t.kind for t in self.templates}

    def select(self, keep: Callable[[Template], bool]) -> TemplateSet:
        """The templates for which ``keep`` is true (re-indexed), with the same formatting options.

        Example:
            >>> ts = load_templates().select(lambda t: t.task == "sequential" and t.kind == "")
            >>> [t.id for t in ts.templates][-2:], ts.templates[-1].index
            (['A-6', 'A-9'], 6)
        """
        kept = [t for t in self.templates if keep(t)]
        return replace(self, templates=tuple(replace(t, index=i) for i, t in enumerate(kept)))


def _check_template(t: Template, where: str) -> None:
    if t.task not in TASKS:
        raise TemplateError(f"{where}: unknown task {t.task!r}; use one of {TASKS}.")
    if t.split not in TEMPLATE_SPLITS:
        raise TemplateError(f"{where}: split must be 'seen' or 'unseen', got {t.split!r}.")
    kinds = TASK_KINDS[t.task]
    if t.kind not in kinds:
        shown = [k or "(none)" for k in kinds]
        raise TemplateError(f"{where}: {t.task} templates take kind {shown}, got {t.kind!r}.")
    allowed, required, one_of = SOURCE_FIELDS[t.key]
    fields = t.fields
    unknown = [f for f in fields if f not in allowed]
    if unknown:
        raise TemplateError(
            f"{where}: source slots {unknown} are not available for {t.key} templates; use {sorted(allowed)}."
        )
    missing = required - set(fields)
    if missing:
        raise TemplateError(f"{where}: source must contain {sorted('{' + m + '}' for m in missing)}.")
    if one_of and not one_of & set(fields):
        raise TemplateError(f"{where}: source must contain one of {sorted('{' + m + '}' for m in one_of)}.")
    if len(fields) != len(set(fields)):
        raise TemplateError(f"{where}: each slot may appear once in the source.")
    if t.target not in TARGETS[t.key]:
        # the target is exactly a slot: constrained decoding builds one trie over item identifiers
        raise TemplateError(f"{where}: target must be one of {list(TARGETS[t.key])}, got {t.target!r}.")


def parse_templates(data: Mapping[str, Any], source_file: str = "<dict>") -> TemplateSet:
    """Build and check a :class:`TemplateSet` from parsed YAML / JSON.

    Raises:
        TemplateError: with the offending template id and the fix.
    """
    if not isinstance(data, Mapping) or "tasks" not in data:
        raise TemplateError(
            f"{source_file}: expected a mapping with a 'tasks' key (see {DEFAULT_TEMPLATES})."
        )
    templates: list[Template] = []
    seen_ids: set[str] = set()
    tasks = data["tasks"]
    if not isinstance(tasks, Mapping):
        raise TemplateError(f"{source_file}: 'tasks' must map task names to lists of templates.")
    for task, items in tasks.items():
        if task not in TASKS:
            raise TemplateError(f"{source_file}: unknown task {task!r}; use one of {TASKS}.")
        for raw in items or []:
            tid = str(raw.get("id", ""))
            where = f"{source_file}: template {tid or '?'} ({task})"
            if not tid:
                raise TemplateError(f"{where}: every template needs an id.")
            if tid in seen_ids:
                raise TemplateError(f"{where}: duplicate id {tid!r}.")
            unknown_keys = set(raw) - {"id", "split", "kind", "source", "target"}
            if unknown_keys:
                raise TemplateError(f"{where}: unknown keys {sorted(unknown_keys)}.")
            seen_ids.add(tid)
            t = Template(
                id=tid,
                task=task,
                split=str(raw.get("split", "seen")),
                source=" ".join(str(raw.get("source", "")).split()),
                target=str(raw.get("target", "")).strip(),
                kind=str(raw.get("kind", "")),
                index=len(templates),
            )
            _check_template(t, where)
            templates.append(t)
    answers = dict(data.get("answers") or {"positive": "yes", "negative": "no"})
    if set(answers) != {"positive", "negative"} or answers["positive"] == answers["negative"]:
        raise TemplateError(
            f"{source_file}: answers must be {{positive: yes, negative: no}} (two different words)."
        )
    ts = TemplateSet(
        templates=tuple(templates),
        user_format=str(data.get("user_format", "user_{id}")),
        item_format=str(data.get("item_format", "{id}")),
        list_separator=str(data.get("list_separator", " , ")),
        answers=answers,
        source_file=source_file,
    )
    for fmt_name in ("user_format", "item_format"):
        if _fields(getattr(ts, fmt_name), fmt_name) != ("id",):
            raise TemplateError(f"{source_file}: {fmt_name} must contain exactly one {{id}} slot.")
    return ts


def load_templates(path: str | os.PathLike[str] | None = None) -> TemplateSet:
    """Read a template file (YAML or JSON); ``None`` reads the packaged VIP5 templates.

    Args:
        path: a ``.yaml`` / ``.yml`` / ``.json`` file, or ``None``.

    Example:
        >>> len(load_templates().group("explanation", "seen"))
        11
    """
    p = (
        default_templates_path()
        if path is None or str(path) == DEFAULT_TEMPLATES
        else Path(path).expanduser()
    )
    if not p.is_file():
        raise TemplateError(
            f"template file {p} does not exist; give a YAML/JSON template file or leave templates unset for "
            f"the packaged default ({default_templates_path()})."
        )
    text = p.read_text(encoding="utf-8")
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    return parse_templates(data, source_file=str(p))


def require_templates(ts: TemplateSet, tasks: Sequence[str], splits: Sequence[str] = ("seen",)) -> None:
    """Check that every task has at least one template of each requested split."""
    for task in tasks:
        for split in splits:
            if not ts.group(task, split):
                raise TemplateError(
                    f"{ts.source_file}: task {task!r} has no {split!r} template; add one (split: {split})."
                )


TemplateSplit = Literal["seen", "unseen"]
