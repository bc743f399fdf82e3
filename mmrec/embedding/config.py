"""Typed recipe for ``mmrec embed`` (YAML parsed with jsonargparse, checked by dataclasses).

A recipe names the input (a canonical dataset folder *or* webdataset tar shards), the cache folder,
and one entry per store to build::

    dataset: assets/demo            # canonical dataset folder  (or)  shards: "shards/media-{000000..000003}.tar"
                                    #   shards may be URLs: "https://host/media-{000000..000099}.tar", "pipe:..."
    cache: cache/demo               # stores go to <cache>/<name>/<fingerprint>/, <cache>/<name>/CURRENT
    store_dtype: float16            # float16 | float32
    shard_size: 256                 # items per work unit / part file (a dataset; a shard is its own unit)
    num_workers: 2                  # DataLoader workers for decoding + preprocess
    strict: false                   # any failure -> error
    parts_dir: null                 # where each rank writes its part files (default: inside the cache)
    merge: true                     # rank 0 merges the parts into the store (false: leave them for --merge_from)
    lock_timeout: null              # seconds to wait for another run building the same store (null: no limit)
    encoders:
      - name: image                 # store name
        encoder: classic/color-histogram
        column: image               # media column (image/audio/video) or text column(s): [title, description]
        batch_size: 64
        init_args: {}               # kwargs for create_encoder (weights, dtype, normalize, ...)
    trainer:                        # lightning.Trainer kwargs
      accelerator: auto
      devices: 1

Relative paths (``dataset``, ``shards``, ``cache``, local ``weights`` files) are resolved against the
current working directory of the ``mmrec embed`` process, as every command-line tool does; run recipes from
the repository root (or give absolute paths).

Example:
    >>> cfg = EmbedConfig.from_dict({"dataset": "assets/demo", "cache": "cache/demo",
    ...     "encoders": [{"name": "text", "encoder": "text/minilm", "column": ["title", "description"]}]})
    >>> cfg.encoders[0].columns, cfg.encoders[0].resolved_modality()
    (['title', 'description'], 'text')
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

MEDIA_MODALITIES: tuple[str, ...] = ("image", "audio", "video")
STORE_DTYPES: tuple[str, ...] = ("float16", "float32")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Trainer options that the embedding pipeline owns (it needs its own sampler and writer callback).
_RESERVED_TRAINER_KEYS = ("use_distributed_sampler", "callbacks")
DEFAULT_TRAINER: dict[str, Any] = {"accelerator": "auto", "devices": 1}


class ConfigError(ValueError):
    """A recipe value is invalid; the message says which key and how to fix it."""


class EmbedError(RuntimeError):
    """An embedding build failed (``--strict`` item failure, encoder/column mismatch...)."""


@dataclass
class EncoderEntry:
    """One store to build: an encoder applied to one column (or several text columns).

    Args:
        name: store name: the store lands in ``<cache>/<name>/<fingerprint>/`` (letters, digits, ``._-``).
        encoder: registry key of the encoder (``mmrec encoders`` lists them), e.g. ``"text/minilm"``.
        column: a media column (``image`` / ``audio`` / ``video``) or one or more text columns
            (``title`` or ``[title, description]``; joined with ``". "``).
        batch_size: items per forward pass (batches never cross a part boundary).
        init_args: keyword arguments for ``create_encoder`` (``weights``, ``dtype``, ``normalize``...).
        modality: override the modality inferred from the column (needed only for non-canonical media
            column names, e.g. ``thumbnail`` holding image paths).
        decode_args: keyword arguments for the media decoder (e.g. ``{num_frames: 8}`` for video).
    """

    name: str
    encoder: str
    column: str | list[str] = "image"
    batch_size: int = 64
    init_args: dict[str, Any] = field(default_factory=dict)
    modality: str | None = None
    decode_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"encoders[name={self.name!r}]"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"{where}: `name` must be a folder name (letters, digits, '.', '_', '-'), e.g. `image`; got {self.name!r}."
            )
        if not isinstance(self.encoder, str) or "/" not in self.encoder:
            raise ConfigError(
                f"{where}: `encoder` must be a registry key `family/name` such as `classic/color-histogram` "
                f"(run `mmrec encoders` to list them); got {self.encoder!r}."
            )
        cols = [self.column] if isinstance(self.column, str) else list(self.column)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(
                f"{where}: `column` must be a column name or a non-empty list of names; got {self.column!r}."
            )
        if len(set(cols)) != len(cols):
            raise ConfigError(f"{where}: `column` lists a column twice: {cols}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"{where}: `batch_size` must be a positive integer; got {self.batch_size!r}.")
        if not isinstance(self.init_args, Mapping):
            raise ConfigError(
                f"{where}: `init_args` must be a mapping of encoder keyword arguments; got {self.init_args!r}."
            )
        if not isinstance(self.decode_args, Mapping):
            raise ConfigError(f"{where}: `decode_args` must be a mapping; got {self.decode_args!r}.")
        self.init_args = dict(self.init_args)
        self.decode_args = dict(self.decode_args)
        if self.modality is not None and self.modality not in (*MEDIA_MODALITIES, "text"):
            raise ConfigError(
                f"{where}: `modality` must be one of image, audio, video, text; got {self.modality!r}."
            )
        media = [c for c in cols if c in MEDIA_MODALITIES]
        if media and len(cols) > 1:
            raise ConfigError(
                f"{where}: a media column ({media[0]}) must be used alone; several columns are only for text "
                f"(they are joined with '. '). Got {cols}."
            )
        if self.modality in MEDIA_MODALITIES and len(cols) > 1:
            raise ConfigError(f"{where}: modality {self.modality} takes exactly one column; got {cols}.")

    @property
    def columns(self) -> list[str]:
        """The column(s) as a list."""
        return [self.column] if isinstance(self.column, str) else list(self.column)

    def resolved_modality(self) -> str:
        """``image`` / ``audio`` / ``video`` for a media column, else ``text`` (unless overridden)."""
        if self.modality is not None:
            return self.modality
        col = self.columns[0]
        return col if col in MEDIA_MODALITIES and len(self.columns) == 1 else "text"


@dataclass
class EmbedConfig:
    """A whole ``mmrec embed`` recipe.

    Args:
        dataset: canonical dataset folder (``items.parquet`` + ``dataset.json``). Exactly one of
            ``dataset`` / ``shards`` must be given.
        shards: webdataset tar shards written by ``mmrec shard``: a brace pattern
            (``shards/media-{000000..000003}.tar``), a glob, a folder, or a list of files.
        cache: cache folder; each store goes to ``<cache>/<name>/<fingerprint>/``.
        store_dtype: ``float16`` (half the disk and RAM) or ``float32``.
        shard_size: items per work unit and part file (the unit of resume and of work distribution).
        num_workers: DataLoader worker processes decoding and preprocessing items (0 = in the main process).
        strict: turn any item failure (missing file, corrupt media, empty text) into an error.
        encoders: the stores to build (see :class:`EncoderEntry`).
        trainer: ``lightning.Trainer`` keyword arguments (``accelerator``, ``devices``, ``strategy``,
            ``num_nodes``, ``precision``...); ``accelerator: auto`` and ``devices: 1`` unless given.
        imports: Python modules imported first, so that they can register extra encoders.
        parts_dir: where each rank writes its part files, ``<parts_dir>/<name>/<fingerprint>.partial/``
            (default: ``<cache>/<name>/``). ``{rank}`` and ``{node_rank}`` in it are replaced per process,
            e.g. ``/local/scratch/parts-{rank}``. Ranks whose part folders are not visible to rank 0 (no
            shared filesystem) need ``merge: false`` and a merge step (``mmrec embed --merge_from``).
        merge: rank 0 assembles the store once every rank has written its parts; ``false`` leaves the parts
            where they were written, for ``mmrec embed --config R --merge_from DIR [DIR ...]`` on the machine
            that holds the cache (copy the ranks' part folders there first).
        lock_timeout: seconds to wait when another run holds a store's lock (it is building the same store);
            ``None`` waits as long as it takes (printing who holds the lock), ``0`` fails at once.
    """

    dataset: str | None = None
    shards: str | list[str] | None = None
    cache: str = "cache"
    store_dtype: Literal["float16", "float32"] = "float16"
    shard_size: int = 256
    num_workers: int = 2
    strict: bool = False
    encoders: list[EncoderEntry] = field(default_factory=list)
    trainer: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAINER))
    imports: list[str] = field(default_factory=list)
    parts_dir: str | None = None
    merge: bool = True
    lock_timeout: float | None = None

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.shards is None):
            raise ConfigError(
                "give exactly one input: `dataset: <canonical dataset folder>` or `shards: <tar pattern>` "
                f"(got dataset={self.dataset!r}, shards={self.shards!r})."
            )
        if self.store_dtype not in STORE_DTYPES:
            raise ConfigError(f"`store_dtype` must be float16 or float32; got {self.store_dtype!r}.")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ConfigError(
                f"`shard_size` must be a positive integer (items per part file); got {self.shard_size!r}."
            )
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"`num_workers` must be 0 or more; got {self.num_workers!r}.")
        if not self.cache:
            raise ConfigError("`cache` must name a folder, e.g. `cache: cache/demo`.")
        if self.lock_timeout is not None and (
            not isinstance(self.lock_timeout, (int, float)) or self.lock_timeout < 0
        ):
            raise ConfigError(
                f"`lock_timeout` must be null (wait as long as needed) or seconds >= 0; got {self.lock_timeout!r}."
            )
        if self.parts_dir is not None:
            try:
                self.parts_dir.format(rank=0, node_rank=0)
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(
                    f"`parts_dir` may use only {{rank}} and {{node_rank}} as placeholders; got {self.parts_dir!r} ({e})."
                ) from None
        entries = [e if isinstance(e, EncoderEntry) else _entry(e, i) for i, e in enumerate(self.encoders)]
        if not entries:
            raise ConfigError("`encoders` is empty: list at least one `{name, encoder, column}` entry.")
        names = [e.name for e in entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"store names must be unique within a recipe; {dup} appear more than once.")
        self.encoders = entries
        trainer = dict(self.trainer or {})
        bad = [k for k in _RESERVED_TRAINER_KEYS if k in trainer]
        if bad:
            raise ConfigError(
                f"trainer.{bad[0]} is set by `mmrec embed` itself (it needs its own sampler and part writer); "
                "remove it from the recipe."
            )
        self.trainer = {**DEFAULT_TRAINER, **trainer}  # one device unless the recipe asks for more

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmbedConfig:
        """Build (and validate) a config from a plain mapping, e.g. a parsed YAML file."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown recipe key(s) {unknown};{_did_you_mean(unknown[0], known)} known keys: {sorted(known)}."
            )
        return cls(**dict(values))

    def select(self, only: str | Sequence[str] | None) -> list[EncoderEntry]:
        """The entries named in ``only`` (comma-separated string or list); all when ``None``."""
        if not only:
            return list(self.encoders)
        wanted = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
        names = [e.name for e in self.encoders]
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ConfigError(f"--only names unknown store(s) {missing}; this recipe has {names}.")
        return [e for e in self.encoders if e.name in wanted]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for manifests and ``--print_config``)."""
        return asdict(self)

    # ------------------------------------------------------------------ paths
    @property
    def cache_path(self) -> Path:
        """The cache folder, absolute (relative paths resolve against the current directory)."""
        return Path(self.cache).expanduser().resolve()

    def parts_path(self, rank: int = 0, node_rank: int = 0) -> Path:
        """The folder under which process ``rank`` writes its parts (``<parts_dir>`` or the cache), absolute."""
        if self.parts_dir is None:
            return self.cache_path
        return Path(self.parts_dir.format(rank=rank, node_rank=node_rank)).expanduser().resolve()

    @property
    def dataset_path(self) -> Path | None:
        """The dataset folder, absolute, or ``None`` when the input is shards."""
        return None if self.dataset is None else Path(self.dataset).expanduser().resolve()


def _entry(value: Any, index: int) -> EncoderEntry:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"encoders[{index}] must be a mapping with name, encoder, column...; got {value!r}."
        )
    known = {f.name for f in fields(EncoderEntry)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"encoders[{index}] has unknown key(s) {unknown};{_did_you_mean(unknown[0], known)} "
            f"known keys: {sorted(known)}."
        )
    missing = [k for k in ("name", "encoder") if k not in value]
    if missing:
        raise ConfigError(
            f"encoders[{index}] lacks {missing}; each entry needs at least `name` and `encoder`."
        )
    return EncoderEntry(**dict(value))


def _did_you_mean(word: str, known: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""
