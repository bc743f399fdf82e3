"""``mmrec encoders``: list and describe the registered frozen encoders.

``mmrec encoders list [PATTERN] [--tiny] [--modality M]`` prints name, modality, output dim and default
weights from registry metadata, without building any model (``?`` where a family did not record it).
``mmrec encoders describe NAME [--weights W] [--dtype D] [--no-build] [--json]`` prints the builder's
documentation and, unless ``--no-build``, builds the encoder and prints what a store manifest would record
(weights identity, preprocessing, pooling, fingerprint).

Example:
    >>> main(["list", "text/*"])  # doctest: +ELLIPSIS
    NAME ...
    0
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence

from mmrec.encoders import ENCODERS, MissingWeightsError, create_encoder, list_encoders


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmrec encoders", description="List and describe the registered encoders."
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list registered encoders (no model is built)")
    ls.add_argument(
        "pattern", nargs="?", default="*", help="shell pattern, e.g. 'open_clip/*' (default: all)"
    )
    ls.add_argument("--tiny", action="store_true", help="only the tiny test variants")
    ls.add_argument("--modality", choices=("image", "text", "audio", "video"), help="only this modality")
    ds = sub.add_parser("describe", help="show one encoder's options and (built) description")
    ds.add_argument("name", help="registry key, e.g. text/minilm")
    ds.add_argument("--weights", help="hub tag / id, checkpoint file, directory, or 'random'")
    ds.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="compute dtype")
    ds.add_argument("--no-build", action="store_true", help="only show the registry entry, build nothing")
    ds.add_argument("--json", action="store_true", help="print the description as JSON")
    return p


def _list(pattern: str, tiny: bool, modality: str | None) -> int:
    names = list_encoders(pattern, tiny=True) if tiny else list_encoders(pattern)
    rows = []
    for name in names:
        meta = ENCODERS.meta(name)
        if modality and meta.get("modality") != modality:
            continue
        flags = ",".join(f for f in ("tiny", "generic") if meta.get(f))
        rows.append(
            (
                name,
                str(meta.get("modality", "?")),
                str(meta.get("dim", "?")),
                str(meta.get("default_weights", "-")),
                flags,
            )
        )
    if not rows:
        print(
            f"no registered encoder matches {pattern!r}" + (" with --tiny" if tiny else ""), file=sys.stderr
        )
        return 1
    header = ("NAME", "MODALITY", "DIM", "DEFAULT WEIGHTS", "FLAGS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _describe(name: str, weights: str | None, dtype: str | None, build: bool, as_json: bool) -> int:
    list_encoders()  # load the families
    try:
        builder = ENCODERS.get(name)
        key = name
    except KeyError:
        family = name.partition("/")[0]
        if f"{family}/model" not in ENCODERS:
            raise
        builder, key = ENCODERS.get(f"{family}/model"), f"{family}/model"
    info: dict[str, object] = {
        "key": key,
        "meta": ENCODERS.meta(key),
        "signature": f"{name}{inspect.signature(builder)}",
        "doc": inspect.getdoc(builder) or "",
    }
    if build:
        kwargs: dict[str, object] = {}
        if weights is not None:
            kwargs["weights"] = weights
        if dtype is not None:
            kwargs["dtype"] = dtype
        try:
            enc = create_encoder(name, **kwargs)
        except MissingWeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        info["encoder"] = {
            **enc.describe(),
            "fingerprint": enc.fingerprint(),
            "parameters": sum(p.numel() for p in enc.parameters()),
        }
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    meta = info["meta"]
    assert isinstance(meta, dict)
    print(f"{name}  (modality: {meta.get('modality', '?')}, dim: {meta.get('dim', '?')})")
    print(f"  {info['signature']}")
    for line in str(info["doc"]).splitlines():
        print(f"  {line}")
    if "encoder" in info:
        print("built:")
        for k, v in dict(info["encoder"]).items():  # type: ignore[call-overload]
            print(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmrec encoders``.

    Args:
        argv: the arguments after ``mmrec encoders`` (default: ``sys.argv[1:]``).

    Returns:
        the exit code (0 on success, 1 when nothing matches or weights cannot be loaded, 2 on bad usage).

    Example:
        >>> main(["describe", "open_clip/tiny", "--no-build"])  # doctest: +ELLIPSIS
        open_clip/tiny  (modality: image, dim: 32)
        ...
        0
    """
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "list":
        return _list(args.pattern, args.tiny, args.modality)
    try:
        return _describe(args.name, args.weights, args.dtype, not args.no_build, args.json)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
