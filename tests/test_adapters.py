"""mmrec.adapters on mmrec's own models: configs, bottleneck adapters and their hooks, per-sample routing,
LoRA, soft prompts and prefixes, the visual projector, freezing helpers and the registries."""

from __future__ import annotations

import pytest
import torch

from mmrec.adapters import (
    ADAPTERS,
    TRANSFER_STRATEGIES,
    BottleneckAdapter,
    BottleneckConfig,
    LoraAdapterConfig,
    PromptConfig,
    TaskAdapters,
    TaskRouter,
    VisualProjector,
    VisualProjectorConfig,
    create_adapter,
    find_insertion_points,
    freeze_all_but,
    insert_adapters,
    insert_lora,
    insert_prefix,
    insert_soft_prompt,
    layer_norm_params,
    trainable_report,
)
from mmrec.models import MultimodalSequential, SASRec

CATALOG = {"num_items": 20, "num_users": 3, "max_len": 6}
TASKS = ["a", "b", "c"]


def sasrec() -> SASRec:
    torch.manual_seed(0)
    return SASRec(catalog=CATALOG, dim=16, num_layers=2).eval()


def multimodal() -> MultimodalSequential:
    torch.manual_seed(0)
    cat = {**CATALOG, "feature_dims": {"image": 12, "text": 10}}
    m = MultimodalSequential(catalog=cat, dim=16, num_layers=2).eval()
    g = torch.Generator().manual_seed(5)
    valid = torch.ones(21, dtype=torch.bool)
    valid[0] = valid[7] = False
    m.attach_item_features(
        {
            "image": (torch.randn(21, 12, generator=g), valid),
            "text": (torch.randn(21, 10, generator=g), valid),
        }
    )
    return m


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    ids = torch.tensor(
        [[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [0, 0, 0, 0, 11, 12], [13, 14, 15, 16, 17, 18]]
    )
    return {"input_ids": ids[:b], "target_ids": (ids[:b] + 1).masked_fill(ids[:b] == 0, 0)}


def scores(model: torch.nn.Module, data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model.score_all(data or batch())


def perturb(params: torch.nn.Module | list[torch.nn.Parameter], seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    ps = params.parameters() if isinstance(params, torch.nn.Module) else params
    with torch.no_grad():
        for p in ps:
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


# ------------------------------------------------------------------------------------------------ configs
def test_bottleneck_config_validates() -> None:
    with pytest.raises(ValueError, match="placement"):
        BottleneckConfig(placement="serial")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction_factor"):
        BottleneckConfig(reduction_factor=0)
    with pytest.raises(ValueError, match="activation"):
        BottleneckConfig(activation="mish")
    with pytest.raises(ValueError, match="dropout"):
        BottleneckConfig(dropout=1.0)
    with pytest.raises(ValueError, match="sites"):
        BottleneckConfig(sites=["mlp"])
    with pytest.raises(ValueError, match="unique"):
        BottleneckConfig(tasks=["a", "a"])
    with pytest.raises(TypeError, match="list of names"):
        BottleneckConfig(tasks="a")  # type: ignore[arg-type]
    assert BottleneckConfig(placement="pfeiffer").site_kinds == ("ffn",)
    assert BottleneckConfig().bottleneck_dim(512) == 64
    with pytest.raises(ValueError, match="r must be"):
        LoraAdapterConfig(r=0)
    with pytest.raises(ValueError, match="n_tokens"):
        PromptConfig(n_tokens=0)
    with pytest.raises(ValueError, match="in_dim"):
        VisualProjectorConfig(in_dim=0)


def test_bottleneck_adapter_shapes_and_init() -> None:
    adapter = BottleneckAdapter(16, BottleneckConfig(reduction_factor=4))
    assert (adapter.down.out_features, adapter.up.out_features) == (4, 16)
    h = torch.randn(2, 3, 16)
    assert torch.equal(adapter(h), h)
    bert_init = BottleneckAdapter(16, BottleneckConfig(init="bert"))
    assert bert_init.up.weight.abs().sum() > 0
    parallel = BottleneckAdapter(16, BottleneckConfig(placement="parallel", scaling=2.0), in_dim=10)
    perturb(parallel)
    x = torch.randn(2, 3, 10)
    torch.testing.assert_close(parallel(h, x) - h, 2.0 * parallel.up(parallel.act(parallel.down(x))))


# ------------------------------------------------------------------------------------------------ placement
def test_insertion_points_of_mmrec_models() -> None:
    points = find_insertion_points(multimodal())
    assert [(p.path, p.kind, p.scope) for p in points] == [
        ("items.projectors.image", "item", "item"),
        ("items.projectors.text", "item", "item"),
        ("items", "item", "item"),
        ("encoder.blocks.0.attn_out", "attn", "sequence"),
        ("encoder.blocks.0.ffn_out", "ffn", "sequence"),
        ("encoder.blocks.1.attn_out", "attn", "sequence"),
        ("encoder.blocks.1.ffn_out", "ffn", "sequence"),
    ]
    m = sasrec()
    assert [p.path for p in find_insertion_points(m, where="item")] == ["items"]
    with pytest.raises(ValueError, match="where must name scopes"):
        find_insertion_points(m, where="decoder_only")
    with pytest.raises(ValueError, match="no insertion points in scope"):
        find_insertion_points(m, where="encoder")


# ------------------------------------------------------------------------------------------------ identity
KINDS = ["houlsby", "pfeiffer", "parallel", "per-task", "lora"]


def _insert(model: torch.nn.Module, kind: str):
    if kind == "lora":
        return insert_lora(model, r=4)
    if kind == "per-task":
        return insert_adapters(model, "parallel", where="sequence", tasks=TASKS)
    return insert_adapters(model, kind, attach_as="adapters")


def _adapter_params(model: torch.nn.Module, handle) -> list[torch.nn.Parameter]:
    if hasattr(handle, "adapter_name"):
        return [p for n, p in model.named_parameters() if "lora_" in n]
    return list(handle.modules.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("build", [sasrec, multimodal], ids=["sasrec", "multimodal"])
def test_zero_init_identity_disable_remove(kind: str, build) -> None:
    model = build()
    base = scores(model)
    keys = list(model.state_dict())
    handle = _insert(model, kind)
    with handle.route(["a", "c", "b", "a"]) if kind == "per-task" else _Null():
        assert torch.equal(scores(model), base)
        perturb(_adapter_params(model, handle))
        changed = scores(model)
        assert not torch.allclose(changed, base, atol=1e-3)
        with handle.disable():
            assert torch.equal(scores(model), base)
        assert torch.equal(scores(model), changed)
    handle.remove()
    assert torch.equal(scores(model), base)
    assert list(model.state_dict()) == keys


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_hooks_keep_backbone_names_and_padding_row() -> None:
    model = multimodal()
    keys = list(model.state_dict())
    handle = insert_adapters(model, "houlsby", attach_as="adapters")
    assert [k for k in model.state_dict() if not k.startswith("adapters.")] == keys
    perturb(handle.modules)
    with torch.no_grad():
        items = model.item_vectors()
    assert torch.equal(items[0], torch.zeros(16))
    with pytest.raises(ValueError, match="already has an attribute"):
        insert_adapters(model, "pfeiffer", attach_as="adapters")


def test_parallel_adapter_reads_the_sublayer_input() -> None:
    model = sasrec()
    handle = insert_adapters(model, "parallel", where="sequence", sites=("ffn",))
    seen: dict[str, torch.Tensor] = {}
    block = model.encoder.blocks[0]
    adapter = handle.modules["encoder-blocks-0-ffn_out"]
    perturb(handle.modules)

    def grab(name: str, index: int | None):
        def hook(m, a, o) -> None:
            seen[name] = a[0] if index == 0 else o

        return hook

    block.ffn_in.register_forward_hook(grab("x", 0))  # the sub-layer input (normed hidden states)
    with handle.disable():
        with torch.no_grad():
            model.query_vectors(batch())
        base_out = block.ffn_out(block.drop(torch.nn.functional.gelu(block.ffn_in(seen["x"]))))
    block.ffn_out.register_forward_hook(grab("final", None))  # runs after the adapter hook
    with torch.no_grad():
        model.query_vectors(batch())
    torch.testing.assert_close(seen["final"], base_out + adapter.delta(seen["x"]))


# ------------------------------------------------------------------------------------------------ routing
def test_task_router_and_task_adapters() -> None:
    router = TaskRouter(TASKS)
    with pytest.raises(RuntimeError, match=r"handle\.route"):
        router.current(2, torch.device("cpu"))
    with router.route(["c", "a"]):
        assert router.current(4, torch.device("cpu")).tolist() == [2, 2, 0, 0]  # beams expand per sample
        with router.route("b"):
            assert router.current(3, torch.device("cpu")).tolist() == [1, 1, 1]
        assert router.current(2, torch.device("cpu")).tolist() == [2, 0]
    with pytest.raises(IndexError):
        router.to_tensor(torch.tensor([0, 3]))
    ta = TaskAdapters(TASKS, lambda: BottleneckAdapter(8))
    perturb(ta)
    x = torch.randn(5, 4, 8)
    ids = torch.tensor([2, 0, 2, 1, 0])
    out = ta.delta(x, ids)
    for i, t in enumerate(ids.tolist()):
        torch.testing.assert_close(out[i], ta.per_task[TASKS[t]].delta(x[i : i + 1])[0])


def test_per_sample_routing_mixed_batch_equals_single_rows() -> None:
    model = sasrec()
    handle = insert_adapters(model, "houlsby", where="sequence", tasks=TASKS)
    perturb(handle.modules)
    data = batch()
    tasks = ["b", "a", "c", "b"]
    with handle.route(tasks):
        mixed = scores(model, data)
    for i, task in enumerate(tasks):
        with handle.route([task]):
            alone = scores(model, {k: v[i : i + 1] for k, v in data.items()})
        torch.testing.assert_close(mixed[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    with handle.route(["a"] * 4):
        assert not torch.allclose(scores(model, data)[0], mixed[0], atol=1e-3)


def test_per_task_adapters_refuse_item_tables() -> None:
    with pytest.raises(ValueError, match="per-item tables"):
        insert_adapters(sasrec(), "houlsby", tasks=TASKS)


# ------------------------------------------------------------------------------------------------ trainable names
def _bottleneck_names(keys: list[str], prefix: str = "") -> set[str]:
    return {f"{prefix}{k}.{p}.{w}" for k in keys for p in ("down", "up") for w in ("weight", "bias")}


BLOCK_SITES = {
    "houlsby": ["attn_out", "ffn_out"],
    "pfeiffer": ["ffn_out"],
    "parallel": ["attn_out", "ffn_out"],
}


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer", "parallel"])
def test_trainable_names_bottleneck_mmrec(placement: str) -> None:
    model = multimodal()
    handle = create_adapter(f"bottleneck/{placement}", model, attach_as="adapters")
    keys = ["items-projectors-image", "items-projectors-text", "items-site"] + [
        f"encoder-blocks-{i}-{s}" for i in range(2) for s in BLOCK_SITES[placement]
    ]
    assert set(trainable_report(model)["names"]) == _bottleneck_names(keys, "adapters.")
    assert set(handle.parameter_names()) == _bottleneck_names(keys)
    if placement == "parallel":  # the projector-site adapter reads the raw feature (12-d)
        assert handle.modules["items-projectors-image"].down.in_features == 12


def test_trainable_names_lora_mmrec() -> None:
    model = multimodal()
    insert_lora(model, r=2)
    expected = {
        f"encoder.blocks.{i}.{m}.lora_{ab}.mmrec.weight"
        for i in range(2)
        for m in ("qkv", "attn_out")
        for ab in "AB"
    } | {
        f"items.projectors.{f}.net.{j}.lora_{ab}.mmrec.weight"
        for f in ("image", "text")
        for j in (1, 4)
        for ab in "AB"
    }
    assert set(trainable_report(model)["names"]) == expected
    with pytest.raises(ValueError, match="ID-only item"):
        insert_lora(sasrec(), where=("item", "sequence"))


def test_trainable_names_prompt_and_prefix_mmrec() -> None:
    model = sasrec()
    create_adapter("prompt/soft", model, n_tokens=3, attach_as="adapters")
    assert trainable_report(model)["names"] == ["adapters.encoder.weight"]
    assert model.adapters.encoder.weight.shape == (3, 16)
    model = sasrec()
    create_adapter("prompt/prefix", model, n_tokens=3, attach_as="adapters")
    assert trainable_report(model)["names"] == ["adapters.encoder.keys", "adapters.encoder.values"]
    assert model.adapters.encoder.keys.shape == (2, 3, 16)
    with pytest.raises(ValueError, match="sequence encoder only"):
        insert_soft_prompt(sasrec(), where=("item",))


# ------------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("insert", [insert_soft_prompt, insert_prefix], ids=["soft", "prefix"])
def test_prompts_keep_causality_padding_and_disable(insert) -> None:
    model = sasrec()
    data = batch()
    base = scores(model, data)
    handle = insert(model, n_tokens=4)
    with torch.no_grad():
        hidden = model.sequence_hidden(data["input_ids"])
        assert hidden.shape == (4, 6, 16)
        assert torch.isfinite(hidden).all()
        assert torch.equal(hidden[data["input_ids"] == 0], torch.zeros_like(hidden[data["input_ids"] == 0]))
        later = data["input_ids"].clone()
        later[:, -1] = 19  # changing the last item must not change earlier positions
        hidden2 = model.sequence_hidden(later)
        torch.testing.assert_close(hidden2[:, :-1], hidden[:, :-1])
        assert not torch.allclose(hidden, model.sequence_hidden(data["input_ids"]) * 0)
    prompted = scores(model, data)
    assert not torch.allclose(prompted, base, atol=1e-4)
    with handle.disable():
        assert torch.equal(scores(model, data), base)
    model.train()
    loss = model.training_loss(data)
    loss.backward()
    assert all(p.grad is not None for p in handle.modules.parameters())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    handle.remove()
    model.eval()
    assert torch.equal(scores(model, data), base)


def test_soft_prompt_needs_no_spare_positions() -> None:
    model = SASRec(catalog=CATALOG, dim=16, num_layers=1).eval()  # encoder max_len 50
    insert_soft_prompt(model, n_tokens=8)
    ids = torch.arange(1, 51).remainder(20).add(1)[None]  # a full-length sequence
    with torch.no_grad():
        assert model.query_vectors({"input_ids": ids}).shape == (1, 16)


# ------------------------------------------------------------------------------------------------ projector
def test_visual_projector_vip5_defaults() -> None:
    proj = VisualProjector(32, VisualProjectorConfig(in_dim=12, k_tokens=2))
    assert [type(m).__name__ for m in proj.mlp] == ["Linear", "Tanh", "Dropout", "Linear"]
    assert proj.mlp[0].out_features == 32  # k * d_model // 2
    assert isinstance(proj.norm, torch.nn.RMSNorm) and proj.norm.normalized_shape == (64,)
    out = proj(torch.randn(3, 5, 12))
    assert out.shape == (3, 5, 2, 32)
    rms = out.flatten(-2).pow(2).mean(-1).sqrt()  # RMS over the k*d concatenation is 1
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)
    assert proj(torch.randn(12)).shape == (2, 32)
    with pytest.raises(ValueError, match="in_dim=12"):
        proj(torch.randn(3, 5, 7))


def test_visual_projector_per_token_layer_norm() -> None:
    cfg = VisualProjectorConfig(
        in_dim=6, k_tokens=3, hidden=20, activation="relu", norm="layer", norm_scope="token"
    )
    proj = VisualProjector(8, cfg)
    assert proj.mlp[0].out_features == 20 and isinstance(proj.mlp[1], torch.nn.ReLU)
    out = proj(torch.randn(2, 4, 6))
    assert out.shape == (2, 4, 3, 8)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 4, 3), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------------ freezing
def test_freeze_helpers_and_report() -> None:
    model = multimodal()
    lns = layer_norm_params(model)
    assert lns == [
        "items.projectors.image.net.0.weight",
        "items.projectors.image.net.0.bias",
        "items.projectors.text.net.0.weight",
        "items.projectors.text.net.0.bias",
        "encoder.blocks.0.attn_norm.weight",
        "encoder.blocks.0.attn_norm.bias",
        "encoder.blocks.0.ffn_norm.weight",
        "encoder.blocks.0.ffn_norm.bias",
        "encoder.blocks.1.attn_norm.weight",
        "encoder.blocks.1.attn_norm.bias",
        "encoder.blocks.1.ffn_norm.weight",
        "encoder.blocks.1.ffn_norm.bias",
        "encoder.norm.weight",
        "encoder.norm.bias",
    ]
    assert freeze_all_but(model, lns) == lns
    report = trainable_report(model)
    assert report["names"] == lns
    assert report["trainable"] == 2 * 12 + 2 * 10 + 5 * 2 * 16
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert abs(report["percent"] - 100 * report["trainable"] / report["total"]) < 1e-9
    line = str(report)
    assert "\n" not in line and line.startswith("trainable 204 / ")
    assert freeze_all_but(model, "encoder.*norm.*") == [n for n in lns if n.startswith("encoder.")]
    assert freeze_all_but(model, lambda n, p: p.ndim == 1 and n.startswith("items.id")) == []
    assert freeze_all_but(model) == []


# ------------------------------------------------------------------------------------------------ registries
def test_registries_list_every_method() -> None:
    assert ADAPTERS.list() == [
        "bottleneck/houlsby",
        "bottleneck/parallel",
        "bottleneck/pfeiffer",
        "head/linear",
        "lora/peft",
        "prompt/prefix",
        "prompt/soft",
        "side/iisan",
    ]
    assert TRANSFER_STRATEGIES.list() == ["transfer/full", "transfer/scratch"]
    with pytest.raises(KeyError, match="Did you mean"):
        create_adapter("bottleneck/houlsbi", sasrec())
