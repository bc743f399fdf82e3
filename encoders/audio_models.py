"""The transformers models behind the audio encoders: one entry per kind (model, config and feature-extractor classes, window, pooling), and loading them from a hub tag, a local folder or file, or a config (random weights)."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmrec.encoders.weights import (
    MissingWeightsError,
    load_state_dict_file,
    missing_weights_message,
    seeded,
)

log = logging.getLogger("mmrec.encoders.audio_encoders")  # the audio encoders' logger, as before the split

Kind = Literal["ast", "whisper", "wav2vec2", "hubert", "clap", "waveform"]


@dataclass(frozen=True)
class AudioKind:
    """What differs between audio model kinds.

    Attributes:
        name: the kind (``ast``, ``whisper``...).
        model_types: ``config.json`` ``model_type`` values that map to this kind.
        default_hub: hub id used when ``weights`` is not given.
        input: ``spectrogram`` (fixed-size features per window) or ``waveform`` (raw samples).
        pooling: what the encoder reports as its pooling.
    """

    name: str
    model_types: tuple[str, ...]
    default_hub: str
    input: Literal["spectrogram", "waveform"]
    pooling: str


AUDIO_KINDS: dict[str, AudioKind] = {
    k.name: k
    for k in (
        AudioKind(
            "ast",
            ("audio-spectrogram-transformer",),
            "MIT/ast-finetuned-audioset-10-10-0.4593",
            "spectrogram",
            "pooler_output (mean of CLS + distillation tokens)",
        ),
        AudioKind(
            "whisper",
            ("whisper",),
            "openai/whisper-base",
            "spectrogram",
            "mean of encoder last_hidden_state over frames holding audio",
        ),
        AudioKind(
            "wav2vec2",
            ("wav2vec2",),
            "facebook/wav2vec2-base-960h",
            "waveform",
            "masked mean of last_hidden_state",
        ),
        AudioKind(
            "hubert",
            ("hubert",),
            "facebook/hubert-base-ls960",
            "waveform",
            "masked mean of last_hidden_state",
        ),
        AudioKind(
            "clap",
            ("clap", "clap_audio_model"),
            "laion/clap-htsat-unfused",
            "spectrogram",
            "audio_embeds (projection of the pooled HTS-AT output)",
        ),
        AudioKind(
            "waveform",
            ("wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d", "wav2vec2-conformer"),
            "microsoft/wavlm-base-plus",
            "waveform",
            "masked mean of last_hidden_state",
        ),
    )
}


#: Default window (seconds) of the waveform kinds (``chunk_seconds`` overrides it).
DEFAULT_WAVEFORM_WINDOW_S = 10.0


def kind_of_model_type(model_type: str) -> str:
    """The audio kind of a ``config.json`` ``model_type``.

    Example:
        >>> kind_of_model_type("audio-spectrogram-transformer")
        'ast'
    """
    for kind in AUDIO_KINDS.values():
        if model_type in kind.model_types:
            return kind.name
    known = sorted(t for k in AUDIO_KINDS.values() for t in k.model_types)
    raise ValueError(
        f"model_type {model_type!r} is not an audio model hf_audio knows; supported model types: {known}. "
        "Pass kind= explicitly if the checkpoint is one of these architectures under another name."
    )


# ------------------------------------------------------------------------------------ model classes
def _config_class(kind: str) -> type:
    import transformers as tf

    return {
        "ast": tf.ASTConfig,
        "whisper": tf.WhisperConfig,
        "wav2vec2": tf.Wav2Vec2Config,
        "hubert": tf.HubertConfig,
        "clap": tf.ClapAudioConfig,
    }[kind]


def _model_class(kind: str) -> Any:
    import transformers as tf

    if kind == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder
    return {
        "ast": tf.ASTModel,
        "wav2vec2": tf.Wav2Vec2Model,
        "hubert": tf.HubertModel,
        "clap": tf.ClapAudioModelWithProjection,
        "waveform": tf.AutoModel,
    }[kind]


def _build_model(kind: str, config: Any) -> nn.Module:
    if kind == "waveform":
        import transformers as tf

        return tf.AutoModel.from_config(config)
    return _model_class(kind)(config)


def _resolve_config(kind: str, config: Any) -> Any:
    """``config`` (dict, path to ``config.json`` or a folder holding one, ``PretrainedConfig``) -> config."""
    import transformers as tf

    if isinstance(config, tf.PretrainedConfig):
        return copy.deepcopy(config)
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"config {config!r} is neither a config.json file nor a folder holding one"
            )
        config = json.loads(path.read_text())
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a dict, a config.json path or a PretrainedConfig, got {type(config).__name__}"
        )
    data = dict(config)
    model_type = data.get("model_type")
    if kind == "waveform":
        if not model_type:
            raise ValueError("a 'waveform' config needs its model_type (e.g. 'wavlm')")
        return tf.AutoConfig.for_model(**data)
    if kind == "clap" and model_type == "clap":  # full CLAP config: take its audio tower
        data = dict(data.get("audio_config") or {})
    data.pop("model_type", None)
    return _config_class(kind)(**data)


def _model_type_of(config: Any) -> str | None:
    if isinstance(config, Mapping):
        return config.get("model_type")
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        return json.loads(path.read_text()).get("model_type") if path.is_file() else None
    return getattr(config, "model_type", None)


def _feature_extractor_from_config(kind: str, config: Any, overrides: Mapping[str, Any]) -> Any:
    import transformers as tf

    if kind == "ast":
        kw: dict[str, Any] = {"num_mel_bins": config.num_mel_bins, "max_length": config.max_length}
        return tf.ASTFeatureExtractor(**{**kw, **overrides})
    if kind == "whisper":
        # the encoder accepts exactly 2 * max_source_positions mel frames (10 ms hop): 1500 -> 30 s
        kw = {"feature_size": config.num_mel_bins, "chunk_length": max(1, config.max_source_positions // 50)}
        return tf.WhisperFeatureExtractor(**{**kw, **overrides})
    if kind == "clap":
        kw = {"feature_size": config.num_mel_bins, "truncation": "rand_trunc", "padding": "repeatpad"}
        return tf.ClapFeatureExtractor(**{**kw, **overrides})
    use_mask = getattr(config, "feat_extract_norm", "layer") == "layer"
    kw = {"return_attention_mask": use_mask, "do_normalize": True}
    return tf.Wav2Vec2FeatureExtractor(**{**kw, **overrides})


def _feature_extractor_class(kind: str) -> Any:
    import transformers as tf

    return {
        "ast": tf.ASTFeatureExtractor,
        "whisper": tf.WhisperFeatureExtractor,
        "clap": tf.ClapFeatureExtractor,
    }.get(kind, tf.Wav2Vec2FeatureExtractor)


# ----------------------------------------------------------------------------------- state dicts
def load_matching_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> int:
    """Load ``state_dict`` into ``module``, finding the key prefix that maps it onto the module.

    Checkpoints of the same backbone come with different prefixes (``model.encoder.`` in a Whisper
    seq2seq checkpoint, ``wav2vec2.`` in a CTC head checkpoint, none in a bare model). The prefix that maps
    most keys onto ``module.state_dict()`` is stripped; keys under other prefixes (decoder, heads) are
    ignored; every key of the module must be provided with the right shape.

    Args:
        module: the model to fill.
        state_dict: tensors read from ``source``.
        source: where they come from, for error messages.

    Returns:
        the number of tensors loaded.

    Raises:
        ValueError: keys of the module are missing from the checkpoint or shapes differ.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> load_matching_state_dict(lin, {"model.weight": torch.zeros(2, 2), "model.bias": torch.zeros(2)}, "x")
        2
    """
    target = module.state_dict()
    counts: Counter[str] = Counter()
    for key in state_dict:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in target:
                counts[".".join(parts[:i]) + ("." if i else "")] += 1
    if not counts:
        raise ValueError(
            f"no tensor of the checkpoint {source} matches {type(module).__name__} (first keys: "
            f"{list(state_dict)[:3]}); it holds another architecture. Pass the matching kind / config."
        )
    prefix = max(counts, key=lambda p: (counts[p], -len(p)))
    mapped = {
        k[len(prefix) :]: v
        for k, v in state_dict.items()
        if k.startswith(prefix) and k[len(prefix) :] in target
    }
    missing = [k for k in target if k not in mapped]
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in mapped.items()
        if v.shape != target[k].shape
    ]
    if missing or wrong:
        detail = f"missing {len(missing)} tensors (e.g. {missing[:3]})" if missing else ""
        detail += f"{'; ' if detail else ''}shape mismatches {wrong[:3]}" if wrong else ""
        raise ValueError(
            f"the checkpoint {source} does not fit {type(module).__name__} with the given config ({detail}). "
            "Pass the config the checkpoint was trained with (config=...), or load a save_pretrained folder."
        )
    module.load_state_dict(mapped, strict=True)
    ignored = len(state_dict) - len(mapped)
    if ignored:
        log.info("ignored %d tensors of %s outside %r (e.g. decoder or task heads)", ignored, source, prefix)
    return len(mapped)


def _read_folder_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers ``save_pretrained`` folder (single file or sharded)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(load_state_dict_file(folder / shard))
            return sd
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_state_dict_file(folder / name)
    raise MissingWeightsError(
        missing_weights_message(str(folder), family="hf_audio", detail="the folder has no model.safetensors")
    )


# ------------------------------------------------------------------------------------------ loading
def _hub_error(what: str, kind: str, e: BaseException) -> MissingWeightsError:
    hub = AUDIO_KINDS[kind].default_hub if kind in AUDIO_KINDS else "MIT/ast-finetuned-audioset-10-10-0.4593"
    return MissingWeightsError(
        missing_weights_message(
            what, family=f"hf_audio/{kind}", hub_example=hub, detail=f"{type(e).__name__}: {e}"
        )
    )


def load_audio_model(
    kind: str, spec: Any, config: Any, fe_overrides: Mapping[str, Any], seed: int
) -> tuple[str, nn.Module, Any]:
    """Resolve ``kind`` and load (model, feature extractor) for a parsed weights spec."""
    import transformers as tf

    if spec.kind == "random":
        if kind == "auto":
            if config is None:
                raise ValueError(
                    "hf_audio/auto with random weights needs a config (its model_type picks the kind)"
                )
            kind = kind_of_model_type(str(_model_type_of(config)))
        cfg = _resolve_config(kind, config if config is not None else {})
        with seeded(seed):
            model = _build_model(kind, cfg)
        return kind, model, _feature_extractor_from_config(kind, cfg, fe_overrides)

    if spec.kind == "file":
        cfg_source = config
        if cfg_source is None and (Path(spec.value).parent / "config.json").is_file():
            cfg_source = Path(spec.value).parent / "config.json"
        if cfg_source is None:
            raise ValueError(
                f"loading the state dict {spec.value} needs the model config: pass config= (a dict, a config.json "
                "path or a PretrainedConfig), or put config.json next to the file, or pass a save_pretrained folder."
            )
        if kind == "auto":
            kind = kind_of_model_type(str(_model_type_of(cfg_source)))
        cfg = _resolve_config(kind, cfg_source)
        model = _build_model(kind, cfg)
        load_matching_state_dict(model, load_state_dict_file(spec.value), spec.value)
        fe_dir = Path(spec.value).parent
        return kind, model, _load_feature_extractor(kind, str(fe_dir), cfg, fe_overrides, optional=True)

    source = spec.value  # a folder or a hub id
    if kind == "auto":
        try:
            cfg_dict, _ = tf.PretrainedConfig.get_config_dict(source)
        except (OSError, ValueError) as e:
            raise _hub_error(source, "auto", e) from e
        kind = kind_of_model_type(str(cfg_dict.get("model_type")))
    try:
        if spec.kind == "dir" and kind == "whisper":
            cfg = _resolve_config("whisper", source)
            model = _build_model("whisper", cfg)
            load_matching_state_dict(model, _read_folder_state_dict(Path(source)), source)
        elif kind == "whisper":
            model = tf.WhisperModel.from_pretrained(source, dtype=torch.float32).get_encoder()
        else:
            model = _model_class(kind).from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as e:
        if spec.kind == "dir" and not isinstance(e, OSError):
            raise
        raise _hub_error(source, kind, e) from e
    return kind, model, _load_feature_extractor(kind, source, model.config, fe_overrides, optional=True)


def _load_feature_extractor(
    kind: str, source: str, config: Any, overrides: Mapping[str, Any], optional: bool
) -> Any:
    if not Path(source).is_dir() or (Path(source) / "preprocessor_config.json").is_file():
        try:
            return _feature_extractor_class(kind).from_pretrained(source)
        except (OSError, ValueError) as e:
            if not optional:
                raise
            log.info("no feature extractor config at %s (%s); building it from the model config", source, e)
    return _feature_extractor_from_config(kind, config, overrides)
