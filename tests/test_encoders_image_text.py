"""open_clip, timm and transformers text encoders: weights loading paths, pooling, precision, MiniLM.

Every checkpoint is a tiny random model written by the test; nothing is downloaded (hubs are offline,
see conftest.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image

from mmrec.encoders import MissingWeightsError, create_encoder
from mmrec.encoders.openclip_encoders import TINY_CLIP_CFG, tiny_clip_model
from mmrec.encoders.text_encoders import TINY_BERT_CFG, minilm_path
from mmrec.encoders.timm_encoders import TINY_VIT, TINY_VIT_CFG_OVERLAY, TINY_VIT_KWARGS
from mmrec.encoders.weights import file_sha256

SENTENCES = [
    "A red summer dress with pockets.",
    "wireless noise-cancelling headphones, 30h battery",
    "Hiking boots",
]
TINY_NAMES = ["open_clip/tiny", "open_clip_text/tiny", "timm/tiny", "hf_text/tiny"]


def images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (36 + 10 * i, 48, 3), dtype=np.uint8)) for i in range(n)]


def raw_for(name: str) -> list:
    return images() if name in ("open_clip/tiny", "timm/tiny") else SENTENCES[:2]


def assert_missing_weights(exc: pytest.ExceptionInfo[MissingWeightsError]) -> None:
    msg = str(exc.value)
    assert (
        "three ways" in msg
        and "hub tag" in msg
        and "local checkpoint file" in msg
        and "local directory" in msg
    )


# ------------------------------------------------------------------------------------------------ open_clip
@pytest.fixture(scope="module")
def clip_model() -> torch.nn.Module:
    return tiny_clip_model(seed=3)


def _clip_reference(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tokenizer = open_clip.get_tokenizer(
        "ViT-B-32", context_length=TINY_CLIP_CFG["text_cfg"]["context_length"]
    )
    with torch.no_grad():
        img = model.encode_image(torch.stack([transform(i) for i in images()]), normalize=True)
        txt = model.encode_text(tokenizer(SENTENCES), normalize=True)
    return img, txt


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_open_clip_local_file(clip_model: torch.nn.Module, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"tiny_clip.{fmt}"
    if fmt == "safetensors":
        safetensors.torch.save_file(clip_model.state_dict(), path)
    else:
        torch.save(clip_model.state_dict(), path)
    ref_img, ref_txt = _clip_reference(clip_model)

    enc_img = create_encoder("open_clip/tiny", weights=str(path))
    enc_txt = create_encoder("open_clip_text/tiny", weights=str(path))
    assert enc_img.weights_identity == f"sha256:{file_sha256(path)}"
    torch.testing.assert_close(enc_img.encode_raw(images()), ref_img, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(enc_txt.encode_raw(SENTENCES), ref_txt, atol=1e-6, rtol=1e-5)
    assert enc_img.preprocess(images()[0]).shape == (3, 32, 32)
    assert enc_txt.collate(SENTENCES).shape == (3, 16)


def test_open_clip_local_directory(clip_model: torch.nn.Module, tmp_path: Path) -> None:
    ref_img, ref_txt = _clip_reference(clip_model)
    plain = tmp_path / "plain"
    plain.mkdir()
    safetensors.torch.save_file(clip_model.state_dict(), plain / "open_clip_model.safetensors")
    enc = create_encoder("open_clip/tiny", weights=str(plain))
    assert enc.weights_identity.startswith("dir:")
    torch.testing.assert_close(enc.encode_raw(images()), ref_img, atol=1e-6, rtol=1e-5)

    # an open_clip folder with open_clip_config.json describes its own architecture (local-dir: schema)
    hub_style = tmp_path / "hub_style"
    hub_style.mkdir()
    torch.save(clip_model.state_dict(), hub_style / "open_clip_pytorch_model.bin")
    import open_clip

    from mmrec.encoders.openclip_encoders import _merge_cfg

    cfg = _merge_cfg(open_clip.get_model_config("ViT-B-32"), TINY_CLIP_CFG)
    (hub_style / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    enc_txt = create_encoder("open_clip_text/model", model_name="ViT-B-32", weights=str(hub_style))
    torch.testing.assert_close(enc_txt.encode_raw(SENTENCES), ref_txt, atol=1e-6, rtol=1e-5)


def test_open_clip_wrong_checkpoint_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"foo": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="does not fit"):
        create_encoder("open_clip/tiny", weights=str(path))
    with pytest.raises(ValueError, match="hub tag"):
        create_encoder("open_clip/tiny", weights="openai")  # a tag's weights cannot fit the tiny config


# ------------------------------------------------------------------------------------------------ timm
@pytest.fixture(scope="module")
def vit_with_head() -> torch.nn.Module:
    import timm

    torch.manual_seed(5)
    return timm.create_model(
        TINY_VIT,
        pretrained=False,
        num_classes=7,
        pretrained_cfg_overlay=TINY_VIT_CFG_OVERLAY,
        **TINY_VIT_KWARGS,
    ).eval()


def _timm_reference(model: torch.nn.Module) -> torch.Tensor:
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    x = torch.stack([transform(i) for i in images()])
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_local_file_drops_classifier(vit_with_head: torch.nn.Module, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"vit.{fmt}"
    sd = vit_with_head.state_dict()
    assert "head.weight" in sd  # the file holds a classifier, the encoder must drop it
    if fmt == "safetensors":
        safetensors.torch.save_file(sd, path)
    else:
        torch.save({"state_dict": sd, "epoch": 3}, path)
    enc = create_encoder("timm/tiny", weights=str(path))
    assert enc.weights_identity == f"sha256:{file_sha256(path)}"
    torch.testing.assert_close(enc.encode_raw(images()), _timm_reference(vit_with_head), atol=1e-6, rtol=1e-5)


def test_timm_local_directory(vit_with_head: torch.nn.Module, tmp_path: Path) -> None:
    from timm.models import save_for_hf

    save_for_hf(vit_with_head, str(tmp_path / "vit"), safe_serialization=True)
    assert (tmp_path / "vit" / "model.safetensors").is_file() and (tmp_path / "vit" / "config.json").is_file()
    enc = create_encoder("timm/tiny", weights=str(tmp_path / "vit"))
    assert enc.weights_identity.startswith("dir:")
    assert enc.preprocessing_config()["input_size"] == [3, 32, 32]
    torch.testing.assert_close(enc.encode_raw(images()), _timm_reference(vit_with_head), atol=1e-6, rtol=1e-5)


def test_timm_wrong_checkpoint_is_an_error(tmp_path: Path) -> None:
    import timm

    other = timm.create_model("resnet18", pretrained=False, num_classes=0)
    path = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(other.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        create_encoder("timm/tiny", weights=str(path))


# ------------------------------------------------------------------------------------------------ hf text
@pytest.fixture(scope="module")
def tiny_bert() -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    cfg = dict(TINY_BERT_CFG)
    torch.manual_seed(7)
    return AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).eval()


def _bert_reference(model: torch.nn.Module, pooling: str = "mean") -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def test_hf_text_local_directory(tiny_bert: torch.nn.Module, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tiny_bert.save_pretrained(tmp_path / "bert")
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(tmp_path / "bert")
    enc = create_encoder("hf_text/tiny", weights=str(tmp_path / "bert"))
    assert enc.weights_identity.startswith("dir:")
    assert enc.preprocessing_config()["tokenizer_id"] == "same-as-weights"
    torch.testing.assert_close(enc.encode_raw(SENTENCES), _bert_reference(tiny_bert), atol=1e-5, rtol=1e-5)


def test_hf_text_local_file(tiny_bert: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "bert.safetensors"
    safetensors.torch.save_file(tiny_bert.state_dict(), path)
    enc = create_encoder("hf_text/tiny", weights=str(path), pooling="cls")
    assert enc.weights_identity == f"sha256:{file_sha256(path)}"
    torch.testing.assert_close(
        enc.encode_raw(SENTENCES), _bert_reference(tiny_bert, "cls"), atol=1e-5, rtol=1e-5
    )


def test_hf_text_generic_reads_sentence_transformers_folder() -> None:
    enc = create_encoder("hf_text/model", weights=str(minilm_path()))
    assert (enc.pooling(), enc.normalize, enc.max_length, enc.output_dim) == ("mean", True, 256, 384)


def test_minilm_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    enc = create_encoder("text/minilm")
    assert enc.output_dim == 384 and enc.weights_identity.startswith("dir:")
    ours = enc.encode_raw(SENTENCES)
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    theirs = st.encode(SENTENCES, convert_to_tensor=True, batch_size=len(SENTENCES))
    torch.testing.assert_close(ours, theirs.float().cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)))


def test_pooling_mean_and_cls_differ() -> None:
    mean = create_encoder("hf_text/tiny", weights="random", pooling="mean")
    cls = create_encoder("hf_text/tiny", weights="random", pooling="cls")
    assert mean.fingerprint() != cls.fingerprint()
    assert not torch.allclose(mean.encode_raw(SENTENCES), cls.encode_raw(SENTENCES))
    with pytest.raises(ValueError, match="pooling must be one of"):
        create_encoder("hf_text/tiny", weights="random", pooling="max")


@pytest.mark.parametrize("name", TINY_NAMES)
def test_normalize_gives_unit_norm(name: str) -> None:
    enc = create_encoder(name, weights="random", normalize=True)
    out = enc.encode_raw(raw_for(name))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(len(out)))


@pytest.mark.parametrize("name", TINY_NAMES)
def test_empty_text_is_rejected(name: str) -> None:
    enc = create_encoder(name, weights="random")
    if enc.modality != "text":
        with pytest.raises(TypeError, match="PIL"):
            enc.preprocess("not an image")
        return
    for bad in ("", "   \n\t"):
        with pytest.raises(ValueError, match="empty or whitespace-only"):
            enc.preprocess(bad)
    with pytest.raises(TypeError, match="expects a str"):
        enc.preprocess(None)


# ------------------------------------------------------------------------------------------------ all families
@pytest.mark.parametrize("name", TINY_NAMES)
def test_explicit_random_init_is_recorded_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmrec.encoders.base"):
        enc = create_encoder(name, weights="random", seed=4)
    assert enc.weights_identity == "random-init:4"
    assert enc.describe()["weights"] == "random-init:4"
    assert any(
        "RANDOMLY INITIALISED" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records
    )


@pytest.mark.parametrize("name", TINY_NAMES)
def test_missing_file_or_empty_dir_names_the_three_ways(name: str, tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as exc:
        create_encoder(name, weights=str(tmp_path / "no_such_checkpoint.safetensors"))
    assert_missing_weights(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError) as exc:
        create_encoder(name, weights=str(tmp_path / "empty"))
    assert_missing_weights(exc)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("open_clip/ViT-B-32", "laion2b_s34b_b79k"),
        ("open_clip_text/RN50", "openai"),
        ("open_clip/ViT-B-32", "no_such_tag"),
        ("timm/resnet18", "default"),
        ("timm/resnet18", "no_such_tag"),
        ("hf_text/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    ],
)
def test_unreachable_hub_fails_fast(name: str, weights: str) -> None:
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as exc:
        create_encoder(name, weights=weights)
    assert_missing_weights(exc)
    assert weights in str(exc.value)
    assert time.perf_counter() - start < 20, "hub failure must not wait on the network (HF_HUB_OFFLINE=1)"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_half_precision_runs(name: str, dtype: str) -> None:
    fp32 = create_encoder(name, weights="random", normalize=True)
    half = create_encoder(name, weights="random", normalize=True, dtype=dtype)
    assert next(half.parameters()).dtype == getattr(torch, dtype)
    assert half.fingerprint() != fp32.fingerprint()
    a, b = fp32.encode_raw(raw_for(name)), half.encode_raw(raw_for(name))
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert F.cosine_similarity(a, b).min() > 0.97
