"""Weights policy (DESIGN §5): hub tag, local file or local directory; random init only when asked.

Every encoder family resolves its ``weights`` argument with :func:`parse_weights` and reports what it
loaded as an identity string recorded in fingerprints and manifests.

Example:
    >>> parse_weights("random").kind, parse_weights(None).kind
    ('random', 'random')
    >>> parse_weights("hub:openai").kind
    'hub'
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from mmrec.data.hashing import file_sha256

WeightsKind = Literal["hub", "file", "dir", "random"]


class MissingWeightsError(RuntimeError):
    """Raised when no weights can be loaded; the message names the three ways to supply them."""


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``weights`` argument.

    Attributes:
        kind: ``hub`` (a tag / model id for the family's hub), ``file`` (a local checkpoint file), ``dir``
            (a local directory, e.g. a transformers ``save_pretrained`` folder) or ``random``.
        value: the tag, or the absolute path.
    """

    kind: WeightsKind
    value: str

    def identity(self, seed: int = 0) -> str:
        """Stable identity: ``sha256:<hex>`` of a file, ``dir:<hash of its files>``, ``hub:<tag>``,
        ``random-init:<seed>``."""
        if self.kind == "file":
            return f"sha256:{file_sha256(self.value)}"
        if self.kind == "dir":
            return f"dir:{directory_digest(self.value)}"
        if self.kind == "hub":
            return f"hub:{self.value}"
        return f"random-init:{seed}"


def parse_weights(weights: str | os.PathLike[str] | None) -> WeightsSpec:
    """Interpret a ``weights`` argument.

    ``None``, ``"random"`` or ``"none"`` -> random init (explicit); an existing file -> ``file``; an existing
    directory -> ``dir``; ``"hub:<tag>"`` or any other string -> ``hub`` (a tag of the family's hub).
    """
    if weights is None:
        return WeightsSpec("random", "")
    text = str(weights)
    if text.lower() in ("random", "none", "random-init", "null"):
        return WeightsSpec("random", "")
    if text.startswith("hub:"):
        return WeightsSpec("hub", text[4:])
    for prefix in ("file:", "dir:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    path = Path(os.path.expandvars(text)).expanduser()
    if path.is_file():
        return WeightsSpec("file", str(path.resolve()))
    if path.is_dir():
        return WeightsSpec("dir", str(path.resolve()))
    if text.startswith((".", "/", "~")) or (os.sep in text and not _looks_like_hub_id(text)):
        raise MissingWeightsError(missing_weights_message(text, family="this encoder"))
    return WeightsSpec("hub", text)


def _looks_like_hub_id(text: str) -> bool:
    # "org/model" ids of the Hugging Face hub have exactly one slash and no leading dot
    return text.count("/") == 1 and not text.startswith((".", "/"))


def directory_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over the relative names and sha256 of every file under ``path`` (sorted)."""
    import hashlib

    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def missing_weights_message(what: str, family: str, hub_example: str = "<tag>", detail: str = "") -> str:
    """The error text when weights cannot be loaded: names the three ways to supply them."""
    extra = f" ({detail})" if detail else ""
    return (
        f"could not load weights {what!r} for {family}{extra}. Supply weights in one of three ways: "
        f"(1) a hub tag, e.g. weights: {hub_example} (needs network access or a populated local hub cache); "
        "(2) a local checkpoint file, e.g. weights: /path/to/model.safetensors; "
        "(3) a local directory, e.g. weights: /path/to/saved_model_dir. "
        "For explicitly random weights (testing only) use weights: random."
    )


# ---------------------------------------------------------------------------------------------- helpers
# Shared by the encoder families: finding a checkpoint in a folder, loading a state dict safely, seeding a
# random init so that ``random-init:<seed>`` identifies the weights, and telling whether hubs are offline.

CHECKPOINT_NAMES: tuple[str, ...] = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.pth",
    "model.pt",
)


def find_checkpoint(
    directory: str | os.PathLike[str], preferred: Sequence[str] = CHECKPOINT_NAMES
) -> Path | None:
    """The checkpoint file to load from ``directory``: the first of ``preferred`` that exists, else the
    only ``*.safetensors`` / ``*.bin`` / ``*.pth`` / ``*.pt`` file; ``None`` when there is none or the
    choice is ambiguous.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "model.safetensors").write_bytes(b"")
        0
        >>> find_checkpoint(d).name
        'model.safetensors'
    """
    root = Path(directory)
    for name in preferred:
        if (root / name).is_file():
            return root / name
    for ext in (".safetensors", ".bin", ".pth", ".pt"):
        found = sorted(root.glob(f"*{ext}"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            return None
    return None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict from ``*.safetensors`` or a torch pickle with ``weights_only=True``.

    Unwraps the usual containers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"state_dict_ema": ...}``)
    and a ``module.`` prefix left by DistributedDataParallel.
    """
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd: object = load_file(path, device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise MissingWeightsError(
            f"{path} does not hold a state dict of tensors; save one with "
            "`safetensors.torch.save_file(model.state_dict(), path)` or `torch.save(model.state_dict(), path)`."
        )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a random initialisation under ``torch.manual_seed(seed)`` without disturbing the global RNG, so
    that ``random-init:<seed>`` fully determines the weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def hub_offline() -> bool:
    """True when hub clients must not touch the network: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` say so,
    or the hub cannot be reached at all (:func:`hub_reachable`, probed once per process).

    Without the probe, a name that is in no local cache (a typo such as ``minilmx``) makes the hub clients
    retry the network for about a minute, printing warnings, before they fail.
    """
    if any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    return not hub_reachable()


_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``, default huggingface.co) accepts a TCP connection.

    Probed once per process (name lookup + connect, at most ``timeout`` seconds); when it fails,
    ``HF_HUB_OFFLINE=1`` is set for the libraries this process imports later, and every family reads its
    weights from the local caches only.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _REACHABLE:
        return _REACHABLE[endpoint]
    url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result = [False]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = True
        except OSError:
            pass

    worker = threading.Thread(target=probe, daemon=True)  # name lookups ignore socket timeouts
    worker.start()
    worker.join(timeout + 0.5)
    _REACHABLE[endpoint] = result[0]
    if not result[0]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return result[0]


def hub_file_cached(repo_id: str, filenames: Sequence[str]) -> bool:
    """True when one of ``filenames`` of the Hugging Face repo ``repo_id`` is in the local hub cache.

    Used with :func:`hub_offline` to fail fast with a clear error instead of asking a hub client that may
    have read ``HF_HUB_OFFLINE`` before it was set (it is read once, when ``huggingface_hub`` is imported).
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)


@functools.lru_cache(maxsize=64)
def _cached_identity(kind: str, path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    return WeightsSpec(kind, path).identity()  # type: ignore[arg-type]


def weights_identity(spec: WeightsSpec, seed: int = 0) -> str:
    """``spec.identity(seed)``, with file / directory hashes cached per process.

    The cache key is the path plus every file's name, size and modification time, so a changed checkpoint
    is hashed again. Large checkpoints (a ViT-L is ~1.7 GB) are then hashed once per process, not per build.

    Example:
        >>> weights_identity(parse_weights("random"), seed=2)
        'random-init:2'
    """
    if spec.kind not in ("file", "dir"):
        return spec.identity(seed)
    root = Path(spec.value)
    files = [root] if spec.kind == "file" else sorted(p for p in root.rglob("*") if p.is_file())
    sig = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _cached_identity(spec.kind, spec.value, sig)
