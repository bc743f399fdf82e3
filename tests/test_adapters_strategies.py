"""Transfer strategies on a pre-trained mmrec sequential recommender, and the IISAN-style side network."""

from __future__ import annotations

import time

import pytest
import torch

from mmrec.adapters import (
    apply_strategy,
    insert_side_network,
    layer_norm_params,
    trainable_report,
)
from mmrec.adapters.strategies import strategy_keys
from mmrec.models import MultimodalSequential, SASRec

CATALOG = {"num_items": 20, "num_users": 3, "max_len": 6, "feature_dims": {"image": 12}}


def pretrained() -> MultimodalSequential:
    """A 'pre-trained' multimodal model (random weights, fixed seed) with its features attached."""
    torch.manual_seed(0)
    m = MultimodalSequential(catalog=CATALOG, dim=16, num_layers=2).eval()
    g = torch.Generator().manual_seed(7)
    m.attach_item_features({"image": (torch.randn(21, 12, generator=g), torch.arange(21) > 0)})
    return m


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [0, 0, 0, 0, 11, 12]])
    return {"input_ids": ids, "target_ids": (ids + 1).masked_fill(ids == 0, 0)}


def scores(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.score_all(batch())


def site_names(keys: list[str]) -> set[str]:
    return {f"adapters.{k}.{p}.{w}" for k in keys for p in ("down", "up") for w in ("weight", "bias")}


ITEM_KEYS = ["items-projectors-image", "items-site"]
ITEM_LN = {"items.projectors.image.net.0.weight", "items.projectors.image.net.0.bias"}
SEQ_LN = {
    f"encoder.blocks.{i}.{n}.{w}"
    for i in range(2)
    for n in ("attn_norm", "ffn_norm")
    for w in ("weight", "bias")
} | {"encoder.norm.weight", "encoder.norm.bias"}


def expected_names(name: str, where: tuple[str, ...]) -> set[str]:
    """The exact trainable set of each strategy (without LayerNorm tuning)."""
    item, seq = "item" in where, "sequence" in where
    blocks = range(2)
    if name == "houlsby" or name == "parallel":
        keys = (ITEM_KEYS if item else []) + (
            [f"encoder-blocks-{i}-{s}" for i in blocks for s in ("attn_out", "ffn_out")] if seq else []
        )
        return site_names(keys)
    if name == "pfeiffer":
        return site_names(
            (ITEM_KEYS if item else []) + ([f"encoder-blocks-{i}-ffn_out" for i in blocks] if seq else [])
        )
    if name == "lora":
        out = set()
        if seq:
            out |= {
                f"encoder.blocks.{i}.{m}.lora_{ab}.mmrec.weight"
                for i in blocks
                for m in ("qkv", "attn_out")
                for ab in "AB"
            }
        if item:
            out |= {f"items.projectors.image.net.{j}.lora_{ab}.mmrec.weight" for j in (1, 4) for ab in "AB"}
        return out
    if name == "prompt":
        return {"adapters.encoder.weight"}
    if name == "prefix":
        return {"adapters.encoder.keys", "adapters.encoder.values"}
    if name == "linear-head":
        return {
            f"adapters.{t}.proj.{w}"
            for t, on in (("item", item), ("sequence", seq))
            if on
            for w in ("weight", "bias")
        }
    if name == "side":
        out = set()
        if item:
            out |= {f"adapters.items.adapter.{p}.{w}" for p in ("down", "up") for w in ("weight", "bias")}
        if seq:
            out |= {
                f"adapters.sequence.adapters.{i}.{p}.{w}"
                for i in blocks
                for p in ("down", "up")
                for w in ("weight", "bias")
            }
            out |= {"adapters.sequence.gates", "adapters.sequence.norm.weight", "adapters.sequence.norm.bias"}
        return out
    raise AssertionError(name)


FROZEN = ["houlsby", "pfeiffer", "parallel", "lora", "linear-head"]
KEY = {
    "houlsby": "bottleneck/houlsby",
    "pfeiffer": "bottleneck/pfeiffer",
    "parallel": "bottleneck/parallel",
    "lora": "lora/peft",
    "linear-head": "head/linear",
    "prompt": "prompt/soft",
    "prefix": "prompt/prefix",
    "side": "side/iisan",
    "full": "transfer/full",
    "scratch": "transfer/scratch",
}
WHERES = [("item", "sequence"), ("sequence",), ("item",)]


@pytest.mark.parametrize("where", WHERES, ids=["both", "sequence", "item"])
@pytest.mark.parametrize("name", FROZEN)
def test_frozen_strategies_train_exactly_the_named_parameters(name: str, where: tuple[str, ...]) -> None:
    names = {}
    for tune in (False, True):
        model = pretrained()
        applied = apply_strategy(model, KEY[name], where=where, tune_layer_norm=tune)
        names[tune] = set(applied.trainable)
        assert applied.trainable == trainable_report(model)["names"]
    assert names[False] == expected_names(name, where)
    ln = (ITEM_LN if "item" in where else set()) | (SEQ_LN if "sequence" in where else set())
    assert names[True] - names[False] == ln  # LayerNorm tuning adds exactly the towers' LayerNorms


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_prompt_strategies_train_exactly_the_named_parameters(name: str) -> None:
    off = apply_strategy(pretrained(), KEY[name])
    on = apply_strategy(pretrained(), KEY[name], tune_layer_norm=True)
    assert set(off.trainable) == expected_names(name, ("sequence",))
    assert set(on.trainable) - set(off.trainable) == SEQ_LN
    with pytest.raises(ValueError, match="sequence encoder only"):
        apply_strategy(pretrained(), KEY[name], where=("item", "sequence"))


@pytest.mark.parametrize("where", WHERES, ids=["both", "sequence", "item"])
def test_side_strategy_trains_exactly_the_side_network(where: tuple[str, ...]) -> None:
    applied = apply_strategy(pretrained(), "side/iisan", where=where)
    assert set(applied.trainable) == expected_names("side", where)
    with pytest.raises(ValueError, match="tune_layer_norm=False"):
        apply_strategy(pretrained(), "side/iisan", tune_layer_norm=True)


def test_default_where_uses_every_tower_the_method_applies_to() -> None:
    assert apply_strategy(pretrained(), "bottleneck/houlsby").where == ("item", "sequence")
    sas = SASRec(catalog=CATALOG, dim=16, num_layers=2)
    applied = apply_strategy(sas, "lora/peft", tune_layer_norm=True)  # SASRec's item tower has no Linear
    assert applied.where == ("sequence",)
    assert set(applied.trainable) - {n for n in applied.trainable if "lora_" in n} == SEQ_LN
    with pytest.raises(ValueError, match="towers 'item' and/or 'sequence'"):
        apply_strategy(pretrained(), "bottleneck/houlsby", where="encoder")
    with pytest.raises(KeyError, match="unknown transfer strategy"):
        apply_strategy(pretrained(), "transfer/adapterdrop")


def test_full_and_scratch() -> None:
    model = pretrained()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    applied = apply_strategy(model, "transfer/full")
    assert set(applied.trainable) == set(before) and applied.handle is None
    assert torch.equal(scores(model), scores(pretrained()))
    part = apply_strategy(pretrained(), "transfer/full", where="sequence")
    assert set(part.trainable) == {n for n in before if n.startswith("encoder.")}
    scratch = pretrained()
    applied = apply_strategy(scratch, "transfer/scratch")
    assert set(applied.trainable) == set(before)
    after = dict(scratch.named_parameters())
    for n in before:
        if n.endswith(("norm.weight", "norm.bias", "net.0.weight", "net.0.bias")):
            continue  # LayerNorms re-initialise to the same ones / zeros
        assert not torch.equal(before[n], after[n]), n
    assert torch.equal(after["items.id_embedding.weight"][0], torch.zeros(16))
    with pytest.raises(ValueError, match="whole re-initialised model"):
        apply_strategy(pretrained(), "transfer/scratch", where="sequence")


STRATEGIES = [name for name, key in KEY.items() if key in strategy_keys()]


def test_every_registered_strategy_is_exercised() -> None:
    """Transfer strategies and adapter methods (every ADAPTERS key) all run through the test below."""
    assert sorted(KEY.values()) == sorted(strategy_keys()), "add each new strategy / adapter key to KEY"
IDENTITY_AT_START = {"full", "houlsby", "pfeiffer", "parallel", "lora", "linear-head", "side"}


@pytest.mark.parametrize("name", STRATEGIES)
def test_model_api_keeps_working_after_every_strategy(name: str) -> None:
    model = pretrained()
    base = scores(model)
    applied = apply_strategy(model, KEY[name])
    if name in IDENTITY_AT_START:
        assert torch.equal(scores(model), base), "a fresh strategy must not change the pre-trained model"
    with torch.no_grad():
        assert model.item_vectors().shape == (21, 16)
        assert model.query_vectors(batch()).shape == (3, 16)
    model.train()
    loss = model.training_loss(batch())
    assert torch.isfinite(loss)
    loss.backward()
    trainable = set(applied.trainable)
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    opt = model.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n in trainable
    }
    if applied.handle is not None:
        model.eval()
        with applied.handle.disable():
            assert torch.equal(scores(model), base)


# ------------------------------------------------------------------------------------------------ side network
def test_side_network_starts_at_the_backbone_and_never_differentiates_it() -> None:
    model = pretrained()
    base = scores(model)
    handle = insert_side_network(model, attach_as="side")
    assert torch.equal(scores(model), base)
    backbone = [p for n, p in model.named_parameters() if not n.startswith("side.")]
    assert all(not p.requires_grad for p in backbone)
    opt = torch.optim.Adam(handle.modules.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.training_loss(batch())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is None for p in backbone)
    assert all(p.grad is not None for p in handle.modules.parameters())
    assert losses[-1] < losses[0]
    model.eval()
    assert not torch.allclose(scores(model), base, atol=1e-3)
    with handle.disable():
        assert torch.equal(scores(model), base)
    handle.remove()
    assert "forward" not in model.items.__dict__ and "forward" not in model.encoder.__dict__
    assert torch.equal(scores(model), base)


def _train_step(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cost of one forward + backward: wall seconds, FLOPs (a load-independent time measure) and bytes
    that autograd saves for the backward pass (the activation memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    model.zero_grad()
    start = time.perf_counter()
    with FlopCounterMode(display=False) as flops:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.training_loss(data)
        loss.backward()
    return {"seconds": time.perf_counter() - start, "flops": flops.get_total_flops(), "saved": saved}


def test_side_network_costs_less_than_full_fine_tuning() -> None:
    torch.manual_seed(0)
    cat = {"num_items": 200, "num_users": 3, "max_len": 32}
    full = SASRec(catalog=cat, dim=64, num_layers=4, dropout=0.0)
    side = SASRec(catalog=cat, dim=64, num_layers=4, dropout=0.0)
    side.load_state_dict(full.state_dict())
    apply_strategy(full, "transfer/full")
    apply_strategy(side, "side/iisan")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 201, (32, 32), generator=g)
    data = {"input_ids": ids, "target_ids": torch.randint(1, 201, (32, 32), generator=g)}
    full.train()
    side.train()
    _train_step(side, data)  # fills the side network's frozen item cache
    cost_full, cost_side = _train_step(full, data), _train_step(side, data)
    print(
        f"\nside vs full fine-tuning, one step: saved activations {cost_side['saved']:,} vs "
        f"{cost_full['saved']:,} bytes; {cost_side['flops']:,} vs {cost_full['flops']:,} FLOPs; "
        f"{cost_side['seconds'] * 1e3:.0f} vs {cost_full['seconds'] * 1e3:.0f} ms (wall, machine-load dependent)"
    )
    assert cost_side["saved"] < 0.5 * cost_full["saved"]
    assert cost_side["flops"] < 0.6 * cost_full["flops"]
    assert all(p.grad is None for n, p in side.named_parameters() if not n.startswith("adapters."))
    assert any(p.grad is not None for n, p in side.named_parameters() if n.startswith("adapters."))


def test_side_cache_and_refresh() -> None:
    model = pretrained()
    handle = insert_side_network(model, where="sequence")
    with torch.no_grad():
        model.item_vectors()
    cache = handle.side.item_cache
    assert cache is not None and cache.shape == (21, 16)
    with torch.no_grad():
        model.items.projectors["image"].net[1].weight.mul_(2.0)
    assert torch.equal(model.item_vectors(), cache)  # cached: the backbone is not re-run
    handle.refresh()
    assert not torch.equal(model.item_vectors(), cache)


def test_layer_norm_names_are_per_tower() -> None:
    model = pretrained()
    assert set(layer_norm_params(model, "items")) == ITEM_LN
    assert set(layer_norm_params(model, "encoder")) == SEQ_LN
