"""Builders shared by the VIP5 tests: a toy dataset with reviews, feature stores, and tiny offline backbones
(a 2-layer T5 with a Unigram tokenizer trained on the prompt vocabulary, a 2-layer BERT with the bundled
MiniLM WordPiece tokenizer), saved with ``save_pretrained`` and loaded back through the local-directory
path exactly as real weights are."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data.canonical import CanonicalDataset, write_dataset
from mmrec.prompts import load_templates
from mmrec.store import EmbeddingStore, write_store

WORDS = [
    "great",
    "fit",
    "love",
    "colour",
    "nice",
    "fabric",
    "soft",
    "bad",
    "size",
    "small",
    "large",
    "warm",
    "light",
    "comfy",
    "the",
    "it",
    "this",
    "is",
    "and",
    "a",
    "very",
    "too",
    "for",
    "my",
    "of",
    "with",
    "okay",
]

TINY_T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_ff": 64,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 2,
    "d_kv": 16,
    "dropout_rate": 0.0,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
}

TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def toy_reviews_dataset(
    root: Path, *, num_items: int = 30, num_users: int = 24, min_len: int = 4, max_len: int = 8, seed: int = 0
) -> CanonicalDataset:
    """Users walk through consecutive items; every interaction has a short review."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {"item_id": [f"i{k:03d}" for k in range(num_items)], "title": [f"item {k}" for k in range(num_items)]}
    )
    rows = []
    for u in range(num_users):
        n = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, num_items))
        for t in range(n):
            words = rng.choice(WORDS, size=int(rng.integers(4, 8))).tolist()
            rows.append(
                (
                    f"u{u:03d}",
                    f"i{(start + t) % num_items:03d}",
                    1000 + 10 * t,
                    float(rng.integers(1, 6)),
                    " ".join(words) + ".",
                )
            )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "review"])
    return write_dataset(root / "toy", items, inter, name="toy", source_format="python")


def toy_feature_store(
    root: Path, item_ids: list[str], dim: int = 6, name: str = "image", seed: int = 1
) -> EmbeddingStore:
    rng = np.random.default_rng(seed)
    return write_store(
        root / name, item_ids, rng.normal(size=(len(item_ids), dim)).astype(np.float32), encoder="test/random"
    )


def _prompt_words() -> list[str]:
    ts = load_templates()
    text = " ".join(t.source for t in ts.templates) + " " + " ".join(WORDS) + " yes no user"
    text = re.sub(r"\{[a-z]+\}", " ", text)
    return sorted({w for w in re.findall(r"[A-Za-z]+", text)})


def tiny_t5_dir(root: Path, seed: int = 0) -> Path:
    """A 2-layer T5 (d_model 32) and a Unigram T5 tokenizer over the prompt vocabulary, saved to a folder."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -2.0) for w in _prompt_words()]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_,:?.-!'"
    vocab += [(c, -5.0) for c in chars] + [("▁" + c, -5.5) for c in chars]
    vocab += [(f"{a}{b}", -4.0) for a in "0123456789" for b in "0123456789"]
    tok = T5TokenizerFast(vocab=vocab, extra_ids=1)
    cfg = {k: v for k, v in TINY_T5.items() if k != "model_type"}
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), **cfg))
    out = root / "tiny-t5"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_bert_dir(root: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with the bundled MiniLM WordPiece tokenizer, saved to a folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmrec.encoders.text_encoders import minilm_path

    cfg = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**cfg))
    out = root / "tiny-bert"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out
