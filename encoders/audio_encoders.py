"""Transformers audio encoders: ``hf_audio/<kind>`` -> one ``(D,)`` vector per clip.

Kinds (:data:`AUDIO_KINDS`), each a transformers model + its feature extractor:

============  ===========================================  ===========================  ==================
kind          model                                        window (chunk length)        pooling
============  ===========================================  ===========================  ==================
``ast``       ``ASTModel`` + ``ASTFeatureExtractor``       ``max_length`` frames x 10ms  ``pooler_output``
                                                           (1024 -> 10.24 s)            (mean of CLS and
                                                                                        distillation token)
``whisper``   ``WhisperModel`` encoder +                   ``chunk_length`` (30 s)      mean of the last
              ``WhisperFeatureExtractor``                                               hidden state over
                                                                                        frames that hold
                                                                                        audio (not padding)
``wav2vec2``  ``Wav2Vec2Model`` + ``Wav2Vec2FeatureExt.``  ``chunk_seconds`` (10 s)     masked mean of the
``hubert``    ``HubertModel`` + ``Wav2Vec2FeatureExt.``                                 last hidden state
``clap``      ``ClapAudioModelWithProjection`` +           ``max_length_s`` (10 s)      ``audio_embeds``
              ``ClapFeatureExtractor``                                                  (projection)
``waveform``  any other ``AutoModel`` on raw waveforms     ``chunk_seconds`` (10 s)     masked mean
              (WavLM, data2vec-audio, UniSpeech, SEW...)
============  ===========================================  ===========================  ==================

``hf_audio/auto`` takes a hub id, a ``save_pretrained`` folder or a file + ``config`` and detects the kind
from the config's ``model_type``.

Long clips: a clip longer than the model window is cut into consecutive windows (a trailing remainder
shorter than ``min_chunk_fraction`` of a window is dropped unless it is the whole clip); each chunk is
encoded on its own and the chunk vectors are averaged, weighted by chunk duration
(``chunk_pooling="duration"``, default) or equally (``"mean"``). So :meth:`HFAudioEncoder.preprocess`
returns a variable number of chunks per item, :meth:`~HFAudioEncoder.collate` records which chunks belong
to which item, and :meth:`~HFAudioEncoder._encode` pools back to ``(B, D)``. Encoding an item alone or in
any batch gives the same vector (padding is masked; conv-feature models with group norm, which cannot be
masked, are run on equal-length groups).

The per-kind model classes and weight loading live in :mod:`mmrec.encoders.audio_models`, the tiny
configs in :mod:`mmrec.encoders.audio_tiny`, chunking and pooling in :mod:`mmrec.encoders.audio_chunks`;
their public names are re-exported here.

Weights (DESIGN §5), the ``weights`` argument:

- a hub id (``MIT/ast-finetuned-audioset-10-10-0.4593``...) -> ``from_pretrained`` (network or local cache);
- a local directory -> ``from_pretrained`` on a ``save_pretrained`` folder (``config.json`` + weights, and
  ``preprocessor_config.json`` when present; else the feature extractor is built from the config);
- a local file -> a state dict (``.safetensors``, or torch with ``weights_only=True``) loaded into a model
  built from ``config`` (a dict, a ``config.json`` path or a ``PretrainedConfig``; default: a
  ``config.json`` next to the file); common prefixes (``model.``, ``encoder.``, ``wav2vec2.``...) are
  matched automatically, missing keys are an error;
- ``random`` -> built from ``config`` (or the kind's default config), seeded by ``seed``, logged loudly.

Tiny test variants (hidden 32, 2 layers, random weights): ``hf_audio/tiny-ast``, ``tiny-whisper``,
``tiny-wav2vec2``, ``tiny-hubert``, ``tiny-clap`` (registered with ``tiny=True``).

Example:
    >>> import numpy as np
    >>> from mmrec.encoders import create_encoder
    >>> from mmrec.encoders.base import AudioClip
    >>> enc = create_encoder("hf_audio/tiny-whisper")  # random weights, 1 s window
    >>> clip = AudioClip(np.zeros(40000, np.float32), 16000)  # 2.5 s -> 3 chunks, pooled
    >>> enc.encode_raw([clip]).shape
    torch.Size([1, 32])
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mmrec.encoders import ENCODERS
from mmrec.encoders.audio_chunks import masked_mean, pool_chunks, receptive_field, split_chunks
from mmrec.encoders.audio_models import (
    AUDIO_KINDS,
    DEFAULT_WAVEFORM_WINDOW_S,
    AudioKind,
    Kind,
    kind_of_model_type,
    load_audio_model,
    load_matching_state_dict,
)
from mmrec.encoders.audio_tiny import (
    DEFAULT_WEIGHTS_DIM,
    TINY_CHUNK_SECONDS,
    TINY_CONFIGS,
    TINY_FEATURE_EXTRACTOR,
)
from mmrec.encoders.base import AudioClip, FrozenEncoder
from mmrec.encoders.media import MediaError, load_audio, resample_audio
from mmrec.encoders.weights import (
    MissingWeightsError,
    missing_weights_message,
    parse_weights,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- encoder
class HFAudioEncoder(FrozenEncoder):
    """A frozen transformers audio model; long clips are chunked and the chunk vectors pooled.

    Args:
        kind: ``ast``, ``whisper``, ``wav2vec2``, ``hubert``, ``clap``, ``waveform`` or ``auto`` (detect it
            from the config of ``weights`` / ``config``).
        weights: hub id, local folder, local file (with ``config``) or ``random`` (see the module docs);
            ``None`` means the kind's default hub id.
        config: model config for a file or random init: a dict, a ``config.json`` path or a
            ``PretrainedConfig``.
        feature_extractor_kwargs: overrides of the feature extractor built from the config (e.g.
            ``{"chunk_length": 1}``); ignored when a folder / hub id brings its ``preprocessor_config.json``.
        chunk_seconds: window length of the waveform kinds (default 10 s); for spectrogram kinds at most
            the model window (default: the model window).
        min_chunk_fraction: trailing remainders shorter than this fraction of a window are dropped.
        chunk_pooling: ``duration`` (average of chunk vectors weighted by chunk length) or ``mean``.
        max_seconds: only the first ``max_seconds`` of a clip are encoded (``None``: all).
        max_chunks_per_forward: chunks run through the model at once (bounds memory for long clips).
        dtype: compute dtype.
        normalize: L2-normalise outputs.
        seed: seed of a random init.
        name: registry key.

    Example:
        >>> import numpy as np
        >>> enc = create_encoder("hf_audio/tiny-wav2vec2")  # doctest: +SKIP
        >>> enc.encode_raw([AudioClip(np.zeros(8000, np.float32), 16000)]).shape  # doctest: +SKIP
        torch.Size([1, 32])
    """

    modality = "audio"

    def __init__(
        self,
        kind: str = "auto",
        weights: str | os.PathLike[str] | None = None,
        *,
        config: Any = None,
        feature_extractor_kwargs: Mapping[str, Any] | None = None,
        chunk_seconds: float | None = None,
        min_chunk_fraction: float = 0.1,
        chunk_pooling: Literal["duration", "mean"] = "duration",
        max_seconds: float | None = 600.0,
        max_chunks_per_forward: int = 16,
        dtype: str = "float32",
        normalize: bool = False,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if kind != "auto" and kind not in AUDIO_KINDS:
            raise ValueError(f"kind must be 'auto' or one of {sorted(AUDIO_KINDS)}, got {kind!r}")
        if chunk_pooling not in ("duration", "mean"):
            raise ValueError(f"chunk_pooling must be 'duration' or 'mean', got {chunk_pooling!r}")
        if not 0.0 <= min_chunk_fraction < 1.0:
            raise ValueError(f"min_chunk_fraction must be in [0, 1), got {min_chunk_fraction}")
        if max_chunks_per_forward < 1:
            raise ValueError(f"max_chunks_per_forward must be >= 1, got {max_chunks_per_forward}")
        fe_overrides = dict(feature_extractor_kwargs or {})
        if weights is None:
            if kind == "auto":
                raise MissingWeightsError(
                    missing_weights_message(
                        "None",
                        family="hf_audio/auto",
                        hub_example="MIT/ast-finetuned-audioset-10-10-0.4593",
                        detail="hf_audio/auto needs weights to detect the architecture",
                    )
                )
            weights = AUDIO_KINDS[kind].default_hub
        spec = parse_weights(weights)
        kind, model, fe = load_audio_model(kind, spec, config, fe_overrides, seed)
        super().__init__(
            name=name or f"hf_audio/{kind}", weights=spec.identity(seed), dtype=dtype, normalize=normalize
        )
        self.kind = kind
        self.kind_info = AUDIO_KINDS[kind]
        self.backbone = model
        self.feature_extractor = fe
        self.sample_rate = int(fe.sampling_rate)
        self.model_window_s = self._model_window()
        if chunk_seconds is None:
            chunk_seconds = self.model_window_s or DEFAULT_WAVEFORM_WINDOW_S
        if chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
        if self.model_window_s is not None and chunk_seconds > self.model_window_s + 1e-9:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} exceeds the {self.kind} model window of {self.model_window_s} s; "
                "use at most the window (longer clips are chunked automatically)."
            )
        self.chunk_seconds = float(chunk_seconds)
        self.window_samples = round(self.chunk_seconds * self.sample_rate)
        self.min_samples = max(round(0.025 * self.sample_rate), receptive_field(self.backbone.config))
        self.min_chunk_fraction = float(min_chunk_fraction)
        self.chunk_pooling = chunk_pooling
        self.max_seconds = max_seconds
        self.max_chunks_per_forward = int(max_chunks_per_forward)
        cfg = self.backbone.config
        self.use_attention_mask = (
            self.kind_info.input == "waveform" and getattr(cfg, "feat_extract_norm", "layer") == "layer"
        )
        self.output_dim = int(
            cfg.projection_dim if kind == "clap" else getattr(cfg, "d_model", None) or cfg.hidden_size
        )
        self.freeze()

    # ------------------------------------------------------------------ helpers
    def _model_window(self) -> float | None:
        fe = self.feature_extractor
        if self.kind == "ast":
            return fe.max_length * 0.010  # 10 ms frame shift
        if self.kind == "whisper":
            return fe.n_samples / fe.sampling_rate
        if self.kind == "clap":
            return float(fe.max_length_s)
        return None

    def decode_args(self) -> dict[str, Any]:
        """Suggested keyword arguments for :func:`mmrec.encoders.media.load_audio` (decode at the model rate)."""
        return {"target_sr": self.sample_rate, "mono": True, "max_seconds": self.max_seconds}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the backbone and its feature extractor as a transformers folder loadable with
        ``weights=<directory>`` (Whisper: the encoder's tensors under ``encoder.``, as in a full
        ``WhisperModel`` checkpoint).

        Args:
            directory: target folder (created).

        Returns:
            the folder.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.kind == "whisper":
            from safetensors.torch import save_file

            self.backbone.config.save_pretrained(out)
            tensors = {
                f"encoder.{k}": v.detach().float().contiguous() for k, v in self.backbone.state_dict().items()
            }
            save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        else:
            self.backbone.save_pretrained(out)
        self.feature_extractor.save_pretrained(out)
        return out

    # ------------------------------------------------------------------ contract
    def preprocess(self, raw: AudioClip | Any) -> dict[str, torch.Tensor]:
        """One clip -> its chunks' model inputs.

        Args:
            raw: an :class:`AudioClip` (or a path / bytes, decoded with :func:`~mmrec.encoders.media.load_audio`).

        Returns:
            dict with ``inputs`` (``C`` chunks: ``(C, frames, mels)`` for AST, ``(C, mels, frames)`` for
            Whisper, ``(C, 1, frames, mels)`` for CLAP, ``(C, samples)`` zero-padded for waveform kinds),
            ``lengths`` ``(C,)`` valid samples per chunk, ``weights`` ``(C,)`` chunk durations in seconds
            (``is_longer`` ``(C, 1)`` for CLAP).
        """
        clip = (
            raw
            if isinstance(raw, AudioClip)
            else load_audio(raw, target_sr=self.sample_rate, max_seconds=self.max_seconds)
        )
        wav = np.asarray(clip.waveform, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=0)
        if self.max_seconds is not None:
            wav = wav[: math.ceil(self.max_seconds * clip.sample_rate)]
        if wav.size == 0:
            raise MediaError("empty audio", "the clip has no samples")
        wav = resample_audio(wav, clip.sample_rate, self.sample_rate)
        bounds = split_chunks(wav.size, self.window_samples, self.min_chunk_fraction)
        chunks = [wav[s:e] for s, e in bounds]
        weights = torch.tensor([(e - s) / self.sample_rate for s, e in bounds], dtype=torch.float32)
        # chunks shorter than the model's receptive field (or one 25 ms frame) are padded with silence
        chunks = [
            np.pad(c, (0, self.min_samples - c.size)) if c.size < self.min_samples else c for c in chunks
        ]
        lengths = torch.tensor([c.size for c in chunks], dtype=torch.long)
        fe = self.feature_extractor
        out: dict[str, torch.Tensor] = {"lengths": lengths, "weights": weights}
        if self.kind == "ast":
            out["inputs"] = torch.as_tensor(
                fe(chunks, sampling_rate=self.sample_rate, return_tensors="np")["input_values"]
            )
        elif self.kind == "whisper":
            feats = fe(chunks, sampling_rate=self.sample_rate, return_tensors="np")["input_features"]
            out["inputs"] = torch.as_tensor(feats)
        elif self.kind == "clap":
            feats = fe(chunks, sampling_rate=self.sample_rate, return_tensors="np")
            out["inputs"] = torch.as_tensor(feats["input_features"])
            out["is_longer"] = torch.as_tensor(feats["is_longer"]).reshape(len(chunks), 1)
        else:
            values = [
                fe(c, sampling_rate=self.sample_rate, return_tensors="np")["input_values"][0] for c in chunks
            ]
            padded = np.zeros((len(values), max(v.shape[-1] for v in values)), dtype=np.float32)
            for i, v in enumerate(values):
                padded[i, : v.shape[-1]] = v
            out["inputs"] = torch.from_numpy(padded)
        return out

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate the chunks of all items; ``owner`` ``(sum C,)`` says which item each chunk is from.

        Returns:
            dict with the concatenated ``inputs`` (waveforms zero-padded to the longest chunk), ``lengths``,
            ``weights``, ``owner`` and ``counts`` ``(B,)`` (chunks per item).
        """
        if not items:
            raise ValueError("collate needs at least one item")
        counts = torch.tensor([int(it["lengths"].shape[0]) for it in items], dtype=torch.long)
        inputs = [it["inputs"] for it in items]
        if self.kind_info.input == "waveform":
            width = max(x.shape[-1] for x in inputs)
            inputs = [torch.nn.functional.pad(x, (0, width - x.shape[-1])) for x in inputs]
        batch = {
            "inputs": torch.cat(inputs),
            "lengths": torch.cat([it["lengths"] for it in items]),
            "weights": torch.cat([it["weights"] for it in items]),
            "owner": torch.repeat_interleave(torch.arange(len(items)), counts),
            "counts": counts,
        }
        if self.kind == "clap":
            batch["is_longer"] = torch.cat([it["is_longer"] for it in items])
        return batch

    def _encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs, lengths = batch["inputs"], batch["lengths"]
        step = self.max_chunks_per_forward
        if self.kind_info.input == "waveform" and not self.use_attention_mask:
            chunk_vecs = self._encode_equal_lengths(inputs, lengths)
        else:
            parts = []
            for s in range(0, inputs.shape[0], step):
                extra = {"is_longer": batch["is_longer"][s : s + step]} if self.kind == "clap" else {}
                parts.append(self._forward_chunks(inputs[s : s + step], lengths[s : s + step], **extra))
            chunk_vecs = torch.cat(parts)
        chunk_vecs = chunk_vecs.float()
        weights = (
            batch["weights"].float()
            if self.chunk_pooling == "duration"
            else torch.ones_like(batch["weights"]).float()
        )
        return pool_chunks(chunk_vecs, weights, batch["owner"], int(batch["counts"].shape[0]))

    def _forward_chunks(self, x: torch.Tensor, lengths: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        """``(c, ...)`` chunk inputs -> ``(c, D)`` chunk vectors."""
        if self.kind == "ast":
            return self.backbone(input_values=x).pooler_output
        if self.kind == "clap":
            return self.backbone(input_features=x, is_longer=extra["is_longer"]).audio_embeds
        if self.kind == "whisper":
            hidden = self.backbone(input_features=x).last_hidden_state  # (c, frames, D), 20 ms per frame
            hop = self.feature_extractor.hop_length
            valid = torch.clamp(
                torch.div(lengths + 2 * hop - 1, 2 * hop, rounding_mode="floor"), 1, hidden.shape[1]
            )
            return masked_mean(hidden, valid)
        # waveform kinds with an attention mask
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        hidden = self.backbone(input_values=x, attention_mask=mask.long()).last_hidden_state
        frames = self.backbone._get_feat_extract_output_lengths(lengths).clamp(1, hidden.shape[1])
        return masked_mean(hidden, frames)

    def _encode_equal_lengths(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Group-norm conv features cannot mask padding: run chunks of equal length together, unpadded."""
        out = torch.empty(inputs.shape[0], self.output_dim, device=inputs.device)
        for length in torch.unique(lengths).tolist():
            idx = (lengths == length).nonzero().flatten()
            for s in range(0, idx.numel(), self.max_chunks_per_forward):
                sel = idx[s : s + self.max_chunks_per_forward]
                hidden = self.backbone(input_values=inputs[sel, :length]).last_hidden_state
                out[sel] = hidden.mean(dim=1).float()
        return out

    def preprocessing_config(self) -> dict[str, Any]:
        fe = self.feature_extractor.to_dict()
        fe = {
            k: v
            for k, v in fe.items()
            if isinstance(v, (int, float, str, bool, type(None)))
            or (isinstance(v, (list, tuple)) and len(v) <= 16)
        }
        return {
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "mono": "mean",
            "chunk_seconds": self.chunk_seconds,
            "min_chunk_fraction": self.min_chunk_fraction,
            "chunk_pooling": self.chunk_pooling,
            "max_seconds": self.max_seconds,
            "feature_extractor": fe,
            "model_config": _config_digest(self.backbone.config),
        }

    def pooling(self) -> str:
        return f"{self.kind_info.pooling}; chunks: {self.chunk_pooling}-weighted mean"


def _config_digest(config: Any) -> str:
    import hashlib

    text = (
        config.to_json_string(use_diff=False)
        if hasattr(config, "to_json_string")
        else json.dumps(config, default=str)
    )
    data = json.loads(text)
    for volatile in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures"):
        data.pop(volatile, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _register_kind(kind: str) -> None:
    info = AUDIO_KINDS[kind]

    @ENCODERS.register(
        f"hf_audio/{kind}", modality="audio", default_weights=info.default_hub, dim=DEFAULT_WEIGHTS_DIM[kind]
    )
    def _build(weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> HFAudioEncoder:
        return HFAudioEncoder(kind, weights, name=f"hf_audio/{kind}", **kwargs)

    _build.__doc__ = (
        f"transformers {kind} audio encoder ({info.pooling}); weights default to {info.default_hub}."
    )


def _register_tiny(kind: str) -> None:
    @ENCODERS.register(f"hf_audio/tiny-{kind}", modality="audio", tiny=True, dim=32)
    def _build(weights: str | os.PathLike[str] | None = "random", **kwargs: Any) -> HFAudioEncoder:
        kwargs.setdefault("config", TINY_CONFIGS[kind])
        kwargs.setdefault("feature_extractor_kwargs", TINY_FEATURE_EXTRACTOR[kind])
        kwargs.setdefault("chunk_seconds", TINY_CHUNK_SECONDS)
        return HFAudioEncoder(kind, weights, name=f"hf_audio/tiny-{kind}", **kwargs)

    _build.__doc__ = f"tiny random {kind} (hidden 32, 2 layers, 16 kHz, 1 s window) for tests."


for _kind in AUDIO_KINDS:
    _register_kind(_kind)
for _kind in ("ast", "whisper", "wav2vec2", "hubert", "clap"):
    _register_tiny(_kind)


@ENCODERS.register("hf_audio/auto", modality="audio", generic=True)
def hf_audio_auto(weights: str | os.PathLike[str], **kwargs: Any) -> HFAudioEncoder:
    """Any supported transformers audio model; the kind is read from the config's ``model_type``.

    Args:
        weights: hub id, ``save_pretrained`` folder, or state-dict file (with ``config=``).
        **kwargs: :class:`HFAudioEncoder` options.
    """
    return HFAudioEncoder("auto", weights, **kwargs)


__all__ = [
    "AUDIO_KINDS",
    "DEFAULT_WAVEFORM_WINDOW_S",
    "TINY_CONFIGS",
    "TINY_FEATURE_EXTRACTOR",
    "AudioKind",
    "HFAudioEncoder",
    "Kind",
    "hf_audio_auto",
    "kind_of_model_type",
    "load_matching_state_dict",
    "split_chunks",
]
