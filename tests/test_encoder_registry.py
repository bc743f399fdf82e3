"""Every tiny encoder in the registry honours the frozen-encoder contract (DESIGN §4).

The test is generic: it loops over ``list_encoders(tiny=True)``, so an encoder family gets tested by
registering a tiny variant (see the docstring of ``mmrec.encoders`` for the ``test_kwargs`` convention).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmrec.cli import main as mmrec_main
from mmrec.encoders import (
    ENCODERS,
    MODALITIES,
    AudioClip,
    FrozenEncoder,
    VideoClip,
    create_encoder,
    list_encoders,
)


def encoders_cli(args: list[str]) -> int:
    return mmrec_main(["encoders", *args])

TINY = list_encoders(tiny=True)


def raw_inputs(modality: str, n: int = 2) -> list[Any]:
    """``n`` distinct, deterministic raw items of ``modality``."""
    rng = np.random.default_rng(0)
    if modality == "image":
        return [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)) for i in range(n)]
    if modality == "text":
        return ["a red summer dress with pockets", "wireless noise cancelling headphones"][:n]
    if modality == "audio":
        return [AudioClip(rng.uniform(-0.5, 0.5, 16000).astype(np.float32), 16000) for _ in range(n)]
    if modality == "video":
        return [VideoClip(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8), fps=8.0) for _ in range(n)]
    raise AssertionError(f"unknown modality {modality!r}")


def tiny_kwargs(name: str, tmp_path: Path) -> dict[str, Any]:
    """``weights="random"`` unless the registry entry gives ``test_kwargs`` (a dict or ``tmp_path -> dict``)."""
    spec = ENCODERS.meta(name).get("test_kwargs", {"weights": "random"})
    return dict(spec(tmp_path) if callable(spec) else spec)


def encode(enc: FrozenEncoder, raws: list[Any]) -> torch.Tensor:
    return enc.encode(enc.collate([enc.preprocess(r) for r in raws]))


def test_tiny_variants_exist() -> None:
    assert {"open_clip/tiny", "open_clip_text/tiny", "timm/tiny", "hf_text/tiny"} <= set(TINY)


def test_every_encoder_family_has_a_tiny_variant() -> None:
    """The contract test below runs on tiny variants only, so a family without one would go untested."""
    library = [k for k in ENCODERS.list() if ENCODERS.get(k).__module__.startswith("mmrec.")]  # not tests'
    families = {key.split("/")[0] for key in library}
    tested = {key.split("/")[0] for key in TINY if key in library}
    # text/minilm is the bundled MiniLM: an HFTextEncoder, the class hf_text/tiny runs through the contract
    assert families - tested == {"text"}, "register a tiny variant (tiny=True) for each new encoder family"


@pytest.mark.parametrize("name", TINY)
def test_tiny_encoder_contract(name: str, tmp_path: Path) -> None:
    kwargs = tiny_kwargs(name, tmp_path)
    enc = create_encoder(name, **kwargs)
    assert isinstance(enc, FrozenEncoder)
    assert enc.modality in MODALITIES
    assert enc.output_dim > 0
    meta_dim = ENCODERS.meta(name).get("dim")
    assert meta_dim in (None, enc.output_dim), "registry metadata 'dim' disagrees with the built encoder"

    raws = raw_inputs(enc.modality)
    out = encode(enc, raws)
    assert out.shape == (2, enc.output_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1]), "two different inputs gave the same vector"

    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert torch.equal(out, encode(enc, raws)), "encoding the same batch twice differs"

    # the fingerprint is stable, JSON-describable, and equal for a rebuilt encoder with the same weights
    json.dumps(enc.describe())
    fp = enc.fingerprint()
    assert fp == enc.fingerprint()
    again = create_encoder(name, **kwargs)
    assert again.fingerprint() == fp
    torch.testing.assert_close(encode(again, raws), out)

    # ... and changes with the weights
    if "seed" in inspect.signature(ENCODERS.get(name)).parameters and kwargs.get("weights") == "random":
        other = create_encoder(name, **{**kwargs, "seed": 1})
        assert other.weights_identity != enc.weights_identity
        assert other.fingerprint() != fp
        assert not torch.allclose(encode(other, raws), out)
    enc.weights_identity = "sha256:" + "0" * 64
    assert enc.fingerprint() != fp


def test_list_patterns_and_metadata() -> None:
    assert "text/minilm" in list_encoders("text/*")
    assert set(list_encoders("open_clip/*")) >= {
        "open_clip/ViT-B-32",
        "open_clip/ViT-B-16",
        "open_clip/ViT-L-14",
        "open_clip/RN50",
    }
    assert set(list_encoders("timm/*")) >= {
        "timm/vit_base_patch16_224",
        "timm/resnet50",
        "timm/convnext_tiny",
        "timm/model",
    }
    assert ENCODERS.meta("open_clip/ViT-L-14")["dim"] == 768
    assert ENCODERS.meta("timm/resnet50")["dim"] == 2048


def test_create_encoder_falls_back_to_generic_builder() -> None:
    enc = create_encoder("timm/resnet18", weights="random")
    assert enc.name == "timm/resnet18" and enc.output_dim == 512
    with pytest.raises(KeyError, match="unknown encoder"):
        create_encoder("nosuchfamily/thing")


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoders_cli(["list", "open_clip/*"]) == 0
    out = capsys.readouterr().out
    assert "open_clip/ViT-B-32" in out and "512" in out and "image" in out
    assert encoders_cli(["list", "--tiny"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert {line.split()[0] for line in lines} == set(TINY)
    assert encoders_cli(["list", "nothing-matches/*"]) == 1


def test_bare_encoders_lists_every_encoder_with_its_dim(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoders_cli([]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert {r[0] for r in rows} == set(list_encoders())
    dims = {r[0]: r[2] for r in rows}
    assert all(d.isdigit() or (d == "varies" and ENCODERS.meta(n).get("generic")) for n, d in dims.items()), dims
    assert dims["classic/color-histogram"] == "201" and dims["hf_audio/whisper"] == "512"
    assert encoders_cli(["describe", "text/minilmx", "--no_build"]) == 1
    assert "Did you mean 'text/minilm'" in capsys.readouterr().err


def test_cli_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoders_cli(["describe", "timm/tiny", "--weights", "random", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"]["weights"] == "random-init:0" and info["encoder"]["output_dim"] == 32
    assert len(info["encoder"]["fingerprint"]) == 64
    # offline: the default hub weights cannot be loaded -> a clear error, exit code 1
    assert encoders_cli(["describe", "open_clip/ViT-B-32"]) == 1
    assert "three ways" in capsys.readouterr().err
    assert encoders_cli(["describe", "open_clip/ViT-L-14", "--no_build"]) == 0
    assert "dim: 768" in capsys.readouterr().out
