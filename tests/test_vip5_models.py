"""VIP5 (tiny T5) and the ranking head (tiny BERT): what trains, identity adapters, visual tokens,
per-sample routing, constrained decoding, candidate scoring, and exact checkpoint round trips."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_vip5_support import TINY_T5, tiny_bert_dir, tiny_t5_dir, toy_feature_store, toy_reviews_dataset

from mmrec.datamodules.vip5 import VIP5DataModule
from mmrec.models import MODELS, VIP5, VIP5Ranking
from mmrec.models.vip5_generation import ItemTrie, ranked_list_metrics
from mmrec.prompts.pretrained import MissingBackboneError


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("vip5models")
    ds = toy_reviews_dataset(root)
    image = toy_feature_store(root, ds.item_ids, dim=6, name="image")
    text = toy_feature_store(root, ds.item_ids, dim=5, name="text", seed=2)
    t5 = tiny_t5_dir(root)
    bert = tiny_bert_dir(root)
    dm = VIP5DataModule(
        str(ds.path),
        tokenizer=str(t5),
        stores={"image": str(image.path)},
        negatives=9,
        batch_size=12,
        eval_batch_size=4,
        max_source_length=200,
        derived_dir=str(root / "derived"),
    )
    dm.setup("fit")
    rdm = VIP5DataModule(
        str(ds.path),
        tokenizer=str(bert),
        stores={"image": str(image.path), "text": str(text.path)},
        tasks=["sequential"],
        batch_size=12,
        eval_batch_size=8,
        max_source_length=128,
        derived_dir=str(root / "derived"),
    )
    rdm.setup("fit")
    return {"root": root, "t5": t5, "bert": bert, "dm": dm, "rdm": rdm}


def _t5(env: dict, **kw) -> VIP5:
    torch.manual_seed(0)
    kw.setdefault("explanation_max_tokens", 8)
    m = VIP5(catalog=env["dm"].catalog, backbone=str(env["t5"]), num_beams=5, **kw)
    m.attach_data(env["dm"].model_inputs())
    return m.eval()


def _batch(env: dict, task: str | None = None) -> dict:
    for batch in env["dm"].train_dataloader():
        if task is None or (batch["task_ids"] == ["sequential", "direct", "explanation"].index(task)).any():
            return batch
    raise AssertionError


def _perturb(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_registered() -> None:
    assert MODELS.get("vip5/t5") is VIP5 and MODELS.get("vip5/ranking") is VIP5Ranking


def test_exactly_adapters_projector_layer_norms_and_whole_words_train(env: dict) -> None:
    m = _t5(env)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    for n in trainable:
        assert n.startswith(("adapters.", "prompt.whole_word.", "prompt.projector.")) or (
            n.startswith("backbone.") and "layer_norm" in n
        ), n
    backbone_trainable = {n for n in trainable if n.startswith("backbone.")}
    norms = {n for n, _ in m.backbone.named_parameters() if "layer_norm" in n}
    assert backbone_trainable == {f"backbone.{n}" for n in norms}
    # Houlsby: attn + ffn in 2 encoder blocks, attn + cross-attn + ffn in 2 decoder blocks
    sites = {n.split(".")[1] for n in trainable if n.startswith("adapters.")}
    assert len(sites) == 2 * 2 + 2 * 3
    assert any("EncDecAttention" in s for s in sites)
    assert not any("embed" in n or "lm_head" in n or ".SelfAttention.q." in n for n in trainable)
    lora = _t5(env, adapter="lora/peft", lora_rank=2)
    lt = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in lt) and not any(n.startswith("adapters.") for n in lt)


def test_default_t5_small_trains_under_five_percent(env: dict) -> None:
    # the t5-small architecture (T5Config defaults: 60.5M parameters) with the tiny test tokenizer
    m = VIP5(
        catalog={**env["dm"].catalog, "feature_dims": {"image": 512}},
        backbone_config={"model_type": "t5"},
        backbone_tokenizer=str(env["t5"]),
    )
    c = m.parameter_counts()
    assert 60_000_000 < c["total"] < 64_000_000
    assert c["trainable"] / c["total"] <= 0.05
    per_task = VIP5(
        catalog={**env["dm"].catalog, "feature_dims": {"image": 512}},
        backbone_config={"model_type": "t5"},
        backbone_tokenizer=str(env["t5"]),
        adapter_per_task=True,
    ).parameter_counts()
    assert per_task["trainable"] > c["trainable"] * 2


def test_zero_init_adapters_and_whole_words_leave_the_backbone_unchanged(env: dict) -> None:
    m = _t5(env)
    batch = _batch(env)
    tok = m.backbone.get_input_embeddings()(batch["input_ids"])
    no_ph = batch["feature_items"] == 0
    emb = m.embed(batch)
    assert torch.equal(emb[no_ph], tok[no_ph])  # whole-word table starts at zero
    with torch.no_grad():
        adapted = m.logits(batch, batch["labels"], batch["task_ids"])
        with m.adapter_handle.disable():
            base = m.logits(batch, batch["labels"], batch["task_ids"])
    assert torch.equal(adapted, base)
    _perturb(m.adapters)
    with torch.no_grad():
        changed = m.logits(batch, batch["labels"], batch["task_ids"])
        with m.adapter_handle.disable():
            base2 = m.logits(batch, batch["labels"], batch["task_ids"])
    assert torch.equal(base2, base) and not torch.allclose(changed, base)


def test_visual_tokens_land_at_the_placeholders(env: dict) -> None:
    m = _t5(env)
    _perturb(m.prompt.projector)
    batch = _batch(env)
    emb = m.embed(batch)
    rows, cols = (batch["feature_items"] > 0).nonzero(as_tuple=True)
    assert rows.numel() > 0
    items = batch["feature_items"][rows, cols]
    slots = batch["feature_slots"][rows, cols]
    table = m.prompt.features
    expected = m.prompt.projector(table[items])[torch.arange(len(items)), slots]
    assert torch.allclose(emb[rows, cols], expected, atol=1e-6)
    # the k tokens of one item differ (slot matters) and come from that item's own feature row
    assert not torch.allclose(expected[slots == 0][:1], expected[slots == 1][:1])
    tok = m.backbone.get_input_embeddings()(batch["input_ids"])
    other = batch["feature_items"] == 0
    assert torch.allclose(emb[other], tok[other])


def test_adapters_are_routed_per_sample(env: dict) -> None:
    m = _t5(env, adapter_per_task=True)
    _perturb(m.adapters)
    batch = _batch(env)
    tasks = batch["task_ids"]
    assert len(set(tasks.tolist())) > 1
    with torch.no_grad():
        mixed = m.per_sample_loss(batch)
        for t in set(tasks.tolist()):
            alone = m.per_sample_loss({**batch, "task_ids": torch.full_like(tasks, t)})
            assert torch.allclose(mixed[tasks == t], alone[tasks == t], atol=1e-5)
        wrong = m.per_sample_loss({**batch, "task_ids": (tasks + 1) % 3})
    assert not torch.allclose(mixed, wrong)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.lists(st.integers(2, 9), min_size=1, max_size=4), min_size=1, max_size=12, unique_by=tuple)
)
def test_trie_lookup_and_allowed_are_consistent(seqs: list[list[int]]) -> None:
    full = [[]] + [[*s, 1] for s in seqs]
    trie = ItemTrie(full)
    for item, s in enumerate(full[1:], start=1):
        assert trie.item(s) == item
        for j in range(len(s)):
            assert s[j] in trie.allowed(s[:j])
    assert trie.item([99]) is None and trie.allowed([99]) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_constrained_decoding_never_emits_an_invalid_item(env: dict, seed: int) -> None:
    m = _t5(env)
    _perturb(m, seed)  # an arbitrary (untrained) model still decodes only existing identifiers
    n = env["dm"].catalog["num_items"]
    for loader in env["dm"].test_dataloader():
        if loader.dataset.task != "sequential":
            continue
        for _, batch in zip(range(3), loader):
            ranked = m.generate_items(batch, num_beams=8)
            assert ranked.shape == (batch["input_ids"].shape[0], 8)
            assert ((ranked >= 1) & (ranked <= n)).all()
            assert all(len(set(r)) == len(r) for r in ranked.tolist())


def test_direct_and_explanation_evaluation_outputs(env: dict) -> None:
    m = _t5(env)
    seen = set()
    for loader in env["dm"].test_dataloader():
        batch = next(iter(loader))
        if batch["task"] == "direct":
            scores = m.score_candidates(batch)
            assert scores.shape == batch["candidates"].shape and torch.isfinite(scores).all()
            seen.add(batch["kind"])
        elif batch["task"] == "explanation":
            assert len(m.generate_text(batch)) == len(batch["references"])
    assert seen == {"yes_no", "choose"}
    # choose scores are the summed log-likelihood of each candidate's identifier
    batch = next(b for b in (next(iter(x)) for x in env["dm"].test_dataloader()) if b.get("kind") == "choose")
    scores = m.score_candidates(batch)
    row, col = 0, 3
    item = int(batch["candidates"][row, col])
    labels = torch.tensor([env["dm"].item_target_sequences()[item]])
    one = {k: v[row : row + 1] for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() == 2}
    lp = m.logits(one, labels, "direct").log_softmax(-1).gather(-1, labels.unsqueeze(-1)).sum()
    assert torch.allclose(scores[row, col], lp, atol=1e-4)


def test_ranked_list_metrics() -> None:
    out = ranked_list_metrics(torch.tensor([[3, 1, 2], [5, 6, 7]]), torch.tensor([1, 9]), ks=(1, 2, 3))
    assert out["hr@1"].tolist() == [0.0, 0.0] and out["hr@2"].tolist() == [1.0, 0.0]
    assert abs(out["ndcg@3"][0].item() - 1 / torch.log2(torch.tensor(3.0)).item()) < 1e-6


def _fit_and_checkpoint(model: L.LightningModule, dm: VIP5DataModule, root: Path) -> Path:
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_t5_checkpoint_holds_trained_weights_only_and_reloads_exactly(env: dict, tmp_path: Path) -> None:
    m = VIP5(catalog=env["dm"].catalog, backbone=str(env["t5"]), num_beams=5, adapter_per_task=True, lr=0.05)
    path = _fit_and_checkpoint(m, env["dm"], tmp_path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    keys = set(ckpt["state_dict"])
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert keys == trainable  # no frozen backbone weight is stored
    assert ckpt["hyper_parameters"]["backbone"] == str(env["t5"])
    assert ckpt["mmrec_frozen_backbone"]["identity"] == m.backbone_identity
    fresh = VIP5.load_from_checkpoint(path, weights_only=True).eval()
    fresh.attach_data(env["dm"].model_inputs())
    m.eval()
    batch = _batch(env)
    with torch.no_grad():
        assert torch.equal(m.per_sample_loss(batch), fresh.per_sample_loss(batch))
    seq = next(iter(env["dm"].test_dataloader()[0]))
    assert torch.equal(m.generate_items(seq), fresh.generate_items(seq))
    state = m.state_dict()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_checkpoint_refuses_another_backbone(env: dict, tmp_path: Path) -> None:
    m = _t5(env)
    path = _fit_and_checkpoint(m, env["dm"], tmp_path)
    other = tiny_t5_dir(tmp_path / "other", seed=5)  # same tokenizer, other weights
    with pytest.raises(ValueError, match="same backbone"):
        VIP5.load_from_checkpoint(path, weights_only=True, backbone=str(other))


def test_backbone_errors(env: dict, tmp_path: Path) -> None:
    with pytest.raises(MissingBackboneError, match="three ways"):
        VIP5(catalog=env["dm"].catalog, backbone=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"data\.init_args\.tokenizer"):
        VIP5(
            catalog=env["dm"].catalog,
            backbone_config=dict(TINY_T5, vocab_size=30522),
            backbone_tokenizer="minilm",
        )
    with pytest.raises(ValueError, match="encoder-decoder"):
        VIP5(catalog=env["dm"].catalog, backbone=str(env["bert"]))
    with pytest.raises(ValueError, match="sequential"):
        VIP5Ranking(catalog=env["dm"].catalog, backbone=str(env["bert"]))


def test_ranking_head_trains_and_reloads_exactly(env: dict, tmp_path: Path) -> None:
    rdm = env["rdm"]
    m = VIP5Ranking(catalog=rdm.catalog, backbone=str(env["bert"]), lr=0.01)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    for n in trainable:
        assert n.startswith(("adapters.", "prompt.", "query_head.", "item_head.", "text_proj.")) or (
            n.startswith("backbone.") and "LayerNorm" in n
        ), n
    m.attach_data(rdm.model_inputs())
    items = m.item_vectors()
    assert items.shape == (31, 32) and torch.equal(items[0], torch.zeros(32))
    with torch.no_grad(), m.adapter_handle.disable():
        base = m.encode_prompts(next(iter(rdm.test_dataloader()[0])))
    with torch.no_grad():
        assert torch.equal(m.encode_prompts(next(iter(rdm.test_dataloader()[0]))), base)  # identity at init
    path = _fit_and_checkpoint(m, rdm, tmp_path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert set(ckpt["state_dict"]) == trainable
    fresh = VIP5Ranking.load_from_checkpoint(path, weights_only=True).eval()
    fresh.attach_data(rdm.model_inputs())
    m.eval()
    batch = next(iter(rdm.test_dataloader()[0]))
    with torch.no_grad():
        assert torch.equal(m.score_all(batch), fresh.score_all(batch))
    results = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(
        fresh, datamodule=rdm, verbose=False
    )
    assert {"test/hr@10", "test/sequential/seen/ndcg@10", "test/sequential/unseen/hr@10"} <= set(results[0])
