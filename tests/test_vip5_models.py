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
from mmrec.datamodules.vip5_config import DirectConfig, EvaluationConfig, PromptConfig, TrainingConfig
from mmrec.models import MODELS, VIP5, VIP5Ranking
from mmrec.models.vip5_config import (
    AdapterConfig,
    BackboneConfig,
    GenerationEvalConfig,
    OptimConfig,
    RankingHeadConfig,
)
from mmrec.models.vip5_generation import ItemTrie, prefix_allowed_fn, ranked_list_metrics
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
        prompts=PromptConfig(max_source_length=200),
        training=TrainingConfig(batch_size=12),
        direct=DirectConfig(negatives=9),
        evaluation=EvaluationConfig(batch_size=4),
        derived_dir=str(root / "derived"),
    )
    dm.setup("fit")
    rdm = VIP5DataModule(
        str(ds.path),
        tokenizer=str(bert),
        stores={"image": str(image.path), "text": str(text.path)},
        tasks=["sequential"],
        prompts=PromptConfig(max_source_length=128, sequential_yes_no=False),
        training=TrainingConfig(batch_size=12, future_targets=2),
        evaluation=EvaluationConfig(batch_size=8),
        derived_dir=str(root / "derived"),
    )
    rdm.setup("fit")
    return {"root": root, "t5": t5, "bert": bert, "dm": dm, "rdm": rdm}


def _t5(env: dict, **kw) -> VIP5:
    torch.manual_seed(0)
    kw.setdefault("decoding", GenerationEvalConfig(num_beams=5, eval_ks=(1, 5), explanation_max_tokens=8))
    m = VIP5(catalog=env["dm"].catalog, backbone=BackboneConfig(name=str(env["t5"])), **kw)
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
    lora = _t5(env, adapter=AdapterConfig(name="lora/peft", lora_rank=2))
    lt = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in lt) and not any(n.startswith("adapters.") for n in lt)


def test_default_t5_small_trains_under_five_percent(env: dict) -> None:
    # the t5-small architecture (T5Config defaults: 60.5M parameters) with the tiny test tokenizer
    t5_small = BackboneConfig(config={"model_type": "t5"}, tokenizer=str(env["t5"]))
    m = VIP5(catalog={**env["dm"].catalog, "feature_dims": {"image": 512}}, backbone=t5_small)
    c = m.parameter_counts()
    assert 60_000_000 < c["total"] < 64_000_000
    assert c["trainable"] / c["total"] <= 0.05
    per_task = VIP5(
        catalog={**env["dm"].catalog, "feature_dims": {"image": 512}},
        backbone=t5_small,
        adapter=AdapterConfig(per_task=True),
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
    m = _t5(env, adapter=AdapterConfig(per_task=True))
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


def test_ranked_list_metrics_score_misses_zero_and_name_mrr_at_k() -> None:
    out = ranked_list_metrics(torch.tensor([[3, 1, 2], [5, 6, 7], [-1, 9, 4]]), torch.tensor([1, 9, 9]), ks=(1, 2, 3))
    assert out["hr@1"].tolist() == [0.0, 0.0, 0.0] and out["hr@2"].tolist() == [1.0, 0.0, 1.0]
    assert abs(out["ndcg@3"][0].item() - 1 / torch.log2(torch.tensor(3.0)).item()) < 1e-6
    assert "mrr" not in out and out["mrr@3"].tolist() == [0.5, 0.0, 0.5]  # a miss scores 0, not 1/(K+1)
    with pytest.raises(ValueError, match="num_beams"):
        ranked_list_metrics(torch.tensor([[1, 2]]), torch.tensor([1]), ks=(5,))


def test_trie_pruning_never_allows_an_excluded_item() -> None:
    seqs = [[], [5, 7, 1], [5, 8, 1], [9, 1], [9, 4, 1]]  # items 1..4, eos = 1
    trie = ItemTrie(seqs)
    fn = prefix_allowed_fn(trie, pad_id=0, eos_id=1, exclude=[[1, 2], [3], []])
    start = torch.tensor([0])
    assert fn(0, start) == [9] and fn(1, start) == [5, 9] and fn(2, start) == [5, 9]
    assert fn(1, torch.tensor([0, 9])) == [4]  # 9 -> 1 would complete the excluded item 3
    assert fn(0, torch.tensor([0, 9])) == [1, 4]


def test_masked_generation_never_returns_history_items(env: dict) -> None:
    m = _t5(env)
    _perturb(m, 3)
    loader = next(x for x in env["dm"].test_dataloader() if x.dataset.task == "sequential")
    batch = next(iter(loader))
    assert batch["exclude_rows"].numel() > 0  # mask_history is on by default
    ranked = m.generate_items(batch, num_beams=8)
    hist = {(r, c) for r, c in zip(batch["exclude_rows"].tolist(), batch["exclude_cols"].tolist())}
    assert not any((r, it) in hist for r, row in enumerate(ranked.tolist()) for it in row)
    unmasked = m.generate_items({k: v for k, v in batch.items() if not k.startswith("exclude")}, num_beams=8)
    assert any((r, it) in hist for r, row in enumerate(unmasked.tolist()) for it in row)


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
    m = VIP5(
        catalog=env["dm"].catalog,
        backbone=BackboneConfig(name=str(env["t5"])),
        adapter=AdapterConfig(per_task=True),
        optim=OptimConfig(lr=0.05),
        decoding=GenerationEvalConfig(num_beams=5, eval_ks=(1, 5)),
    )
    path = _fit_and_checkpoint(m, env["dm"], tmp_path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    keys = set(ckpt["state_dict"])
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert keys == trainable  # no frozen backbone weight is stored
    assert ckpt["hyper_parameters"]["backbone"]["name"] == str(env["t5"])  # plain dicts
    assert ckpt["hyper_parameters"]["adapter"]["per_task"] is True
    assert ckpt["mmrec_frozen_backbone"]["identity"] == m.backbone_identity
    fresh = VIP5.load_from_checkpoint(path, weights_only=True).eval()
    assert fresh.eval_config == m.eval_config
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
        VIP5.load_from_checkpoint(path, weights_only=True, backbone={"name": str(other)})


def test_backbone_errors(env: dict, tmp_path: Path) -> None:
    with pytest.raises(MissingBackboneError, match="three ways"):
        VIP5(catalog=env["dm"].catalog, backbone=BackboneConfig(name=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"data\.init_args\.tokenizer"):
        VIP5(
            catalog=env["dm"].catalog,
            backbone=BackboneConfig(config=dict(TINY_T5, vocab_size=30522), tokenizer="minilm"),
        )
    with pytest.raises(ValueError, match="encoder-decoder"):
        VIP5(catalog=env["dm"].catalog, backbone=BackboneConfig(name=str(env["bert"])))
    with pytest.raises(ValueError, match="sequential"):
        VIP5Ranking(catalog=env["dm"].catalog, backbone=BackboneConfig(name=str(env["bert"])))
    with pytest.raises(ValueError, match="sequential_yes_no: false"):
        VIP5Ranking(
            catalog={**env["dm"].catalog, "tasks": ["sequential"]}, backbone=BackboneConfig(name=str(env["bert"]))
        )
    with pytest.raises(ValueError, match=r"decoding\.num_beams to >= 10"):
        GenerationEvalConfig(num_beams=5, eval_ks=(1, 10))
    with pytest.raises(ValueError, match="has no field"):
        VIP5(catalog=env["dm"].catalog, backbone={"name": str(env["t5"]), "weights": "x"})


def _ranker(env: dict, **kw) -> VIP5Ranking:
    torch.manual_seed(0)
    m = VIP5Ranking(catalog=env["rdm"].catalog, backbone=BackboneConfig(name=str(env["bert"])), **kw)
    m.attach_data(env["rdm"].model_inputs())
    return m


def test_ranking_head_trains_and_reloads_exactly(env: dict, tmp_path: Path) -> None:
    rdm = env["rdm"]
    m = _ranker(env, optim=OptimConfig(lr=0.01))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    groups = ("adapters.", "prompt.", "query_head.", "item_head.", "item_features.", "id_embedding.",
              "user_embedding.", "item_bias")  # fmt: skip
    for n in trainable:
        assert n.startswith(groups) or (n.startswith("backbone.") and "LayerNorm" in n), n
    assert {n.split(".")[0] for n in trainable} >= {"item_bias", "user_embedding", "item_features"}
    items = m.item_vectors()
    assert items.shape == (31, 33) and torch.equal(items[0], torch.zeros(33))  # 32 dims + the item bias
    pop = rdm.item_popularity()
    assert torch.allclose(m.item_bias[1:], torch.log1p(pop[1:]) - torch.log1p(pop[1:]).mean())
    with torch.no_grad(), m.adapter_handle.disable():
        base = m.encode_prompts(next(iter(rdm.test_dataloader()[0])))
    with torch.no_grad():
        assert torch.equal(m.encode_prompts(next(iter(rdm.test_dataloader()[0]))), base)  # identity at init
    path = _fit_and_checkpoint(m, rdm, tmp_path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert set(ckpt["state_dict"]) == trainable
    fresh = VIP5Ranking.load_from_checkpoint(path, weights_only=True).eval()
    fresh.attach_data(rdm.model_inputs())  # a trained bias is kept, not re-initialised
    m.eval()
    assert torch.equal(fresh.item_bias, m.item_bias)
    batch = next(iter(rdm.test_dataloader()[0]))
    with torch.no_grad():
        assert torch.equal(m.score_all(batch), fresh.score_all(batch))
    results = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(
        fresh, datamodule=rdm, verbose=False
    )
    assert {"test/hr@10", "test/sequential/seen/ndcg@10", "test/sequential/unseen/hr@10"} <= set(results[0])


def test_ranking_query_depends_on_prompt_history_and_user(env: dict) -> None:
    m = _ranker(env)
    _perturb(m.query_head)  # a trained prompt term (zero at init by design)
    _perturb(m.user_embedding)
    m.eval()
    seen, unseen = (next(iter(loader)) for loader in env["rdm"].test_dataloader())
    assert seen["split"] == "seen" and unseen["split"] == "unseen"
    assert not torch.equal(seen["input_ids"], unseen["input_ids"])  # A-9's wording differs from A-1's
    with torch.no_grad():
        q = m.query_vectors(seen)
        assert not torch.allclose(q, m.query_vectors(unseen))  # the prompt's wording matters
        other_user = {**seen, "user": seen["user"].roll(1)}
        assert not torch.allclose(q, m.query_vectors(other_user))  # so does the user's identity
        hist = seen["history_items"].clone()
        hist[:, -1] = torch.where(hist[:, -1] > 0, hist[:, -1] % 30 + 1, hist[:, -1])
        assert not torch.allclose(q, m.query_vectors({**seen, "history_items": hist}))  # and the history
        cos = torch.nn.functional.cosine_similarity(q[:, :-1], q[:, :-1].mean(0, keepdim=True))
    assert cos.min() < 0.99  # no collapse onto one query


def test_ranking_loss_masks_history_and_learns_from_future_items(env: dict) -> None:
    m = _ranker(env)
    batch = next(iter(env["rdm"].train_dataloader()))
    assert "future_items" in batch and (batch["future_items"] > 0).any()
    base = m.training_loss(batch)
    none = {k: v for k, v in batch.items() if k != "future_items"}
    assert not torch.isclose(base, m.training_loss(none))  # the future items add a term
    m_off = _ranker(env, head=RankingHeadConfig(future_weight=0.0, mask_history_in_training=False))
    m_off.load_state_dict(m.state_dict())
    assert torch.isclose(m_off.training_loss(batch), m_off.training_loss(none))
    # masking the history out of the softmax can only raise the targets' probability
    m_nomask = _ranker(env, head=RankingHeadConfig(mask_history_in_training=False))
    m_nomask.load_state_dict(m.state_dict())
    assert m.training_loss(batch) < m_nomask.training_loss(batch)


def test_ranking_head_learns_the_toy_walk_beyond_popularity(env: dict, tmp_path: Path) -> None:
    """Sanity gate: a few dozen steps beat MostPop on the toy data, with rankings that differ by user."""
    import collections

    from mmrec.metrics import FullRankingEvaluator

    rdm = env["rdm"]
    m = _ranker(env, optim=OptimConfig(lr=0.02))
    L.Trainer(max_epochs=15, accelerator="cpu", logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
              num_sanity_val_steps=0).fit(m, datamodule=rdm)  # fmt: skip
    m.eval()
    ev, ev_pop = FullRankingEvaluator(ks=(10,)), FullRankingEvaluator(ks=(10,))
    pop = rdm.item_popularity().clone()
    pop[0] = float("-inf")
    tops = []
    with torch.no_grad():
        for b in rdm.test_dataloader()[0]:
            scores = m.score_all(b)
            tops += [tuple(r) for r in scores.topk(10, dim=1).indices.tolist()]
            ex = (b["exclude_rows"], b["exclude_cols"])
            ev.update(scores, b["targets"], exclude=ex)
            ev_pop.update(pop.expand(len(scores), -1).clone(), b["targets"], exclude=ex)
    model_hr, pop_hr = ev.compute()["hr@10"], ev_pop.compute()["hr@10"]
    print("TOYGATE", model_hr, pop_hr, collections.Counter(tops).most_common(1)[0][1] / len(tops))
    assert model_hr > pop_hr + 0.1, (model_hr, pop_hr)
    assert collections.Counter(tops).most_common(1)[0][1] / len(tops) < 0.1
