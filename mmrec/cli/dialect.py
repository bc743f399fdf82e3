"""The one config dialect of every ``mmrec`` command (jsonargparse, as LightningCLI).

Every command reads its options from a typed dataclass or a typed signature, so every command takes:

- ``--config FILE`` (YAML; repeatable, later files and flags win);
- ``--print_config`` (the complete resolved config, loadable again with ``--config``);
- dotted overrides ``--a.b=v`` / ``--a.b v`` into nested dataclasses, mappings and ``init_args``;
- ``--flag`` alone for a boolean (``--flag false`` to turn it off);
- list items by index: ``--data.sources.0.dataset=x``, ``--encoders.1.batch_size=16``.

``class_path`` values may be registry keys (``sequential/sasrec``, ``data/sequential``) as well as full
dotted paths: :func:`load_mmrec_yaml` (this dialect's YAML loader) resolves them through
``mmrec.models.MODELS`` and ``mmrec.datamodules.DATAMODULES``.

Parse errors become one readable line (:func:`explain`): the key, what was wrong, and a "did you mean"
for misspelt keys (also inside ``init_args``), instead of jsonargparse's Union-subtype traces.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Job:
    ...     name: str = "demo"
    ...     epochs: int = 1
    >>> p = new_parser("mmrec job")
    >>> _ = p.add_class_arguments(Job, "job")
    >>> parse(p, ["--job.epochs=3"]).job.epochs
    3
    >>> try:
    ...     parse(p, ["--job.epoch=3"])
    ... except UsageError as e:
    ...     print(e)
    unknown option '--job.epoch'. Did you mean '--job.epochs' or '--job.name' or '--job'?
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, get_loader, set_loader

from mmrec.cli.common import UsageError, did_you_mean, listing, load, shorten

PARSER_MODE = "mmrec"
#: registries whose keys may stand for a ``class_path`` (kind, "module:attr")
CLASS_REGISTRIES: tuple[tuple[str, str], ...] = (
    ("model", "mmrec.models.registry:MODELS"),
    ("datamodule", "mmrec.datamodules.registry:DATAMODULES"),
)


# --------------------------------------------------------------------------------------------- registry keys
def class_path_of(key: str) -> str:
    """The dotted class path of a model / datamodule registry key.

    Raises:
        UsageError: no registry knows ``key`` (the message suggests the closest keys).

    Example:
        >>> class_path_of("data/sequential")
        'mmrec.datamodules.sequential.SequentialDataModule'
    """
    known: list[str] = []
    for _, spec in CLASS_REGISTRIES:
        registry = load(spec)
        if key in registry:
            cls = registry.get(key)
            return f"{cls.__module__}.{cls.__qualname__}"
        known.extend(registry)
    raise UsageError(
        f"unknown class_path {shorten(key)!r}.{did_you_mean(key, known)} Registered: {listing(known, 40)}."
    )


def registry_key_of(class_path: str) -> str | None:
    """The registry key of a dotted class path, when the class is registered (else ``None``)."""
    for _, spec in CLASS_REGISTRIES:
        registry = load(spec)
        for key in registry:
            cls = registry.get(key)
            if f"{cls.__module__}.{cls.__qualname__}" == class_path or (
                class_path.rsplit(".", 1)[-1] == cls.__name__ and class_path.startswith("mmrec.")
            ):
                return key
    return None


def resolve_registry_keys(value: Any) -> Any:
    """``value`` with every ``class_path: family/name`` replaced by the registered class's dotted path."""
    if isinstance(value, dict):
        out = {k: resolve_registry_keys(v) for k, v in value.items()}
        cp = out.get("class_path")
        if isinstance(cp, str) and "/" in cp and "." not in cp.split("/", 1)[0]:
            out["class_path"] = class_path_of(cp)
        return out
    if isinstance(value, list):
        return [resolve_registry_keys(v) for v in value]
    return value


def load_mmrec_yaml(text: str) -> Any:
    """This dialect's loader: YAML, with registry keys allowed as ``class_path`` values."""
    return resolve_registry_keys(get_loader("yaml")(text))


def _register_loader() -> None:
    import yaml

    set_loader(PARSER_MODE, load_mmrec_yaml, exceptions=(yaml.YAMLError,))


_register_loader()


def rewrite_class_args(argv: Sequence[str], options: Iterable[str] = ("--model", "--data")) -> list[str]:
    """``--model sequential/sasrec`` (or ``--model=...``, ``--model.class_path ...``) -> dotted class paths."""
    opts = set(options) | {f"{o}.class_path" for o in options}
    out: list[str] = []
    expect = False
    for arg in argv:
        if expect:
            expect = False
            if "/" in arg and not arg.lstrip().startswith(("{", "[")) and not arg.endswith((".yaml", ".yml")):
                arg = class_path_of(arg)
        elif "=" in arg and arg.split("=", 1)[0] in opts:
            name, value = arg.split("=", 1)
            if (
                "/" in value
                and not value.lstrip().startswith(("{", "["))
                and not value.endswith((".yaml", ".yml"))
            ):
                arg = f"{name}={class_path_of(value)}"
        elif arg in opts:
            expect = True
        out.append(arg)
    return out


# --------------------------------------------------------------------------------------------- parsers
def new_parser(
    prog: str, description: str | None = None, *, config: bool = True, **kwargs: Any
) -> ArgumentParser:
    """A parser of this dialect: ``--config`` + ``--print_config``, errors raised (not printed), no abbreviations."""
    parser = ArgumentParser(
        prog=prog,
        description=description,
        exit_on_error=False,
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
        default_env=False,
        **kwargs,
    )
    if config:
        parser.add_argument("--config", action=ActionConfigFile, help="YAML file of options (repeatable)")
    return parser


def bare_flags(parser: ArgumentParser) -> ArgumentParser:
    """Let every boolean option stand alone (``--overwrite`` = ``--overwrite true``)."""
    for action in parser._actions:
        if getattr(action, "_typehint", None) is bool and action.option_strings:
            action.nargs = "?"
            action.const = True
    return parser


_ARGS_SECTION = re.compile(r"^Args:\s*$")
_ARG_LINE = re.compile(r"^(\s+)(\w+):\s*(.*)$")


def arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    """``name -> help`` from the ``Args:`` section of a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    out: dict[str, str] = {}
    in_args = False
    indent: int | None = None
    current: str | None = None
    for line in doc.splitlines():
        if _ARGS_SECTION.match(line):
            in_args = True
            continue
        if not in_args:
            continue
        if line.strip() and not line.startswith(" "):
            break
        m = _ARG_LINE.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            current = m.group(2)
            out[current] = m.group(3).strip()
        elif current is not None and line.strip():
            out[current] += " " + line.strip()
    return {k: v.replace("``", "") for k, v in out.items()}


def first_doc_line(fn: Callable[..., Any]) -> str:
    """The first line of ``fn``'s docstring, without reST quotes."""
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0].replace("``", "") if doc else ""


def add_signature(
    parser: ArgumentParser,
    fn: Callable[..., Any],
    *,
    skip: Iterable[str] = (),
    positional: bool = True,
) -> list[str]:
    """Options from ``fn``'s typed signature: required parameters positional, the others ``--name``.

    Help texts come from the docstring's ``Args:`` section. Returns the parameter names added.
    """
    hints = typing.get_type_hints(fn)
    docs = arg_docs(fn)
    names: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in set(skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(p.name, str)
        help_text = docs.get(p.name, "").replace("%", "%%")
        if p.default is inspect.Parameter.empty and positional:
            parser.add_argument(p.name, type=hint, help=help_text)
        elif p.default is inspect.Parameter.empty:
            parser.add_argument(f"--{p.name}", type=hint, required=True, help=help_text)
        else:
            parser.add_argument(f"--{p.name}", type=hint, default=p.default, help=help_text)
        names.append(p.name)
    bare_flags(parser)
    return names


# --------------------------------------------------------------------------------------------- parsing
_INDEXED = re.compile(r"^--((?:[A-Za-z_][\w]*\.)+\d+(?:\.[A-Za-z_\d][\w]*)*)(?:=(.*))?$", re.S)


def split_indexed(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate list-item overrides (``--data.sources.0.dataset=x``) from the other arguments."""
    rest: list[str] = []
    indexed: list[tuple[str, str]] = []
    args = list(argv)
    i = 0
    while i < len(args):
        m = _INDEXED.match(args[i])
        if m is None:
            rest.append(args[i])
        elif m.group(2) is not None:
            indexed.append((m.group(1), m.group(2)))
        elif i + 1 < len(args):
            indexed.append((m.group(1), args[i + 1]))
            i += 1
        else:
            raise UsageError(f"--{m.group(1)} needs a value.")
        i += 1
    return rest, indexed


def set_indexed(values: dict[str, Any], path: str, text: str) -> None:
    """Set ``a.0.b`` in a parsed mapping (the value read as YAML), in place.

    Example:
        >>> v = {"data": {"sources": [{"dataset": "a"}, {"dataset": "b"}]}}
        >>> set_indexed(v, "data.sources.1.dataset", "c"); v["data"]["sources"][1]
        {'dataset': 'c'}
    """
    import yaml

    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise UsageError(f"--{path}: the value is not valid YAML ({e}).") from None
    node: Any = values
    keys = path.split(".")
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the config"
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise UsageError(
                    f"--{path}: {where} is a list of {len(node)}; {key!r} is not an index of it."
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    raise UsageError(f"--{path}: {where} has no {key!r}.{did_you_mean(key, node)}")
                node = node[key]
        else:
            raise UsageError(f"--{path}: {where} is a value, not a list or a mapping.")


def parse(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    """Parse ``argv``; a wrong key or value raises :class:`UsageError` with one readable message.

    Besides jsonargparse's syntax, list items can be overridden by index: ``--data.sources.0.dataset=x``
    (applied after the config files and the other arguments; ``--print_config`` shows the result).
    """
    argv, indexed = split_indexed(argv)
    if not indexed:
        return _parse(parser, argv)
    printing = [a for a in argv if a == "--print_config" or a.startswith("--print_config=")]
    cfg = _parse(parser, [a for a in argv if a not in printing])
    values = cfg.as_dict()
    values.pop("config", None)
    for path, text in indexed:
        set_indexed(values, path, text)
    try:
        cfg = parser.parse_object(values)
    except Exception as e:
        if type(e).__name__ not in ("ArgumentError", "TypeError", "ValueError", "NSKeyError"):
            raise
        raise UsageError(explain(str(e), parser)) from None
    if printing:
        print(parser.dump(cfg, skip_none=False), end="")
        raise SystemExit(0)
    return cfg


def _parse(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    try:
        return parser.parse_args(list(argv))
    except UsageError:
        raise
    except Exception as e:  # jsonargparse's ArgumentError and the errors of loaders / type checks
        if type(e).__name__ not in ("ArgumentError", "TypeError", "ValueError", "NSKeyError"):
            raise
        raise UsageError(explain(str(e), parser)) from None


def instantiate(parser: ArgumentParser, cfg: Namespace) -> Namespace:
    """Build the dataclasses / classes of ``cfg`` (their own checks raise with messages that give the fix)."""
    return parser.instantiate(cfg)


_NOISE = (
    re.compile(r"^\s*Does not validate against any of the Union subtypes\s*$"),
    re.compile(r"^\s*Subtypes: .*$"),
    re.compile(r"^\s*Errors:\s*$"),
    re.compile(r"^\s*- Expected a <class 'NoneType'>.*$"),
    re.compile(r"^\s*Given value type: .*$"),
    re.compile(r"^\s*Given value: .*$"),
    re.compile(r"^\s*tip: .*$"),
)


def _parameters_of(class_path: str) -> list[str]:
    """Constructor parameter names of a class (dataclass fields included), for suggestions."""
    try:
        cls = load(class_path.rsplit(".", 1)[0] + ":" + class_path.rsplit(".", 1)[1])
    except Exception:
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
            break
    return [n for n in names if n != "catalog"]


def _parser_keys(parser: ArgumentParser | None, prefix: str = "") -> list[str]:
    """Option keys of ``parser`` and of its subcommands' parsers (for suggestions)."""
    if parser is None:
        return []
    keys: list[str] = []
    for action in parser._actions:
        subparsers = getattr(action, "_name_parser_map", None)
        if subparsers:
            for sub in subparsers.values():
                keys.extend(k for k in _parser_keys(sub, prefix) if k not in keys)
            continue
        dest = getattr(action, "dest", "")
        if (
            not dest
            or dest in ("help", "config", "print_config")
            or dest.startswith("==")
            or dest.endswith(".help")
        ):
            continue
        if prefix and not dest.startswith(prefix + "."):
            continue
        if action.option_strings and dest not in keys:
            keys.append(dest)
    return keys


def explain(message: str, parser: ArgumentParser | None = None) -> str:
    """One readable message for a jsonargparse error (did-you-mean for unknown keys, no Union noise).

    Example:
        >>> explain("Option 'shard_siz' is not accepted").startswith("unknown key 'shard_siz'")
        True
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    class_paths = re.findall(r"class_path '([^']+)'", message)
    where = ".".join(k for k in keys if k)

    unknown = re.search(r"Option '([^']+)' is not accepted", message) or re.search(
        r'Key "([^"]+)" is not expected', message
    )
    if unknown:
        name = unknown.group(1)
        if class_paths:
            cp = class_paths[-1]
            params = _parameters_of(cp)
            key = registry_key_of(cp)
            subject = cp.rsplit(".", 1)[-1] + (f", {key}" if key else "")
            inside = f"{where}.init_args" if where in ("model", "data") else (where or "the config")
            return (
                f"unknown key {name!r} in {inside} ({subject}).{did_you_mean(name, params)} "
                f"Valid keys: {listing(params, 40)}."
            )
        candidates = _parser_keys(parser, where)
        full = f"{where}.{name}" if where else name
        return f"unknown key {full!r}.{did_you_mean(full, candidates)}"

    rejected = re.search(r"Subcommand '([^']+)' does not accept option '([^']+)'", message)
    if rejected:  # an unknown top-level key in a config file
        verb, name = rejected.groups()
        candidates = [k for k in _parser_keys(parser) if "." not in k]
        return (
            f"unknown key {shorten(name)!r} at the top of the {verb} config.{did_you_mean(name, candidates)} "
            f"Top-level keys: {listing(candidates, 40)}."
        )

    unrecognized = re.search(r"[Uu]nrecognized arguments: (.+)", message)
    if unrecognized:
        args = unrecognized.group(1).split()
        opts = [a.split("=", 1)[0] for a in args if a.startswith("--")]
        candidates = ["--" + k for k in _parser_keys(parser)]
        if opts:
            first = opts[0]
            hint = did_you_mean(first, candidates) or did_you_mean(first.replace("-", "_"), candidates)
            return f"unknown option {shorten(first)!r}.{hint}"
        return f"unexpected argument(s): {shorten(' '.join(args))}"

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.+)\)", message)
    if choice:
        options = [c.strip(" '") for c in choice.group(2).split(",")]
        return (
            f"unknown command {shorten(choice.group(1))!r}.{did_you_mean(choice.group(1), options)} "
            f"Commands: {', '.join(options)}."
        )

    required = re.search(r"the following arguments are required: (.+)", message)
    if required:
        return f"missing argument(s): {required.group(1)} (see --help)."

    expected = re.findall(r"Expected an? (.+?)\. Got value: (.*)", message)
    if expected:
        typ, got = expected[-1]
        literal = re.match(r"typing\.Literal\[(.*)\]$", typ)
        cls = re.match(r"<class '([^']+)'>$", typ)
        want = f"one of {literal.group(1)}" if literal else (cls.group(1) if cls else typ)
        head, _, rest = where.partition(".")
        if head in ("model", "data") and rest and not rest.startswith("init_args"):
            where = f"{head}.init_args.{rest}"  # the key as the config and the command line write it
        return f"{where or 'value'}: expected {want}; got {shorten(got.strip())!r}."
    if "does not accept nested key" in message:
        m = re.search(r'nested key "([^"]+)"', message)
        return (
            f"{where or 'value'}: {message.splitlines()[-1].strip()}"
            if not m
            else (f"{where or 'value'} does not take the key {m.group(1)!r}.")
        )

    lines = [ln for ln in message.splitlines() if ln.strip() and not any(p.match(ln) for p in _NOISE)]
    return shorten("\n".join(ln.rstrip() for ln in lines)) or shorten(message)
