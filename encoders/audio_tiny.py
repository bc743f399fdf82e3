"""Tiny audio-model configs (hidden 32, 2 layers, random weights) for the ``hf_audio/tiny-*`` test encoders, and the output width of each kind's default weights."""

from __future__ import annotations

from typing import Any

# ------------------------------------------------------------------------------------- tiny configs
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "ast": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_mel_bins": 16,
        "max_length": 100,
        "patch_size": 16,
        "frequency_stride": 10,
        "time_stride": 10,
    },
    "whisper": {
        "d_model": 32,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 64,
        "num_mel_bins": 16,
        "max_source_positions": 50,
        "max_target_positions": 32,
        "vocab_size": 64,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 1,
    },
    "wav2vec2": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (32, 32),
        "conv_stride": (5, 4),
        "conv_kernel": (10, 4),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
    },
    "clap": {
        "spec_size": 64,
        "num_mel_bins": 16,
        "window_size": 4,
        "hidden_size": 32,
        "patch_embeds_hidden_size": 16,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "projection_dim": 32,
        "enable_fusion": False,
        "patch_size": 4,
        "patch_stride": [4, 4],
    },
}

#: the tiny HuBERT has the tiny wav2vec2's config
TINY_CONFIGS["hubert"] = dict(TINY_CONFIGS["wav2vec2"])

#: Feature-extractor overrides of the tiny variants: 16 kHz and a 1 s window everywhere.
TINY_FEATURE_EXTRACTOR: dict[str, dict[str, Any]] = {
    "ast": {},
    "whisper": {"chunk_length": 1},
    "wav2vec2": {},
    "hubert": {},
    "clap": {
        "sampling_rate": 16000,
        "hop_length": 160,
        "fft_window_size": 400,
        "max_length_s": 1,
        "frequency_max": 8000,
    },
}


TINY_CHUNK_SECONDS = 1.0


# ------------------------------------------------------------------------------------------ registry
#: output dim with each kind's default weights (listed by `mmrec encoders list` without building anything)
DEFAULT_WEIGHTS_DIM = {
    "ast": 768,
    "whisper": 512,
    "wav2vec2": 768,
    "hubert": 768,
    "clap": 512,
    "waveform": 768,
}
