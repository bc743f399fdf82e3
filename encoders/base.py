"""The frozen-encoder contract (DESIGN §4) shared by every encoder family.

An encoder turns raw items of one modality into ``(B, D)`` float vectors:

- ``modality``: ``"image"``, ``"text"``, ``"audio"`` or ``"video"``;
- ``output_dim``: ``D``;
- ``preprocess(raw)``: one raw item -> model input (runs in DataLoader workers, CPU only);
- ``collate(list_of_preprocessed)``: a batch (stacked tensors, or tokenised text);
- ``encode(batch)`` -> ``(B, D)`` under ``torch.inference_mode()``;
- ``fingerprint()``: a stable hash of everything that determines the output (name, weights identity,
  preprocessing, pooling, dtype).

Raw item types per modality: ``PIL.Image.Image`` (RGB) for images, ``str`` for text, :class:`AudioClip` for
audio and :class:`VideoClip` for video (decoding files into these lives in :mod:`mmrec.encoders.media`).

Encoders are frozen: no parameter requires grad, the module stays in eval mode (``train()`` is a no-op),
and batching / device placement are done by the caller (``encoder.to(device)``; ``encode`` moves the batch
to the encoder's device).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

MODALITIES = ("image", "text", "audio", "video")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class AudioClip:
    """A decoded audio clip.

    Attributes:
        waveform: ``(samples,)`` mono or ``(channels, samples)`` float32 in [-1, 1].
        sample_rate: samples per second.
    """

    waveform: np.ndarray
    sample_rate: int


@dataclass
class VideoClip:
    """A decoded video clip.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB frames.
        fps: frames per second of ``frames`` (after any sampling by the decoder).
    """

    frames: np.ndarray
    fps: float


def move_to(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Move tensors in a (nested) batch to ``device``; floating tensors are cast to ``dtype`` if given."""
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, dtype) for v in batch)
    return batch


class FrozenEncoder(nn.Module):
    """Base class of all frozen feature extractors.

    Subclasses set ``modality``, build their network in ``__init__``, call :meth:`freeze` at the end, and
    implement :meth:`preprocess`, :meth:`collate` (default: ``torch.stack``) and :meth:`_encode`.

    Args:
        name: registry key (``family/name``).
        weights: identity of the loaded weights (``sha256:<hex>``, ``hub:<tag>``, ``dir:<sha>``,
            ``random-init:<seed>``), recorded in fingerprints and store manifests.
        dtype: compute dtype (``float32``, ``float16``, ``bfloat16``).
        normalize: L2-normalise the output vectors.
    """

    modality: ClassVar[str] = ""

    def __init__(self, name: str, weights: str, dtype: str = "float32", normalize: bool = False) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
        self.name = name
        self.weights_identity = weights
        self.dtype_name = dtype
        self.normalize = normalize
        self.output_dim: int = 0

    # ------------------------------------------------------------------ contract
    def preprocess(self, raw: Any) -> Any:
        """One raw item -> model input (CPU)."""
        raise NotImplementedError

    def collate(self, items: Sequence[Any]) -> Any:
        """Preprocessed items -> a batch."""
        return torch.stack(list(items))

    def _encode(self, batch: Any) -> torch.Tensor:
        """Batch on the encoder's device -> ``(B, D)``."""
        raise NotImplementedError

    def preprocessing_config(self) -> dict[str, Any]:
        """JSON-serialisable description of :meth:`preprocess` (image size, mean/std, max tokens...)."""
        return {}

    def pooling(self) -> str | None:
        """Name of the pooling applied to the backbone outputs."""
        return None

    # ------------------------------------------------------------------ shared behaviour
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    def freeze(self) -> FrozenEncoder:
        """Make every parameter frozen and put the module in eval mode (call at the end of ``__init__``)."""
        for p in self.parameters():
            p.requires_grad_(False)
        nn.Module.train(self, False)
        if self.compute_dtype != torch.float32:
            self.to(self.compute_dtype)
        if self.weights_identity.startswith("random-init"):
            log.warning(
                "ENCODER %s USES RANDOMLY INITIALISED WEIGHTS (%s): its features carry no pretrained knowledge. "
                "This is recorded in the store manifest.",
                self.name,
                self.weights_identity,
            )
        return self

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Frozen encoders stay in eval mode whatever the caller asks."""
        return nn.Module.train(self, False)

    def encode(self, batch: Any) -> torch.Tensor:
        """Encode a collated batch.

        Args:
            batch: output of :meth:`collate`.

        Returns:
            ``(B, output_dim)`` float32 tensor on the encoder's device.
        """
        with torch.inference_mode():
            out = self._encode(move_to(batch, self.device, self.compute_dtype)).float()
            if self.normalize:
                out = torch.nn.functional.normalize(out, dim=-1)
        if out.ndim != 2 or out.shape[1] != self.output_dim:
            raise RuntimeError(
                f"{self.name} produced shape {tuple(out.shape)}, expected (B, {self.output_dim})."
            )
        return out

    def encode_raw(self, raws: Sequence[Any]) -> torch.Tensor:
        """Convenience: preprocess, collate and encode a list of raw items -> ``(B, D)``."""
        return self.encode(self.collate([self.preprocess(r) for r in raws]))

    def describe(self) -> dict[str, Any]:
        """What a store manifest records about this encoder."""
        return {
            "name": self.name,
            "modality": self.modality,
            "weights": self.weights_identity,
            "output_dim": self.output_dim,
            "dtype": self.dtype_name,
            "normalize": self.normalize,
            "pooling": self.pooling(),
            "preprocessing": self.preprocessing_config(),
        }

    def fingerprint(self) -> str:
        """sha256 (hex) of :meth:`describe`: equal fingerprints mean equal outputs for equal inputs."""
        payload = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()
